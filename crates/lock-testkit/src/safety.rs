//! The safety checker: workers take a lock and read-modify-write a fenced register.
//!
//! The register stands for the resource a lock protects. It rejects a write whose token is
//! lower than the highest it has accepted (the fencing rule), and it records *overlaps*: a
//! holder entering while another holder is still inside. A correct lock on a healthy backend
//! shows no overlaps and no stale writes; under faults, a holder that lost its lease may still
//! try to write, and the fencing rule must reject it.

use lock_core::{Error, FencingToken, Mutex};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

/// A write rejected because a newer token had already written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleWrite {
    /// The token of the rejected write.
    pub token: FencingToken,
    /// The highest token accepted so far.
    pub highest: FencingToken,
}

impl fmt::Display for StaleWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale write with token {} rejected (highest seen {})",
            self.token, self.highest
        )
    }
}

impl std::error::Error for StaleWrite {}

#[derive(Default)]
struct Register {
    value: u64,
    highest: Option<FencingToken>,
    inside: usize,
    overlaps: u64,
    accepted: u64,
    rejected: u64,
}

/// A value guarded by fencing tokens: writes carrying a token below the highest seen are
/// rejected.
#[derive(Default, Clone)]
pub struct FencedRegister {
    inner: Arc<StdMutex<Register>>,
}

impl FencedRegister {
    /// An empty register holding 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Register> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a holder as inside its critical section; counts an overlap if another is inside.
    pub fn enter(&self) {
        let mut state = self.state();
        if state.inside > 0 {
            state.overlaps += 1;
        }
        state.inside += 1;
    }

    /// Marks a holder as out of its critical section.
    pub fn exit(&self) {
        let mut state = self.state();
        state.inside = state.inside.saturating_sub(1);
    }

    /// The current value.
    pub fn read(&self) -> u64 {
        self.state().value
    }

    /// Writes `value` if `token` is at least the highest token accepted so far.
    ///
    /// # Errors
    ///
    /// [`StaleWrite`] when a newer token has written.
    pub fn write(&self, token: FencingToken, value: u64) -> Result<(), StaleWrite> {
        let mut state = self.state();
        if let Some(highest) = state.highest
            && token < highest
        {
            state.rejected += 1;
            return Err(StaleWrite { token, highest });
        }
        state.highest = Some(token);
        state.value = value;
        state.accepted += 1;
        Ok(())
    }

    /// The number of overlaps seen so far.
    pub fn overlaps(&self) -> u64 {
        self.state().overlaps
    }
}

/// How hard the checker works.
#[derive(Debug, Clone, Copy)]
pub struct SafetyConfig {
    /// Grants each worker makes before it stops.
    pub grants_per_worker: u64,
    /// How long a holder stays inside its critical section.
    pub hold: Duration,
    /// The run stops after this long even if grants are missing.
    pub max_duration: Duration,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            grants_per_worker: 10,
            hold: Duration::from_millis(5),
            max_duration: Duration::from_secs(60),
        }
    }
}

/// What a checker run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SafetyReport {
    /// Locks granted.
    pub grants: u64,
    /// Writes the register accepted.
    pub writes_accepted: u64,
    /// Writes rejected by the fencing rule.
    pub stale_writes_rejected: u64,
    /// Holders that entered while another holder was inside.
    pub overlaps: u64,
    /// Guards declared lost while held.
    pub lost: u64,
    /// Acquisitions or releases that failed with a backend error.
    pub errors: u64,
    /// The register's final value (equals `writes_accepted` when every write was fenced).
    pub final_value: u64,
}

impl fmt::Display for SafetyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "grants {}, writes accepted {}, stale writes rejected {}, overlaps {}, lost {}, errors {}, final value {}",
            self.grants,
            self.writes_accepted,
            self.stale_writes_rejected,
            self.overlaps,
            self.lost,
            self.errors,
            self.final_value
        )
    }
}

/// Runs one worker per handle (handles may be on different lockers): each loops
/// lock → enter → read → hold → fenced write of value + 1 → exit → release.
pub async fn run_safety_checker(handles: Vec<Mutex>, config: SafetyConfig) -> SafetyReport {
    let register = FencedRegister::new();
    let grants = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + config.max_duration;
    let mut workers = Vec::new();
    for handle in handles {
        let register = register.clone();
        let (grants, lost, errors) = (grants.clone(), lost.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut done = 0;
            while done < config.grants_per_worker && tokio::time::Instant::now() < deadline {
                let guard = match tokio::time::timeout_at(deadline, handle.lock()).await {
                    Ok(Ok(guard)) => guard,
                    Ok(Err(_)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(_) => break,
                };
                done += 1;
                grants.fetch_add(1, Ordering::Relaxed);
                register.enter();
                let value = register.read();
                tokio::time::sleep(config.hold).await;
                let _ = register.write(guard.token(), value + 1);
                register.exit();
                if guard.is_lost() {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
                match guard.release().await {
                    Ok(()) | Err(Error::NotHeld { .. } | Error::Lost { .. }) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let state = register.state();
    SafetyReport {
        grants: grants.load(Ordering::Relaxed),
        writes_accepted: state.accepted,
        stale_writes_rejected: state.rejected,
        overlaps: state.overlaps,
        lost: lost.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        final_value: state.value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_rejects_stale_tokens_and_counts_overlaps() {
        let register = FencedRegister::new();
        register.write(FencingToken(5), 1).unwrap();
        let err = register.write(FencingToken(4), 2).unwrap_err();
        assert_eq!(err.highest, FencingToken(5));
        assert_eq!(register.read(), 1);
        register.enter();
        register.enter();
        register.exit();
        register.exit();
        assert_eq!(register.overlaps(), 1);
    }
}
