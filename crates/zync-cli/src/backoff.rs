//! Capped exponential backoff with jitter, for reconnecting (the client) and restarting ssh
//! (the daemon's tunnel). The jitter matters when many clients lose one daemon at once: without
//! it they all come back in lockstep, again and again.

use std::time::Duration;

/// Waits that double from `initial` up to `max`; each wait returned is drawn uniformly from its
/// upper half (`[d/2, d]`), so retries spread out but never come sooner than half the step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The wait before the next attempt (jittered); the step after is twice as long, up to the
    /// cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(step, random_fraction())
    }

    /// Back to the initial wait (the last attempt made progress: the next failure is news).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

/// `step` scaled into its upper half by `fraction` (in `[0, 1]`).
fn jitter(step: Duration, fraction: f64) -> Duration {
    step.mul_f64(0.5 + fraction.clamp(0.0, 1.0) / 2.0)
}

/// A uniform fraction in `[0, 1]`; 1 (no jitter, the old lockstep) if the system has no
/// randomness to give, which only costs the spreading.
fn random_fraction() -> f64 {
    getrandom::u32().map_or(1.0, |r| f64::from(r) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_within_their_upper_half_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        for step in [1, 2, 4, 8, 8] {
            let d = b.next_delay();
            let step = Duration::from_secs(step);
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(
            b.next_delay() <= Duration::from_secs(1),
            "reset did not go back"
        );
        let mut capped = Backoff::new(Duration::from_secs(90), Duration::from_secs(60));
        assert!(
            capped.next_delay() <= Duration::from_secs(60),
            "initial above the cap"
        );
    }

    #[test]
    fn the_jitter_spans_the_upper_half() {
        let step = Duration::from_secs(10);
        assert_eq!(jitter(step, 0.0), Duration::from_secs(5));
        assert_eq!(jitter(step, 1.0), step);
        assert_eq!(
            jitter(step, 7.0),
            step,
            "out-of-range fractions are clamped"
        );
    }

    #[test]
    fn twenty_clients_do_not_retry_in_lockstep() {
        let delays: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).next_delay())
            .collect();
        assert!(
            delays.len() > 10,
            "only {} distinct waits: {delays:?}",
            delays.len()
        );
    }
}
