//! One Redlock fan-out round: a call to each of several instances, whose answers are taken in
//! the order they arrive, so that the caller decides as soon as the outcome is known; the calls
//! still running then finish in the background.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lock_core::Tracker;
use std::future::Future;
use std::pin::Pin;
use tokio::time::Instant;

type Call<T> = Pin<Box<dyn Future<Output = (usize, T)> + Send>>;

/// The calls of one round still running, each tagged with its instance's index.
pub(crate) struct Round<T> {
    calls: FuturesUnordered<Call<T>>,
    /// Per instance of the backend: its call is still running.
    pending: Vec<bool>,
}

impl<T: Send + 'static> Round<T> {
    /// Starts `call(i)` for each `i` of `nodes` (indexes below `n`).
    pub(crate) fn start<F, Fut>(n: usize, nodes: impl IntoIterator<Item = usize>, call: F) -> Self
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let calls = FuturesUnordered::new();
        let mut pending = vec![false; n];
        for i in nodes {
            pending[i] = true;
            let call = call(i);
            calls.push(Box::pin(async move { (i, call.await) }) as Call<T>);
        }
        Round { calls, pending }
    }

    /// The next answer, or `None` when every call has answered or `deadline` passed first.
    pub(crate) async fn next(&mut self, deadline: Option<Instant>) -> Option<(usize, T)> {
        let next = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.calls.next())
                .await
                .ok()
                .flatten(),
            None => self.calls.next().await,
        };
        if let Some((i, _)) = &next {
            self.pending[*i] = false;
        }
        next
    }

    /// How many calls are still running.
    pub(crate) fn remaining(&self) -> usize {
        self.calls.len()
    }

    /// The indexes of the instances whose calls are still running.
    pub(crate) fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.pending
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.then_some(i))
    }

    /// Lets the calls still running finish in the background; `then(i, answer)` runs on each
    /// answer (each call is bounded by the instance's timeout, so this ends too).
    pub(crate) fn finish_in_background<F, Fut>(mut self, background: &Tracker, then: F)
    where
        F: Fn(usize, T) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.calls.is_empty() {
            return;
        }
        background.spawn(async move {
            let mut after = FuturesUnordered::new();
            loop {
                tokio::select! {
                    answer = self.calls.next(), if !self.calls.is_empty() => {
                        if let Some((i, answer)) = answer {
                            after.push(then(i, answer));
                        }
                    }
                    Some(()) = after.next(), if !after.is_empty() => {}
                    else => break,
                }
            }
        });
    }

    /// Lets the calls still running finish in the background, ignoring their answers.
    pub(crate) fn detach(self, background: &Tracker) {
        self.finish_in_background(background, |_, _| async {});
    }
}
