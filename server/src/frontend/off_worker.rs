//! Polling a statement's future off the connection runtime's worker.
//!
//! Planning computes for long stretches inside one poll (a long `UNION ALL`
//! chain plans for seconds). A tokio worker busy in such a poll serves
//! nothing else, and it may be the one responsible for the runtime's I/O
//! driver or hold other connections' tasks: every session would wait for
//! that statement (measured: another session's `select 1` waited 4.7 s).
//! [`OffWorker`] polls its future inside [`tokio::task::block_in_place`],
//! which first hands the worker's duties and queued tasks to another thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future whose every poll runs with the worker's other duties handed off.
pub struct OffWorker<F>(pub Pin<Box<F>>);

impl<F: Future> Future for OffWorker<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        off_worker(|| inner.poll(cx))
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
