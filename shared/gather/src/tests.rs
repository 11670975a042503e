use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::*;

/// A call that records each batch and, for the first one, waits until
/// `release`; it answers each question doubled, or with `first_only`
/// only the first question of each batch.
struct Recording {
    release: Notify,
    batches: Mutex<Vec<Vec<u32>>>,
    first_only: bool,
}

impl Call<u32, u32> for Recording {
    async fn call(&self, questions: Vec<u32>) -> Vec<u32> {
        let first = {
            let mut batches = self.batches.lock().unwrap();
            batches.push(questions.clone());
            batches.len() == 1
        };
        if first {
            self.release.notified().await;
        }
        let take = if self.first_only { 1 } else { questions.len() };
        questions.iter().take(take).map(|q| q * 2).collect()
    }
}

/// Poll `done` until it holds, for at most five seconds.
async fn until(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::task::yield_now().await;
    }
}

/// What [`ask_behind_a_call`] saw.
struct Asked {
    /// The first question's answer.
    first: Option<u32>,
    /// The other questions, each with its answer.
    rest: Vec<(u32, Option<u32>)>,
    /// The batches called, in order.
    batches: Vec<Vec<u32>>,
    /// How many times an ask made the call (started a task).
    calls_made: usize,
}

/// Ask `first`, and `rest` while its call is out (one call at a time,
/// at most `max_batch` a call); then let the first call go.
async fn ask_behind_a_call(max_batch: usize, first_only: bool, first: u32, rest: &[u32]) -> Asked {
    let recording = Arc::new(Recording {
        release: Notify::new(),
        batches: Mutex::new(Vec::new()),
        first_only,
    });
    let calls_made = Arc::new(AtomicUsize::new(0));
    let gather = Gather::new(1, max_batch);
    let ask = |q: u32| {
        let (recording, calls_made) = (recording.clone(), calls_made.clone());
        gather.ask(q, move || {
            calls_made.fetch_add(1, Ordering::SeqCst);
            recording
        })
    };
    let first = ask(first);
    until(|| recording.batches.lock().unwrap().len() == 1).await;
    let asked: Vec<_> = rest.iter().map(|&q| (q, ask(q))).collect();
    assert_eq!(
        gather.inner.queue().len(),
        rest.len(),
        "queued when asked, not when first awaited"
    );
    recording.release.notify_one();
    let first = first.await;
    let mut answers = Vec::new();
    for (q, answer) in asked {
        answers.push((q, answer.await));
    }
    let batches = recording.batches.lock().unwrap().clone();
    Asked {
        first,
        rest: answers,
        batches,
        calls_made: calls_made.load(Ordering::SeqCst),
    }
}

#[tokio::test]
async fn questions_asked_while_a_call_is_out_go_together_in_the_next() {
    let asked = ask_behind_a_call(64, false, 1, &[2, 3, 4, 5, 6]).await;
    assert_eq!(asked.first, Some(2));
    for (q, answer) in asked.rest {
        assert_eq!(answer, Some(q * 2), "each asker gets its own answer");
    }
    let batches = asked.batches;
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert_eq!(batches[0], vec![1]);
    let mut second = batches[1].clone();
    second.sort_unstable();
    assert_eq!(second, vec![2, 3, 4, 5, 6]);
    assert_eq!(
        asked.calls_made, 1,
        "the task the first ask started made the second call too"
    );
}

#[tokio::test]
async fn a_batch_holds_at_most_max_batch_questions() {
    let asked = ask_behind_a_call(3, false, 0, &[1, 2, 3, 4, 5, 6, 7]).await;
    for (_, answer) in asked.rest {
        assert!(answer.is_some());
    }
    let sizes: Vec<usize> = asked.batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1, 3, 3, 1]);
}

#[tokio::test]
async fn a_question_the_call_leaves_unanswered_gets_none() {
    let asked = ask_behind_a_call(64, true, 1, &[2, 3]).await;
    assert_eq!(asked.first, Some(2));
    let mut answers: Vec<Option<u32>> = asked.rest.into_iter().map(|(_, a)| a).collect();
    answers.sort_unstable();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0], None, "the unanswered one");
    assert!(matches!(answers[1], Some(4 | 6)));
}
