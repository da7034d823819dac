//! Per-request counters any code can bump: `record("db_queries", 1)`.
//!
//! [`BudgetLayer`](crate::BudgetLayer) opens a scope around each request (the
//! handler's future and the polling of the response body), so code running for
//! that request, across any number of `.await`s, adds to that request's counters.
//! Outside a scope, [`record`] does nothing.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Outside a request: a no-op.
//! brisk_budget::record("db_queries", 1);
//! assert_eq!(brisk_budget::current("db_queries"), None);
//!
//! let (queries, ()) = brisk_budget::RequestScope::new()
//!     .run(async {
//!         brisk_budget::record("db_queries", 2);
//!         tokio::task::yield_now().await;
//!         brisk_budget::record("db_queries", 1);
//!     })
//!     .await
//!     .map(|scope, out| (scope.get("db_queries"), out));
//! assert_eq!(queries, Some(3));
//! # }
//! ```
//!
//! The scope is task-local: work spawned onto another task (`tokio::spawn`) is
//! not counted unless it runs inside [`RequestScope::run`] with the same scope.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;

thread_local! {
    /// The scope of the request being polled on this thread: `None` outside
    /// any, else the request's (lazily created) scope. Set only while the
    /// request's future or body is polled and taken back afterwards, so it
    /// travels with the request's future as a task-local does.
    static CURRENT: Cell<Option<LazyScope>> = const { Cell::new(None) };
}

/// The counters of one request. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct RequestScope {
    counters: Arc<Mutex<Counters>>,
}

/// Counter names and values; a request records few, so a list beats a map.
type Counters = Vec<(Box<str>, u64)>;

/// A request's scope as the layer carries it: the counters are allocated by
/// the first [`record`], so a request that records nothing costs no allocation.
#[derive(Debug, Default)]
pub(crate) struct LazyScope(Option<RequestScope>);

impl LazyScope {
    /// The scope, if anything was recorded in it.
    pub(crate) fn get(&self) -> Option<&RequestScope> {
        self.0.as_ref()
    }
}

/// `scope` made current until this is dropped (also when the code run
/// meanwhile panics): [`record`] meanwhile counts in `scope`; then the outer
/// scope is current again. Nested scopes (a [`RequestScope::run`] inside a
/// request) take over until they return, as task-locals do.
#[derive(Debug)]
pub(crate) struct Entered<'a> {
    scope: &'a mut LazyScope,
    /// The scope that was current before; `None` when the thread-local is gone
    /// (the thread is shutting down) and `scope` stayed where it was.
    outer: Option<Option<LazyScope>>,
}

impl<'a> Entered<'a> {
    #[inline]
    pub(crate) fn new(scope: &'a mut LazyScope) -> Self {
        // Taken inside the closure: if the thread-local is gone, nothing can be
        // recorded and the scope stays where it is.
        let outer = CURRENT.try_with(|current| current.replace(Some(std::mem::take(scope)))).ok();
        Self { scope, outer }
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(outer) = self.outer.take()
            && let Ok(Some(mine)) = CURRENT.try_with(|current| current.replace(outer))
        {
            *self.scope = mine;
        }
    }
}

impl RequestScope {
    /// A scope with every counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `future` with this scope current, so [`record`] inside it counts here.
    pub fn run<F: Future>(self, future: F) -> ScopeRun<F> {
        ScopeRun { inner: future, slot: LazyScope(Some(self.clone())), scope: self }
    }

    /// Adds `amount` to the counter `name`.
    pub fn add(&self, name: &str, amount: u64) {
        let mut counters = self.counters.lock();
        match counters.iter_mut().find(|(n, _)| &**n == name) {
            Some((_, v)) => *v = v.saturating_add(amount),
            None => counters.push((name.into(), amount)),
        }
    }

    /// The counter `name`, `None` when nothing was recorded on it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters.lock().iter().find(|(n, _)| &**n == name).map(|(_, v)| *v)
    }

    /// Every counter recorded so far.
    pub fn counters(&self) -> Vec<(String, u64)> {
        self.counters.lock().iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&str, u64)) {
        for (n, v) in self.counters.lock().iter() {
            f(n, *v);
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RequestScope::run`]: resolves to a [`ScopeOutput`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct ScopeRun<F: Future> {
        #[pin]
        inner: F,
        slot: LazyScope,
        scope: RequestScope,
    }
}

impl<F: Future> Future for ScopeRun<F> {
    type Output = ScopeOutput<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let entered = Entered::new(this.slot);
        let output = this.inner.poll(cx);
        drop(entered);
        output.map(|output| ScopeOutput { scope: this.scope.clone(), output })
    }
}

/// What a [`ScopeRun`] resolves to: the future's output and the scope's counters.
#[derive(Debug)]
pub struct ScopeOutput<T> {
    /// The scope, with what was recorded.
    pub scope: RequestScope,
    /// The future's output.
    pub output: T,
}

impl<T> ScopeOutput<T> {
    /// Maps the scope and the output to one value.
    pub fn map<U>(self, f: impl FnOnce(&RequestScope, T) -> U) -> U {
        f(&self.scope, self.output)
    }
}

/// Adds `amount` to the counter `name` of the current request; does nothing
/// outside a request scope.
pub fn record(name: &str, amount: u64) {
    let _ = CURRENT.try_with(|current| {
        if let Some(mut scope) = current.take() {
            scope.0.get_or_insert_with(RequestScope::new).add(name, amount);
            current.set(Some(scope));
        }
    });
}

/// The current request's counter `name`; `None` outside a scope or when nothing
/// was recorded on it.
pub fn current(name: &str) -> Option<u64> {
    CURRENT
        .try_with(|current| {
            let scope = current.take()?;
            let value = scope.get().and_then(|s| s.get(name));
            current.set(Some(scope));
            value
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_across_awaits_and_is_a_no_op_outside() {
        record("q", 5);
        assert_eq!(current("q"), None);
        let out = RequestScope::new()
            .run(async {
                record("q", 1);
                tokio::task::yield_now().await;
                record("q", 2);
                record("other", 7);
                current("q")
            })
            .await;
        assert_eq!(out.output, Some(3));
        assert_eq!(out.scope.get("q"), Some(3));
        assert_eq!(out.scope.get("other"), Some(7));
        assert_eq!(out.scope.get("none"), None);
        assert_eq!(current("q"), None);
    }

    #[tokio::test]
    async fn scopes_do_not_leak_into_each_other() {
        let a = RequestScope::new();
        let b = RequestScope::new();
        let (ra, rb) = tokio::join!(
            a.clone().run(async {
                for _ in 0..3 {
                    record("q", 1);
                    tokio::task::yield_now().await;
                }
            }),
            b.clone().run(async {
                for _ in 0..5 {
                    record("q", 1);
                    tokio::task::yield_now().await;
                }
            })
        );
        drop((ra, rb));
        assert_eq!(a.get("q"), Some(3));
        assert_eq!(b.get("q"), Some(5));
    }
}
