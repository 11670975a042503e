//! [`PerThread`]: a value of which each thread that uses it gets its own,
//! made on that thread on first use, and made again if the thread is
//! running another tokio runtime than the one its copy was made on.
//!
//! Why: a client whose connections are driven by tasks (an HTTP client's
//! pool, a multiplexed Redis connection) spawns those tasks on the runtime
//! of the thread that opened the connection. Shared by all of a server's
//! actix workers, a connection opened on one worker is driven there (or
//! on the main runtime, if it was opened at start-up) while a request on
//! another waits for it, and every call crosses threads twice: the
//! caller hands the request to the driver's thread and is woken from it.
//! On the 2-core machine of the load test, those wake-ups and task
//! switches were about a tenth of the actix workers' samples
//! (loadtest/README.md, 2026-12-05). With a copy per thread, a request
//! and its connection stay on one thread.
//!
//! A copy is tied to its runtime as well as its thread: the tasks of a
//! runtime that was shut down are gone, and a thread's id can be reused
//! by a new thread (`thread_local` recycles them), so a copy made under
//! another runtime is never handed out.

use std::cell::RefCell;
use std::sync::Arc;

use thread_local::ThreadLocal;
use tokio::runtime::{Handle, Id};

/// Each thread's own `T`, made by `make` on the thread's first [`local`].
/// The copies live as long as the `PerThread` (a thread that ends leaves
/// its copy until then; a server's workers live as long as the server).
///
/// [`local`]: PerThread::local
pub struct PerThread<T: Send> {
    shared: Arc<Shared<T>>,
}

impl<T: Send> Clone for PerThread<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<T: Send> {
    copies: ThreadLocal<RefCell<Option<Copy<T>>>>,
    make: Box<dyn Fn() -> Option<T> + Send + Sync>,
    /// The first one made, for a thread whose own could not be made.
    first: T,
}

/// A thread's copy and the runtime it was made under (`None`: outside
/// any runtime).
struct Copy<T> {
    runtime: Option<Id>,
    value: T,
}

/// The runtime the calling thread is running, if any.
fn current_runtime() -> Option<Id> {
    Handle::try_current().ok().map(|handle| handle.id())
}

impl<T: Clone + Send + 'static> PerThread<T> {
    /// Make the first copy now (its error is the caller's), and the others
    /// with the same `make` on each thread's first use. A later `make`
    /// that fails leaves that thread with the first copy.
    pub fn new<E>(make: impl Fn() -> Result<T, E> + Send + Sync + 'static) -> Result<Self, E> {
        let first = make()?;
        let shared = Shared {
            copies: ThreadLocal::new(),
            make: Box::new(move || make().ok()),
            first: first.clone(),
        };
        *shared.copies.get_or_default().borrow_mut() = Some(Copy {
            runtime: current_runtime(),
            value: first,
        });
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// This thread's copy.
    pub fn local(&self) -> T {
        let shared = &*self.shared;
        let runtime = current_runtime();
        let slot = shared.copies.get_or_default();
        if let Some(copy) = &*slot.borrow()
            && copy.runtime == runtime
        {
            return copy.value.clone();
        }
        let value = (shared.make)().unwrap_or_else(|| shared.first.clone());
        *slot.borrow_mut() = Some(Copy {
            runtime,
            value: value.clone(),
        });
        value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting() -> (Arc<AtomicUsize>, PerThread<usize>) {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let per_thread = PerThread::new(move || Ok::<_, ()>(counter.fetch_add(1, Ordering::SeqCst)))
            .unwrap_or_else(|()| unreachable!());
        (made, per_thread)
    }

    #[test]
    fn each_thread_makes_its_own_once_and_keeps_it() {
        let (made, per_thread) = counting();
        assert_eq!(per_thread.local(), 0, "the making thread keeps the first copy");
        assert_eq!(per_thread.local(), 0);
        let other = per_thread.clone();
        let on_other = std::thread::spawn(move || (other.local(), other.local()))
            .join()
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(on_other, (1, 1), "another thread makes its own, once");
        assert_eq!(made.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_copy_made_under_another_runtime_is_made_again() {
        let (made, per_thread) = counting();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap_or_else(|_| unreachable!())
        };
        let first = runtime().block_on(async { (per_thread.local(), per_thread.local()) });
        assert_eq!(
            first,
            (1, 1),
            "outside a runtime the first copy was made; this one is new"
        );
        let second = runtime().block_on(async { per_thread.local() });
        assert_eq!(second, 2, "a new runtime on the same thread gets a new copy");
        assert_eq!(made.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_thread_that_cannot_make_its_own_uses_the_first() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let per_thread = PerThread::new(move || match counter.fetch_add(1, Ordering::SeqCst) {
            0 => Ok("first"),
            _ => Err("no more"),
        })
        .unwrap_or_else(|_| unreachable!());
        let other = per_thread.clone();
        let got = std::thread::spawn(move || other.local())
            .join()
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(got, "first");
    }
}
