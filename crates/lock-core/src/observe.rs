//! Metrics (feature `metrics`) and tracing spans (feature `tracing`). Every function here is a
//! no-op when its feature is off. The library records through the `metrics` and `tracing`
//! facades only: it never installs a recorder or a subscriber.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `lock_acquire_total` | counter | `backend`, `kind`, `outcome` | acquisition calls by outcome: `granted` (at once), `granted_after_wait` (contended, then granted), `busy` (`try_*` found it held), `timeout`, `cancelled`, `error` |
//! | `lock_acquire_duration_seconds` | histogram | `backend`, `kind` | from the call to the grant, for granted calls |
//! | `lock_held_duration_seconds` | histogram | `backend`, `kind` | from the grant to the release, however it was released |
//! | `lock_extend_total` | counter | `backend`, `outcome` | extensions (automatic and explicit): `ok`, `expired`, `error` |
//! | `lock_lost_total` | counter | `backend`, `kind` | guards declared lost |
//! | `lock_release_total` | counter | `backend`, `via` | releases: `explicit` (`release().await`), `drop`, `close` (`Locker::close`) |
//!
//! Labels never carry lock names (they are unbounded); spans do.

use crate::{FencingToken, LockKey};
use std::future::Future;
use tokio::time::Instant;

/// How an acquisition call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcquireOutcome {
    Granted,
    GrantedAfterWait,
    Busy,
    Timeout,
    Cancelled,
    Error,
}

impl AcquireOutcome {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            AcquireOutcome::Granted => "granted",
            AcquireOutcome::GrantedAfterWait => "granted_after_wait",
            AcquireOutcome::Busy => "busy",
            AcquireOutcome::Timeout => "timeout",
            AcquireOutcome::Cancelled => "cancelled",
            AcquireOutcome::Error => "error",
        }
    }
}

/// How an extension ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExtendOutcome {
    Ok,
    Expired,
    Error,
}

/// How a lease was released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReleaseVia {
    Explicit,
    Drop,
    Close,
}

#[cfg(feature = "metrics")]
fn describe_all() {
    use metrics::{Unit, describe_counter, describe_histogram};
    {
        describe_counter!(
            "lock_acquire_total",
            "Lock acquisition calls by backend, lock kind and outcome."
        );
        describe_histogram!(
            "lock_acquire_duration_seconds",
            Unit::Seconds,
            "Time from an acquisition call to its grant."
        );
        describe_histogram!(
            "lock_held_duration_seconds",
            Unit::Seconds,
            "Time from a grant to its release."
        );
        describe_counter!("lock_extend_total", "Lease extensions by outcome.");
        describe_counter!("lock_lost_total", "Guards declared lost.");
        describe_counter!("lock_release_total", "Lease releases by path.");
    }
}

/// Describes the metrics to the installed recorder; called for every new locker, so a
/// recorder installed late still gets the descriptions.
pub(crate) fn describe() {
    #[cfg(feature = "metrics")]
    describe_all();
}

pub(crate) fn acquire(
    key: &LockKey,
    backend: &'static str,
    outcome: AcquireOutcome,
    started: Instant,
) {
    #[cfg(feature = "metrics")]
    {
        let took = started.elapsed();
        let kind = key.kind().as_str();
        metrics::counter!("lock_acquire_total", "backend" => backend, "kind" => kind, "outcome" => outcome.as_str())
            .increment(1);
        if matches!(
            outcome,
            AcquireOutcome::Granted | AcquireOutcome::GrantedAfterWait
        ) {
            metrics::histogram!("lock_acquire_duration_seconds", "backend" => backend, "kind" => kind)
                .record(took.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (key, backend, outcome, started);
}

pub(crate) fn extend(backend: &'static str, outcome: ExtendOutcome) {
    #[cfg(feature = "metrics")]
    {
        let outcome = match outcome {
            ExtendOutcome::Ok => "ok",
            ExtendOutcome::Expired => "expired",
            ExtendOutcome::Error => "error",
        };
        metrics::counter!("lock_extend_total", "backend" => backend, "outcome" => outcome)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, outcome);
}

pub(crate) fn lost(key: &LockKey, backend: &'static str, token: FencingToken) {
    #[cfg(not(feature = "tracing"))]
    let _ = token;
    #[cfg(feature = "metrics")]
    metrics::counter!("lock_lost_total", "backend" => backend, "kind" => key.kind().as_str())
        .increment(1);
    #[cfg(feature = "tracing")]
    tracing::warn!(backend, kind = %key.kind(), name = key.name(), token = token.get(), "lock lost");
    #[cfg(not(any(feature = "metrics", feature = "tracing")))]
    let _ = (key, backend);
}

pub(crate) fn release(key: &LockKey, backend: &'static str, via: ReleaseVia, granted: Instant) {
    #[cfg(feature = "metrics")]
    {
        let held = granted.elapsed();
        let via = match via {
            ReleaseVia::Explicit => "explicit",
            ReleaseVia::Drop => "drop",
            ReleaseVia::Close => "close",
        };
        metrics::counter!("lock_release_total", "backend" => backend, "via" => via).increment(1);
        metrics::histogram!("lock_held_duration_seconds", "backend" => backend, "kind" => key.kind().as_str())
            .record(held.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (key, backend, via, granted);
}

/// The operations that get a span.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    Acquire,
    Extend,
    Release,
}

/// Runs `fut` inside a span `lock.acquire` / `lock.extend` / `lock.release` carrying the
/// backend, kind, name and token (the span is entered on each poll, never held across an
/// await).
pub(crate) async fn in_span<F: Future>(
    op: Op,
    key: &LockKey,
    backend: &'static str,
    token: Option<FencingToken>,
    fut: F,
) -> F::Output {
    #[cfg(feature = "tracing")]
    {
        use tracing::Instrument;
        use tracing::field::Empty;
        let token = token.map(FencingToken::get);
        let span = match op {
            Op::Acquire => {
                tracing::info_span!("lock.acquire", backend, kind = %key.kind(), name = key.name(), token = Empty)
            }
            Op::Extend => {
                tracing::info_span!("lock.extend", backend, kind = %key.kind(), name = key.name(), token)
            }
            Op::Release => {
                tracing::info_span!("lock.release", backend, kind = %key.kind(), name = key.name(), token)
            }
        };
        fut.instrument(span).await
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (op, key, backend, token);
        fut.await
    }
}

/// Records the granted token on the current `lock.acquire` span.
pub(crate) fn record_token(token: FencingToken) {
    #[cfg(feature = "tracing")]
    tracing::Span::current().record("token", token.get());
    #[cfg(not(feature = "tracing"))]
    let _ = token;
}
