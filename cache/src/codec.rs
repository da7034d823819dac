//! How typed values become bytes.
//!
//! ```
//! use brisk_cache::{Codec, PostcardCodec};
//!
//! let bytes = PostcardCodec.encode(&(1u32, "one")).unwrap();
//! let back: (u32, String) = PostcardCodec.decode(&bytes).unwrap();
//! assert_eq!(back, (1, "one".to_owned()));
//! ```

use std::fmt::Debug;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Turns typed values into bytes and back. The bytes are wrapped in the
/// cache's envelope (format version, times, generations) either way.
pub trait Codec: Debug + Clone + Send + Sync + 'static {
    /// Encodes a value.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented in this format.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError>;

    /// Decodes a value.
    ///
    /// # Errors
    ///
    /// When the bytes are not a `T` in this format.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// [postcard](https://docs.rs/postcard): compact, stable wire format. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostcardCodec;

impl Codec for PostcardCodec {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        postcard::to_allocvec(value).map_err(CodecError::new)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((value, [])) => Ok(value),
            Ok(_) => Err(CodecError::new(TrailingBytes)),
            Err(e) => Err(CodecError::new(e)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("trailing bytes after the value")]
struct TrailingBytes;

/// JSON through serde_json, for values shared with services in other languages.
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

#[cfg(feature = "json")]
impl Codec for JsonCodec {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(CodecError::new)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(CodecError::new)
    }
}

/// A value could not be encoded or decoded.
#[derive(Debug, Clone)]
pub struct CodecError {
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl CodecError {
    /// Wraps the codec's own error.
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { source: Arc::new(source) }
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "codec error: {}", self.source)
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcard_refuses_trailing_bytes_and_garbage() {
        let mut bytes = PostcardCodec.encode(&7u8).unwrap();
        bytes.push(0);
        assert!(PostcardCodec.decode::<u8>(&bytes).is_err());
        assert!(PostcardCodec.decode::<String>(&[0xff, 0xff]).is_err());
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trips() {
        let bytes = JsonCodec.encode(&vec![1, 2]).unwrap();
        assert_eq!(bytes, b"[1,2]");
        assert_eq!(JsonCodec.decode::<Vec<i32>>(&bytes).unwrap(), vec![1, 2]);
    }
}
