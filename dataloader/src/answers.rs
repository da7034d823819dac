//! The answers of one batch, shared by every caller of its keys.
//!
//! Each key of a batch has one slot, which all of its callers read (cloning
//! the value): a repeated key costs its caller a reference count and a
//! wake-up, not a channel of its own. The batch holds the one [`Answerer`];
//! if it is dropped unanswered (the batch's task was dropped, or its keys were
//! abandoned), every caller is answered [`LoadError::Abandoned`] — no caller
//! waits for an answer that cannot come.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::LoadError;
use crate::state::Answer;

/// What the callers of one batch share.
pub(crate) struct BatchAnswers<V, E> {
    /// Set (under `inner`'s lock) once the answers are in, so that "has the
    /// batch answered?" needs no lock.
    answered: AtomicBool,
    inner: Mutex<Inner<V, E>>,
}

struct Inner<V, E> {
    /// One per slot, once answered; a slot without an answer (or past the
    /// end) was abandoned.
    answers: Vec<Option<Answer<V, E>>>,
    /// The callers to wake; a caller that left has a no-op waker instead.
    wakers: Vec<Waker>,
}

impl<V, E> BatchAnswers<V, E> {
    fn lock(&self) -> MutexGuard<'_, Inner<V, E>> {
        // Only wakers' own code runs under the lock, and every field is valid
        // between statements, so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    fn is_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    /// Stores the answers (the first time only) and hands back the wakers of
    /// the callers waiting.
    fn publish(&self, answers: Vec<Option<Answer<V, E>>>) -> Vec<Waker> {
        // Only the batch's one answerer publishes (answering consumes it, and
        // its drop publishes again), so no other thread sets `answered`.
        if self.is_answered() {
            return Vec::new();
        }
        let mut inner = self.lock();
        inner.answers = answers;
        self.answered.store(true, Ordering::Release);
        std::mem::take(&mut inner.wakers)
    }
}

/// The batch's side: hands out slots while the batch collects keys, then
/// answers every slot at once.
pub(crate) struct Answerer<V, E> {
    answers: Arc<BatchAnswers<V, E>>,
    slots: usize,
}

impl<V, E> Answerer<V, E> {
    pub(crate) fn new() -> Self {
        Answerer {
            answers: Arc::new(BatchAnswers {
                answered: AtomicBool::new(false),
                // Room for the callers of a small batch without regrowing.
                inner: Mutex::new(Inner { answers: Vec::new(), wakers: Vec::with_capacity(16) }),
            }),
            slots: 0,
        }
    }

    /// A new slot, for a key's first caller.
    pub(crate) fn add_slot(&mut self) -> AnswerSlot<V, E> {
        let index = self.slots;
        self.slots += 1;
        AnswerSlot { answers: Arc::clone(&self.answers), index, waker: NO_WAKER }
    }

    /// Slots handed out so far (some may belong to keys since withdrawn).
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Whether `slot` is one of this batch's.
    pub(crate) fn owns(&self, slot: &AnswerSlot<V, E>) -> bool {
        Arc::ptr_eq(&self.answers, &slot.answers)
    }

    /// Stores every slot's answer (`answers[i]` is slot `i`'s; `None`
    /// answers [`LoadError::Abandoned`]): from now on the slots read as
    /// answered. Returns the callers to wake — [`wake`] them once no lock is
    /// held.
    #[must_use = "the callers are woken with `wake`"]
    pub(crate) fn publish(self, answers: Vec<Option<Answer<V, E>>>) -> Vec<Waker> {
        self.answers.publish(answers)
    }
}

/// Wakes the callers [`Answerer::publish`] returned.
pub(crate) fn wake(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl<V, E> Drop for Answerer<V, E> {
    /// A batch dropped unanswered: its slots read as abandoned.
    fn drop(&mut self) {
        wake(self.answers.publish(Vec::new()));
    }
}

/// A caller's place: which slot it reads, and where its waker is.
pub(crate) struct AnswerSlot<V, E> {
    answers: Arc<BatchAnswers<V, E>>,
    index: usize,
    /// Where the caller's waker is in `wakers`; `NO_WAKER` until polled.
    waker: usize,
}

/// A caller not polled yet (kept out of an `Option` to keep loads small).
const NO_WAKER: usize = usize::MAX;

/// What a slot holds, seen from the loader's state.
pub(crate) enum Settled<V> {
    /// The batch has not answered.
    Pending,
    /// The batch answered this value.
    Value(V),
    /// The batch answered an error or not-found, or was abandoned.
    Failed,
}

impl<V, E> AnswerSlot<V, E> {
    /// Which slot of its batch this is.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Whether `other` is a caller of this very slot.
    pub(crate) fn is(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.answers, &other.answers) && self.index == other.index
    }

    /// One more caller of the same slot (a repeated key).
    pub(crate) fn share(&self) -> Self {
        AnswerSlot { answers: Arc::clone(&self.answers), index: self.index, waker: NO_WAKER }
    }

    /// Whether the slot's batch has answered (or was abandoned).
    #[inline]
    pub(crate) fn is_answered(&self) -> bool {
        self.answers.is_answered()
    }

    /// The slot's answer as the loader sees it; the value is cloned out.
    #[inline]
    pub(crate) fn settled(&self) -> Settled<V>
    where
        V: Clone,
    {
        if !self.is_answered() {
            return Settled::Pending;
        }
        match self.answers.lock().answers.get(self.index) {
            Some(Some(Ok(value))) => Settled::Value(value.clone()),
            _ => Settled::Failed,
        }
    }

    /// The slot's answer, or `Pending` with the caller's waker registered.
    pub(crate) fn poll_answer(&mut self, cx: &Context<'_>) -> Poll<Answer<V, E>>
    where
        V: Clone,
    {
        let mut inner = self.answers.lock();
        if self.answers.is_answered() {
            let answer = inner.answers.get(self.index).and_then(Option::as_ref);
            return Poll::Ready(answer.map_or(Err(LoadError::Abandoned), Clone::clone));
        }
        if self.waker == NO_WAKER {
            self.waker = inner.wakers.len();
            inner.wakers.push(cx.waker().clone());
        } else if let Some(waker) = inner.wakers.get_mut(self.waker)
            && !waker.will_wake(cx.waker())
        {
            waker.clone_from(cx.waker());
        }
        Poll::Pending
    }

    /// Forgets the caller's waker: it left before its answer, and its task
    /// need not be kept (or woken) for it.
    pub(crate) fn leave(&mut self) {
        let i = std::mem::replace(&mut self.waker, NO_WAKER);
        if i == NO_WAKER {
            return;
        }
        let mut inner = self.answers.lock();
        if !self.answers.is_answered()
            && let Some(waker) = inner.wakers.get_mut(i)
        {
            *waker = Waker::noop().clone();
        }
    }
}
