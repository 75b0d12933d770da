//! The circuit breaker: a provider that keeps failing is not called again
//! until a cool-down has passed, and then by one probe only.
//!
//! ```text
//!            N consecutive failed attempts,
//!            or one request out of retries
//!  Closed ──────────────────────────────────▶ Open { until }
//!    ▲                                          │ cool-down over
//!    │ probe succeeds                           ▼
//!    └──────────────────────────────────── HalfOpen ── probe fails ──▶ Open
//! ```
//!
//! Pure state: the caller passes the clock in, so it is unit-tested without
//! sleeping.

use std::time::Duration;
use tokio::time::Instant;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed attempts (across requests) that open the breaker.
    /// A request that exhausts its retries opens it too, whatever the count.
    pub failure_threshold: u32,
    /// How long the breaker stays open before a probe is allowed.
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            cool_down: Duration::from_secs(60),
        }
    }
}

/// What the breaker says about the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead, with retries.
    Allowed,
    /// Half-open: this request is the probe; one attempt, no retries.
    Probe,
    /// Open (or another probe is in flight): fail fast.
    Refused { retry_in: Duration, last_error: String },
}

/// The state, as `status` may show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// `probe_since` is set while a probe is in flight.
    HalfOpen {
        probe_since: Option<Instant>,
    },
}

/// The breaker. Not thread-safe by itself; the embedder keeps it in a mutex
/// and never holds the lock across an await.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
    consecutive_failures: u32,
    last_error: String,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: State::Closed,
            consecutive_failures: 0,
            last_error: String::new(),
        }
    }

    /// Asks to send a request at `now`. A probe that has not reported back
    /// within `probe_timeout` (its caller was cancelled) is presumed lost,
    /// and the next caller probes instead.
    pub fn admit(&mut self, now: Instant, probe_timeout: Duration) -> Admission {
        match self.state {
            State::Closed => Admission::Allowed,
            State::Open { until } if now < until => Admission::Refused {
                retry_in: until - now,
                last_error: self.last_error.clone(),
            },
            State::HalfOpen { probe_since: Some(t) } if now.saturating_duration_since(t) < probe_timeout => {
                Admission::Refused {
                    retry_in: probe_timeout - now.saturating_duration_since(t),
                    last_error: self.last_error.clone(),
                }
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen { probe_since: Some(now) };
                Admission::Probe
            }
        }
    }

    /// The provider answered usefully: close.
    pub fn record_success(&mut self) {
        self.state = State::Closed;
        self.consecutive_failures = 0;
    }

    /// One failed attempt. Returns true when this opened the breaker.
    pub fn record_failure(&mut self, now: Instant, error: &str) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = error.to_string();
        let trip = matches!(self.state, State::HalfOpen { .. })
            || self.consecutive_failures >= self.policy.failure_threshold.max(1);
        trip && self.open(now)
    }

    /// A request ran out of retries: open at once. Returns true when this
    /// opened the breaker (false when it already was open).
    pub fn trip(&mut self, now: Instant, error: &str) -> bool {
        self.last_error = error.to_string();
        self.open(now)
    }

    fn open(&mut self, now: Instant) -> bool {
        let was_open = matches!(self.state, State::Open { .. });
        self.state = State::Open {
            until: now + self.policy.cool_down,
        };
        !was_open
    }

    /// The state at `now` (an open breaker whose cool-down is over reads as
    /// half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: Duration = Duration::from_secs(10);

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failure_threshold: 3,
            cool_down: Duration::from_secs(60),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy());
        assert_eq!(b.admit(t0, PROBE), Admission::Allowed);
        assert!(!b.record_failure(t0, "HTTP 500"));
        assert!(!b.record_failure(t0, "HTTP 500"));
        assert!(b.record_failure(t0, "HTTP 503"));
        assert_eq!(b.state(t0), BreakerState::Open);
        match b.admit(t0 + Duration::from_secs(59), PROBE) {
            Admission::Refused { retry_in, last_error } => {
                assert_eq!(retry_in, Duration::from_secs(1));
                assert_eq!(last_error, "HTTP 503");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.admit(t1, PROBE), Admission::Probe);
        // One probe at a time.
        assert!(matches!(b.admit(t1, PROBE), Admission::Refused { .. }));
        // The probe fails: open again for a full cool-down.
        assert!(b.record_failure(t1, "timed out"));
        assert!(matches!(
            b.admit(t1 + Duration::from_secs(59), PROBE),
            Admission::Refused { .. }
        ));
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(b.admit(t2, PROBE), Admission::Probe);
        b.record_success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert_eq!(b.admit(t2, PROBE), Admission::Allowed);
    }

    #[test]
    fn a_success_resets_the_count_and_a_lost_probe_is_replaced() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy());
        b.record_failure(t0, "x");
        b.record_failure(t0, "x");
        b.record_success();
        assert!(!b.record_failure(t0, "x"));
        assert!(!b.record_failure(t0, "x"));
        // Out of retries: open at once.
        assert!(b.trip(t0, "x"));
        assert!(!b.trip(t0, "x"), "already open");
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(b.admit(t1, PROBE), Admission::Probe);
        // The probe's caller was cancelled and never reported back.
        assert_eq!(b.admit(t1 + PROBE, PROBE), Admission::Probe);
    }
}
