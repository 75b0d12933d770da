//! Retry timing: exponential backoff with full jitter, and the provider's
//! `Retry-After`.

use rand::Rng;
use std::time::Duration;

/// How one request is retried after a 429, a 5xx, a timeout or a
/// connection error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The backoff before retry `n` (1-based) is uniform in
    /// `[0, min(cap, base · 2^(n-1))]` ("full jitter").
    pub base: Duration,
    /// The longest backoff.
    pub cap: Duration,
    /// The longest `Retry-After` honoured; a provider asking for more gets
    /// this much.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the jittered backoff before retry `retry` (1 for
    /// the first retry).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry `retry`: the provider's `Retry-After` (capped)
    /// when it sent one, else full-jitter backoff.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        match retry_after {
            Some(d) => d.min(self.retry_after_cap),
            None => {
                let ceiling = self.backoff_ceiling(retry);
                if ceiling.is_zero() {
                    return ceiling;
                }
                Duration::from_secs_f64(rng.gen_range(0.0..=ceiling.as_secs_f64()))
            }
        }
    }
}

/// Parses the delay a provider asks for. `retry-after-ms` (milliseconds,
/// which OpenAI sends) wins over `Retry-After` in its delay-seconds form
/// (integer or decimal). The HTTP-date form and anything unparseable are
/// ignored (the caller falls back to backoff).
pub fn parse_retry_after(retry_after: Option<&str>, retry_after_ms: Option<&str>) -> Option<Duration> {
    let seconds = |s: &str| -> Option<f64> {
        let v: f64 = s.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v)
    };
    if let Some(ms) = retry_after_ms.and_then(seconds) {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    retry_after
        .and_then(seconds)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let p = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            retry_after_cap: Duration::from_secs(5),
        };
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(p.backoff_ceiling(5), Duration::from_millis(1000));
        assert_eq!(p.backoff_ceiling(1000), Duration::from_millis(1000));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(3, None, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Full jitter: spread over the whole range, not clustered at the top.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(300)));
        // Retry-After wins, capped.
        let after = Some(Duration::from_secs(2));
        assert_eq!(p.delay(1, after, &mut rng), Duration::from_secs(2));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600)), &mut rng),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retry_after_parses_the_seconds_forms() {
        assert_eq!(parse_retry_after(Some("2"), None), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some(" 0 "), None), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(Some("1.5"), None), Some(Duration::from_millis(1500)));
        assert_eq!(
            parse_retry_after(Some("2"), Some("250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after(Some("2"), Some("soon")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), None), None);
        assert_eq!(parse_retry_after(Some("-1"), None), None);
        assert_eq!(parse_retry_after(Some("NaN"), None), None);
        assert_eq!(parse_retry_after(None, None), None);
        assert_eq!(parse_retry_after(Some("1e12"), None), Some(Duration::from_secs(86_400)));
    }
}
