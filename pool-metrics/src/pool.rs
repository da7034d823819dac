//! The instrumented pool: [`InstrumentedPool::get`] records wait time,
//! failures, use time and the waiter peak; [`PoolRecorder::post_create_hook`]
//! records connection creation.
//!
//! ```
//! use brisk_pool_metrics::PoolMetrics;
//! use deadpool::managed::{Manager, Metrics, Pool, RecycleResult};
//!
//! struct Numbers;
//! impl Manager for Numbers {
//!     type Type = u32;
//!     type Error = std::convert::Infallible;
//!     async fn create(&self) -> Result<u32, Self::Error> { Ok(7) }
//!     async fn recycle(&self, _: &mut u32, _: &Metrics) -> RecycleResult<Self::Error> { Ok(()) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let metrics = PoolMetrics::new();
//! let recorder = metrics.pool("numbers");
//! let pool = Pool::<Numbers>::builder(Numbers)
//!     .max_size(4)
//!     .post_create(recorder.post_create_hook())
//!     .build()
//!     .unwrap();
//! let pool = recorder.instrument_pool(pool);
//!
//! let n = pool.get().await.unwrap(); // a Checkout: derefs to the pool's object
//! assert_eq!(**n, 7);
//! # }
//! ```

use std::cell::Cell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::ops::{Deref, DerefMut};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use deadpool::Status;
use deadpool::managed::{Hook, Manager, Object, Pool, PoolError, Timeouts};

use crate::state::PoolState;

/// The checkout being polled on this thread, for the `post_create` hook
/// (which deadpool runs inside the checkout's future).
#[derive(Debug, Clone, Copy)]
struct CheckoutContext {
    /// The address of the pool's state: compared, never dereferenced.
    pool: usize,
    started: Instant,
    queued: bool,
}

thread_local! {
    static CURRENT_CHECKOUT: Cell<Option<CheckoutContext>> = const { Cell::new(None) };
}

/// Records one named pool's events. Get one with
/// [`PoolMetrics::pool`](crate::PoolMetrics::pool); clones share the same
/// metrics.
#[derive(Clone, Debug)]
pub struct PoolRecorder {
    pub(crate) state: Arc<PoolState>,
}

impl PoolRecorder {
    /// The pool's name, the `pool` label of its metrics.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Reads `pool`'s gauges at scrape time. Holds the pool weakly: once the
    /// pool is dropped, its gauges disappear from the output. Watching another
    /// pool under the same name replaces the first.
    pub fn watch<M, W>(&self, pool: &Pool<M, W>)
    where
        M: Manager + 'static,
        W: From<Object<M>>,
    {
        let weak = pool.weak();
        self.state.set_source(Box::new(move || weak.upgrade().map(|pool| pool.status())));
    }

    /// Wraps `pool` so that its checkouts are recorded, and watches its gauges.
    pub fn instrument_pool<M, W>(&self, pool: Pool<M, W>) -> InstrumentedPool<M, W>
    where
        M: Manager + 'static,
        W: From<Object<M>>,
    {
        self.watch(&pool);
        self.state.instrumented.store(true, Ordering::Relaxed);
        InstrumentedPool { pool, state: self.state.clone() }
    }

    /// A deadpool `post_create` hook that counts created connections
    /// (`db_client_connection_created_total`) and records how long creating
    /// them took (`db_client_connection_create_time_seconds`).
    ///
    /// Add it when building the pool (`Pool::builder(..).post_create(hook)`).
    /// deadpool has no hook before creation, so the creation time is measured
    /// from the start of the [`InstrumentedPool::get`] that opened the
    /// connection; a checkout that had to queue for a slot first is counted but
    /// not timed (its time is mostly waiting), and connections opened by
    /// `Pool::get` on the bare pool are counted only.
    pub fn post_create_hook<M: Manager>(&self) -> Hook<M> {
        let state = self.state.clone();
        self.state.hooked.store(true, Ordering::Relaxed);
        Hook::sync_fn(move |_object, metrics| {
            state.created.inc();
            if let Some(checkout) = CURRENT_CHECKOUT.get()
                && checkout.pool == Arc::as_ptr(&state).addr()
                && !checkout.queued
            {
                state.create_time.observe(metrics.created.saturating_duration_since(checkout.started).as_secs_f64());
            }
            Ok(())
        })
    }
}

/// A deadpool [`Pool`] whose checkouts are recorded. Cheap to clone; clones
/// share the pool and its metrics.
///
/// Create it with [`PoolRecorder::instrument_pool`] or
/// [`PoolMetrics::instrument_pool`](crate::PoolMetrics::instrument_pool).
pub struct InstrumentedPool<M: Manager, W: From<Object<M>> = Object<M>> {
    pool: Pool<M, W>,
    state: Arc<PoolState>,
}

impl<M: Manager, W: From<Object<M>>> Clone for InstrumentedPool<M, W> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), state: self.state.clone() }
    }
}

impl<M: Manager, W: From<Object<M>>> fmt::Debug for InstrumentedPool<M, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstrumentedPool").field("name", &self.state.name).field("status", &self.status()).finish()
    }
}

impl<M: Manager, W: From<Object<M>>> InstrumentedPool<M, W> {
    /// Checks a connection out with the pool's configured timeouts, recording
    /// the wait, or the failure by reason. A checkout abandoned by its caller
    /// (its future dropped, say by an outer timeout) counts as an error with
    /// reason `cancelled`.
    ///
    /// # Errors
    ///
    /// deadpool's [`PoolError`], unchanged.
    pub async fn get(&self) -> Result<Checkout<W>, PoolError<M::Error>> {
        self.timeout_get(&self.pool.timeouts()).await
    }

    /// Checks a connection out with other timeouts than the pool's.
    ///
    /// # Errors
    ///
    /// deadpool's [`PoolError`], unchanged.
    pub async fn timeout_get(&self, timeouts: &Timeouts) -> Result<Checkout<W>, PoolError<M::Error>> {
        let started = Instant::now();
        let mut context = CheckoutContext { pool: Arc::as_ptr(&self.state).addr(), started, queued: false };
        let mut first_poll = true;
        let mut cancelled = CancelGuard { state: &self.state, armed: true };
        let mut checkout = pin!(self.pool.timeout_get(timeouts));
        let result = poll_fn(|cx| {
            let outer = CURRENT_CHECKOUT.replace(Some(context));
            let poll = checkout.as_mut().poll(cx);
            CURRENT_CHECKOUT.set(outer);
            if first_poll {
                // deadpool counted this checkout among its users on the first
                // poll, so the status now includes it.
                first_poll = false;
                let status = self.pool.status();
                context.queued = poll.is_pending() && users(&status) > status.max_size;
                self.state.observe_waiting(status.waiting);
            }
            poll
        })
        .await;
        cancelled.armed = false;
        match result {
            Ok(object) => {
                let checked_out = Instant::now();
                self.state.wait_time.observe(checked_out.saturating_duration_since(started).as_secs_f64());
                let slot = self.state.checked_out(checked_out);
                Ok(Checkout { object: Some(object), checked_out, slot, state: self.state.clone() })
            }
            Err(error) => {
                self.state.record_failure(&error);
                Err(error)
            }
        }
    }

    /// The pool's status now.
    pub fn status(&self) -> Status {
        self.pool.status()
    }

    /// The pool's name, the `pool` label of its metrics.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The wrapped pool. Checkouts made on it directly are not recorded.
    pub fn pool(&self) -> &Pool<M, W> {
        &self.pool
    }

    /// Unwraps the pool; its gauges stay watched while it lives.
    pub fn into_inner(self) -> Pool<M, W> {
        self.pool
    }
}

/// Counts a checkout whose future was dropped before it finished: the
/// caller's own timeout, or a request that went away.
struct CancelGuard<'a> {
    state: &'a PoolState,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.state.record_cancelled();
        }
    }
}

/// deadpool's count of tasks holding or waiting for an object.
fn users(status: &Status) -> usize {
    if status.available > 0 { status.size - status.available } else { status.size + status.waiting }
}

/// A connection checked out of an [`InstrumentedPool`]. Derefs to the pool's
/// object; dropping it records how long it was held (and warns when that was
/// longer than the threshold), then returns the connection to the pool.
pub struct Checkout<W> {
    object: Option<W>,
    checked_out: Instant,
    /// Where the pool remembers this checkout, for held-too-long detection.
    slot: Option<usize>,
    state: Arc<PoolState>,
}

impl<W> Checkout<W> {
    /// How long this connection has been held so far.
    pub fn held_for(&self) -> std::time::Duration {
        self.checked_out.elapsed()
    }

    /// Ends the measurement now and returns the pool's object, which returns
    /// to the pool when it is dropped.
    pub fn into_inner(mut self) -> W {
        self.object.take().expect("the object is present until the checkout is consumed")
    }
}

impl<W> Deref for Checkout<W> {
    type Target = W;

    fn deref(&self) -> &W {
        self.object.as_ref().expect("the object is present until the checkout is consumed")
    }
}

impl<W> DerefMut for Checkout<W> {
    fn deref_mut(&mut self) -> &mut W {
        self.object.as_mut().expect("the object is present until the checkout is consumed")
    }
}

impl<W> AsRef<W> for Checkout<W> {
    fn as_ref(&self) -> &W {
        self
    }
}

impl<W> AsMut<W> for Checkout<W> {
    fn as_mut(&mut self) -> &mut W {
        self
    }
}

impl<W> Drop for Checkout<W> {
    fn drop(&mut self) {
        self.state.checked_in(self.slot, self.checked_out.elapsed());
    }
}

impl<W> fmt::Debug for Checkout<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkout").field("pool", &self.state.name).field("held_for", &self.held_for()).finish()
    }
}
