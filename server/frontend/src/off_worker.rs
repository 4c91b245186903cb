//! Polling a statement's future off the connection runtime's worker.
//!
//! Planning computes for long stretches inside one poll (a long `UNION ALL`
//! chain plans for seconds). A tokio worker busy in such a poll serves
//! nothing else, and it may be the one responsible for the runtime's I/O
//! driver or hold other connections' tasks: every session would wait for
//! that statement (measured: another session's `select 1` waited 4.7 s).
//! [`OffWorker`] polls its future inside [`tokio::task::block_in_place`],
//! which first hands the worker's duties and queued tasks to another thread.
//!
//! Handing off costs a thread switch on every poll, more than a short
//! statement takes to plan: under 64 clients of a one-line query it was a
//! tenth of the frontend's CPU. Statements up to [`SHORT_STATEMENT_BYTES`]
//! are polled on the worker ([`OffWorker::for_statement`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Statements of at most this many bytes plan in well under a millisecond
/// (a `UNION ALL` chain this long has a few dozen branches), so their polls
/// stay on the worker.
pub const SHORT_STATEMENT_BYTES: usize = 1024;

/// A future whose every poll runs with the worker's other duties handed off
/// (unless it runs a short statement).
pub struct OffWorker<F> {
    future: Pin<Box<F>>,
    hand_off: bool,
}

impl<F: Future> OffWorker<F> {
    /// `future` working on the statement `text`: polled off the worker
    /// unless the text is short.
    pub fn for_statement(text: &str, future: F) -> Self {
        Self {
            future: Box::pin(future),
            hand_off: text.len() > SHORT_STATEMENT_BYTES,
        }
    }
}

impl<F: Future> Future for OffWorker<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let hand_off = self.hand_off;
        let inner = self.future.as_mut();
        if hand_off {
            off_worker(|| inner.poll(cx))
        } else {
            inner.poll(cx)
        }
    }
}

/// Runs `work` on the statement `text`, with the worker's other duties
/// handed off unless the text is short.
pub fn off_worker_for<T>(text: &str, work: impl FnOnce() -> T) -> T {
    if text.len() > SHORT_STATEMENT_BYTES {
        off_worker(work)
    } else {
        work()
    }
}

/// Runs `work` with the worker's other duties handed off (on a
/// multi-threaded runtime; directly elsewhere): for work on a whole
/// statement's text, such as checking its depth.
pub fn off_worker<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
