//! Jittered exponential delays (from `backon`) for the fallback poll and error retries.

use crate::RetryPolicy;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// An endless sequence of delays: exponential from `initial_delay`, capped at `max_delay`, each
/// shortened by a random fraction of up to `jitter`.
pub(crate) struct Delays {
    policy: RetryPolicy,
    inner: backon::ExponentialBackoff,
}

impl Delays {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Delays {
            policy,
            inner: builder(policy).build(),
        }
    }

    /// Starts again from `initial_delay`.
    pub(crate) fn reset(&mut self) {
        self.inner = builder(self.policy).build();
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.inner.next().unwrap_or(self.policy.max_delay);
        let factor = 1.0 - self.policy.jitter * fastrand::f64();
        // Never panics, whatever the policy: a factor outside 0..=1 keeps the base delay.
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }
}

fn builder(policy: RetryPolicy) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(policy.initial_delay)
        .with_max_delay(policy.max_delay)
        .with_factor(2.0)
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_in_the_jitter_band() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(80),
            jitter: 0.5,
        };
        let mut delays = Delays::new(policy);
        let seen: Vec<Duration> = (0..10).map(|_| delays.next_delay()).collect();
        assert!(seen[0] >= Duration::from_millis(5) && seen[0] <= Duration::from_millis(10));
        for d in &seen[5..] {
            assert!(
                *d >= Duration::from_millis(40) && *d <= Duration::from_millis(80),
                "{d:?}"
            );
        }
        delays.reset();
        assert!(delays.next_delay() <= Duration::from_millis(10));
    }
}
