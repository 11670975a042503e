//! Many callers' questions to another service, asked in one call (issue
//! 20). At a release second thousands of patients make their first
//! attempt of the day at once, and each needs its card resolved at
//! card-issuing: one HTTP call and one PostgreSQL transaction each was
//! the one part of a winner's cost not spread thin (loadtest/README.md,
//! 2026-12-06 17:29).
//!
//! A question is queued and, if fewer than `calls_in_flight` calls are
//! out, starts a caller task; the task takes everything queued (up to
//! `max_batch`) into one call, hands each answer to its asker, and goes
//! on until the queue is empty. Alone, a question is a call of one: no
//! waiting for company. Under load the queue fills while a call is out,
//! and the next call takes it all. The same shape as slot-inventory's
//! group writer (`booking::writer`), for a call instead of a statement.
//!
//! The call runs in a task of its own, not in the asker's request: a
//! request dropped mid-call (its client gone) must not take the other
//! askers' answers with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{Instrument, Span};

/// The call: the questions of one batch in, one answer per question out,
/// in the same order. Fewer answers than questions leave the rest
/// unanswered ([`Gather::ask`] gives them `None`).
pub type Call<Q, A> = Arc<dyn Fn(Vec<Q>) -> Pin<Box<dyn Future<Output = Vec<A>> + Send>> + Send + Sync>;

/// Questions gathered into calls. Cloned handles share the queue.
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
    /// One permit per call out.
    calls: Arc<Semaphore>,
    max_batch: usize,
    call: Call<Q, A>,
}

impl<Q: Send + 'static, A: Send + 'static> Gather<Q, A> {
    /// At most `calls_in_flight` calls out at once (at least one), each
    /// with at most `max_batch` questions (at least one).
    pub fn new(calls_in_flight: usize, max_batch: usize, call: Call<Q, A>) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Vec::new()),
                calls: Arc::new(Semaphore::new(calls_in_flight.max(1))),
                max_batch: max_batch.max(1),
                call,
            }),
        }
    }

    /// Ask one question with whatever else is queued. `None` if the call
    /// gave no answer for it.
    pub async fn ask(&self, question: Q) -> Option<A> {
        let (reply, answer) = oneshot::channel();
        self.inner.queue().push((question, reply));
        // Queued before asking for a permit: a caller task finishing now
        // looks at the queue after it gives its permit back, so either it
        // or this call sees the question.
        if let Ok(permit) = self.inner.calls.clone().try_acquire_owned() {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.call_queued(permit).await }.instrument(Span::current()));
        }
        answer.await.ok()
    }
}

impl<Q: Send + 'static, A: Send + 'static> Inner<Q, A> {
    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<(Q, oneshot::Sender<A>)>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch: the oldest queued questions, up to `max_batch`.
    fn take(&self) -> Vec<(Q, oneshot::Sender<A>)> {
        let mut queue = self.queue();
        let n = queue.len().min(self.max_batch);
        queue.drain(..n).collect()
    }

    /// Call for batches until the queue is empty, then give the permit back.
    async fn call_queued(self: Arc<Self>, mut permit: OwnedSemaphorePermit) {
        loop {
            let batch = self.take();
            if !batch.is_empty() {
                let (questions, replies): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
                let answers = (self.call)(questions).await;
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // An asker that has gone (timed out) no longer wants it.
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
            match self.calls.clone().try_acquire_owned() {
                Ok(p) => permit = p,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::Notify;

    /// A call that records each batch and, for the first one, waits until
    /// `release`; it answers each question doubled, or with `first_only`
    /// only the first question of each batch.
    fn recording(
        release: Arc<Notify>,
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
        first_only: bool,
    ) -> Call<u32, u32> {
        Arc::new(move |questions: Vec<u32>| {
            let (release, batches) = (release.clone(), batches.clone());
            Box::pin(async move {
                let first = {
                    let mut b = batches.lock().unwrap();
                    b.push(questions.clone());
                    b.len() == 1
                };
                if first {
                    release.notified().await;
                }
                let take = if first_only { 1 } else { questions.len() };
                questions.iter().take(take).map(|q| q * 2).collect()
            })
        })
    }

    /// Poll `done` until it holds, for at most five seconds.
    async fn until(done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::task::yield_now().await;
        }
    }

    /// Ask `first`, and `rest` while its call is out (one call at a time,
    /// at most `max_batch` a call); then let the first call go. The
    /// answers, `rest`'s with their questions, and the batches called.
    async fn ask_behind_a_call(
        max_batch: usize,
        first_only: bool,
        first: u32,
        rest: &[u32],
    ) -> (Option<u32>, Vec<(u32, Option<u32>)>, Vec<Vec<u32>>) {
        let (release, batches) = (Arc::new(Notify::new()), Arc::new(Mutex::new(Vec::new())));
        let gather = Gather::new(
            1,
            max_batch,
            recording(release.clone(), batches.clone(), first_only),
        );
        let first = tokio::spawn({
            let g = gather.clone();
            async move { g.ask(first).await }
        });
        until(|| batches.lock().unwrap().len() == 1).await;
        let asked: Vec<_> = rest
            .iter()
            .map(|&q| {
                let g = gather.clone();
                tokio::spawn(async move { (q, g.ask(q).await) })
            })
            .collect();
        until(|| gather.inner.queue().len() == rest.len()).await;
        release.notify_one();
        let first = first.await.unwrap();
        let mut answers = Vec::new();
        for a in asked {
            answers.push(a.await.unwrap());
        }
        let batches = batches.lock().unwrap().clone();
        (first, answers, batches)
    }

    #[tokio::test]
    async fn questions_asked_while_a_call_is_out_go_together_in_the_next() {
        let (first, rest, batches) = ask_behind_a_call(64, false, 1, &[2, 3, 4, 5, 6]).await;
        assert_eq!(first, Some(2));
        for (q, answer) in rest {
            assert_eq!(answer, Some(q * 2), "each asker gets its own answer");
        }
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[0], vec![1]);
        let mut second = batches[1].clone();
        second.sort_unstable();
        assert_eq!(second, vec![2, 3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn a_batch_holds_at_most_max_batch_questions() {
        let (_, rest, batches) = ask_behind_a_call(3, false, 0, &[1, 2, 3, 4, 5, 6, 7]).await;
        for (_, answer) in rest {
            assert!(answer.is_some());
        }
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 3, 3, 1]);
    }

    #[tokio::test]
    async fn a_question_the_call_leaves_unanswered_gets_none() {
        let (first, rest, _) = ask_behind_a_call(64, true, 1, &[2, 3]).await;
        assert_eq!(first, Some(2));
        let mut answers: Vec<Option<u32>> = rest.into_iter().map(|(_, a)| a).collect();
        answers.sort_unstable();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0], None, "the unanswered one");
        assert!(matches!(answers[1], Some(4 | 6)));
    }
}
