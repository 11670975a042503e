//! [`Gather`]: many callers' questions asked in one call (issue 20), for
//! work that costs more per call than per question: the gateway's card
//! numbers resolved at card-issuing (`gateway::identity`) and a hospital's
//! status changes written to PostgreSQL (slot-inventory's
//! `booking::writer`). Each user's file says what a batch saves it.
//!
//! A question is queued and, if fewer than `in_flight` calls are out,
//! starts a task; the task takes everything queued (up to `max_batch`)
//! into one call, hands each answer to its asker, and goes on until the
//! queue is empty. Alone, a question is a call of one: no waiting for
//! company. Under load the queue fills while a call is out, and the next
//! call takes it all.
//!
//! The call runs in a task of its own, not in the asker's request: a
//! request dropped mid-call (its client gone) must not take the other
//! askers' answers with it.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{Instrument, Span};

#[cfg(test)]
mod tests;

/// The call a batch of questions goes out in.
pub trait Call<Q, A>: Send + Sync + 'static {
    /// The questions of one batch, oldest first, in; one answer per
    /// question out, in the same order. Fewer answers than questions leave
    /// the rest unanswered ([`Gather::ask`] gives them `None`).
    fn call(&self, questions: Vec<Q>) -> impl Future<Output = Vec<A>> + Send;
}

/// A call shared by every task that makes it: each task holds a handle.
impl<Q, A, C: Call<Q, A>> Call<Q, A> for Arc<C> {
    fn call(&self, questions: Vec<Q>) -> impl Future<Output = Vec<A>> + Send {
        C::call(self, questions)
    }
}

/// Questions gathered into calls. Cloned handles share the queue and the
/// calls in flight.
pub struct Gather<Q, A> {
    inner: Arc<Inner<Q, A>>,
}

impl<Q, A> Clone for Gather<Q, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<Q, A> {
    queue: Mutex<Vec<(Q, oneshot::Sender<A>)>>,
    /// One permit per call in flight.
    permits: Arc<Semaphore>,
    /// The permits, all told.
    in_flight: usize,
    max_batch: usize,
}

impl<Q, A> Gather<Q, A> {
    /// At most `in_flight` calls out at once (at least one), each with at
    /// most `max_batch` questions (at least one).
    pub fn new(in_flight: usize, max_batch: usize) -> Self {
        let in_flight = in_flight.max(1);
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(in_flight)),
                in_flight,
                max_batch: max_batch.max(1),
            }),
        }
    }

    /// At most this many calls out at once.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight
    }
}

impl<Q: Send + 'static, A: Send + 'static> Gather<Q, A> {
    /// Ask one question with whatever else is queued; the future answers
    /// it, or `None` if the call gave no answer for it.
    ///
    /// The question is queued, and a task started if a permit is free,
    /// here and not when the future is first polled: the task joins the
    /// span current at this call (the request that started it), and an
    /// asker may wrap its wait in a span of its own without taking the
    /// task's calls into it.
    ///
    /// `call` is made only when this ask starts a task, which makes every
    /// call of its batches with it: whatever a call needs is handed over
    /// once per task, not once per question.
    pub fn ask<C: Call<Q, A>>(
        &self,
        question: Q,
        call: impl FnOnce() -> C,
    ) -> impl Future<Output = Option<A>> + Send {
        let (reply, answer) = oneshot::channel();
        self.inner.queue().push((question, reply));
        // Queued before asking for a permit: a task finishing now looks at
        // the queue after it gives its permit back (`Inner::call_queued`),
        // so either it or this ask sees the question.
        if let Ok(permit) = self.inner.permits.clone().try_acquire_owned() {
            let (inner, call) = (self.inner.clone(), call());
            tokio::spawn(async move { inner.call_queued(call, permit).await }.instrument(Span::current()));
        }
        async move { answer.await.ok() }
    }
}

impl<Q: Send + 'static, A: Send + 'static> Inner<Q, A> {
    fn queue(&self) -> MutexGuard<'_, Vec<(Q, oneshot::Sender<A>)>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch: the oldest queued questions, up to `max_batch`.
    fn take(&self) -> Vec<(Q, oneshot::Sender<A>)> {
        let mut queue = self.queue();
        let n = queue.len().min(self.max_batch);
        queue.drain(..n).collect()
    }

    /// Call for batches until the queue is empty, then give the permit back.
    async fn call_queued(self: Arc<Self>, call: impl Call<Q, A>, mut permit: OwnedSemaphorePermit) {
        loop {
            let batch = self.take();
            if !batch.is_empty() {
                let (questions, replies): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
                let answers = call.call(questions).await;
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // An asker that has gone (its request dropped, its wait
                    // timed out) no longer wants it.
                    let _ = reply.send(answer);
                }
                continue;
            }
            drop(permit);
            // A question queued after the take found every permit taken,
            // perhaps this one: take it up again, unless another task has.
            if self.queue().is_empty() {
                return;
            }
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => permit = p,
                Err(_) => return,
            }
        }
    }
}
