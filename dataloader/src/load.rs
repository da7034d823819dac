//! The future of one load, written out by hand: it is what a page of loads
//! joins a thousand times, so it is kept small (no `async fn` state machine
//! holding a ticket and its waiter side by side).

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::LoadError;
use crate::state::{Answer, Lead, Shared, Ticket, Waiter};

/// A load of one key; the key is registered when the future is first polled.
pub(crate) struct Load<'a, K: Eq + Hash + Clone, V, E> {
    shared: &'a Arc<Shared<K, V, E>>,
    state: State<'a, K, V, E>,
}

enum State<'a, K: Eq + Hash + Clone, V, E> {
    /// Not polled yet.
    New(K),
    /// Started a collecting batch: yields once, then drops the lead (the
    /// batch may go) and waits.
    Leading(Lead<'a, K, V, E>, Waiter<'a, K, V, E>),
    Waiting(Waiter<'a, K, V, E>),
    Done,
}

impl<'a, K: Eq + Hash + Clone, V, E> Load<'a, K, V, E> {
    pub(crate) fn new(shared: &'a Arc<Shared<K, V, E>>, key: K) -> Self {
        Load { shared, state: State::New(key) }
    }
}

// Nothing in a load is structurally pinned.
impl<K: Eq + Hash + Clone, V, E> Unpin for Load<'_, K, V, E> {}

impl<K, V, E> Future for Load<'_, K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
    E: Send + Sync + 'static,
{
    type Output = Answer<V, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            // Waiting is polled in place; the other states move out.
            if let State::Waiting(waiter) = &mut this.state {
                let answer = std::task::ready!(Pin::new(waiter).poll(cx));
                this.state = State::Done;
                return Poll::Ready(answer);
            }
            match std::mem::replace(&mut this.state, State::Done) {
                State::New(key) => {
                    let mut ticket = None;
                    let lead = this.shared.register([key], Some(cx), |t| ticket = Some(t));
                    match (ticket, lead) {
                        (Some(Ticket::Wait(waiter)), Some(lead)) => {
                            // Yield once, so that the rest of this task's poll
                            // (the other loads of a page) joins the batch.
                            this.state = State::Leading(lead, waiter);
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        (Some(Ticket::Wait(waiter)), None) => this.state = State::Waiting(waiter),
                        (Some(Ticket::Ready(answer)), _) => return Poll::Ready(answer),
                        // One key registered gives one ticket.
                        (None, _) => return Poll::Ready(Err(LoadError::Abandoned)),
                    }
                }
                State::Leading(lead, waiter) => {
                    drop(lead);
                    this.state = State::Waiting(waiter);
                }
                State::Waiting(waiter) => this.state = State::Waiting(waiter),
                State::Done => panic!("`DataLoader::load` future polled after completion"),
            }
        }
    }
}
