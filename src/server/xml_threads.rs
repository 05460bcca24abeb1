//! The threads that do the XML work (parse, checks, c14n, serialisation), apart from
//! tokio's blocking pool, so that the memory a large document takes stays in few places.
//!
//! glibc's malloc gives each thread an arena of its own, and an arena keeps much of what
//! a finished document freed. On tokio's blocking pool, successive documents land on
//! whichever thread is idle, and each such thread's arena then holds a document's worth:
//! with 8 MB envelopes sent one at a time in JSON, the daemon's peak RSS reached 168 MB
//! (85 MB with `MALLOC_ARENA_MAX=1`); on these threads, 110 MB, and 84 MB in the raw form
//! (scripts/bench_xml.py, idle 17 MB). Here a job goes to the thread that went idle last,
//! so documents one after the other reuse one thread and one arena; there are never more
//! threads than XML requests at once, which `max_xml_in_flight` bounds.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

/// One piece of XML work. It returns the delivery of its answer, which the thread makes only
/// once it is back on the idle list, so that the caller's next job finds it there.
type Job = Box<dyn FnOnce() -> Delivery + Send>;

/// Hands a finished job's answer to its caller.
type Delivery = Box<dyn FnOnce() + Send>;

/// The XML threads: started when no idle one is left, kept for the next document.
#[derive(Default)]
pub struct XmlThreads {
    /// Idle threads' inboxes, the one that went idle last at the end.
    idle: Arc<Mutex<Vec<Sender<Job>>>>,
}

impl XmlThreads {
    /// Runs `job` on the thread that went idle last (or a new one) and returns its
    /// answer; `None` if it panicked.
    pub async fn run<T, F>(&self, job: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let mut work: Job = Box::new(move || {
            let result = job();
            Box::new(move || {
                let _ = answer.send(result);
            })
        });
        loop {
            let last_idle = self.idle.lock().expect("xml threads lock").pop();
            let inbox = match last_idle {
                Some(inbox) => inbox,
                None => match self.start() {
                    Ok(inbox) => inbox,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start an XML thread");
                        return None;
                    }
                },
            };
            // An inbox whose thread is gone gives the job back; try the next.
            match inbox.send(work) {
                Ok(()) => break,
                Err(returned) => work = returned.0,
            }
        }
        answered.await.ok()
    }

    /// A new thread, waiting on the inbox returned. It goes back on the idle list after
    /// each job's work and before the job's answer is delivered: a job never waits behind
    /// another's work, and a caller that sends its next job once answered finds this thread.
    fn start(&self) -> std::io::Result<Sender<Job>> {
        let (inbox, jobs) = channel::<Job>();
        let own = inbox.clone();
        let idle = self.idle.clone();
        std::thread::Builder::new()
            .name("xml".into())
            .spawn(move || {
                while let Ok(job) = jobs.recv() {
                    let deliver = job();
                    idle.lock().expect("xml threads lock").push(own.clone());
                    deliver();
                }
            })?;
        Ok(inbox)
    }
}

#[cfg(test)]
mod tests {
    use super::XmlThreads;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_one_after_another_reuse_one_thread() {
        let threads = XmlThreads::default();
        let first = threads.run(|| std::thread::current().id()).await;
        let second = threads.run(|| std::thread::current().id()).await;
        assert!(first.is_some());
        assert_eq!(first, second);
    }

    #[tokio::test]
    async fn jobs_at_once_never_wait_behind_each_other() {
        let threads = XmlThreads::default();
        let (to_b, from_a) = std::sync::mpsc::channel();
        let (to_a, from_b) = std::sync::mpsc::channel();
        // Each waits for the other: on one thread, the first would wait for ever.
        let a = threads.run(move || {
            to_b.send(()).is_ok() && from_b.recv_timeout(Duration::from_secs(5)).is_ok()
        });
        let b = threads.run(move || {
            to_a.send(()).is_ok() && from_a.recv_timeout(Duration::from_secs(5)).is_ok()
        });
        assert_eq!(tokio::join!(a, b), (Some(true), Some(true)));
    }

    #[tokio::test]
    async fn a_job_that_panics_answers_none_and_the_next_one_runs() {
        let threads = XmlThreads::default();
        let panicked: Option<()> = threads.run(|| panic!("a test job panics")).await;
        assert_eq!(panicked, None);
        assert_eq!(threads.run(|| 7).await, Some(7));
    }
}
