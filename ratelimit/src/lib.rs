//! # brisk-ratelimit
//!
//! A Redis-backed rate limiter (GCRA, sliding-window and fixed-window) with a tower layer.
//!
//! Every decision is one atomic Lua script reading Redis TIME; responses carry the IETF RateLimit-Policy and RateLimit fields and a problem+json body on 429.
//!
//! This crate is at its first milestone: the workspace, documentation and
//! tests are in place and the public API is being built; see the CHANGELOG for
//! what has landed.
