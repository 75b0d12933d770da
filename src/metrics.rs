//! What an operator scrapes: Prometheus metrics of the worker, the daemon's
//! health, and the HTTP listener that serves them ([`server`]).
//!
//! The worker records into a [`Metrics`] when it has one (the daemon with
//! `--metrics-addr`, `run --metrics-file`) and skips every call otherwise.
//! Counters move as the run's totals move: the worker hands its totals over
//! at most once a second and at the end of a run ([`Metrics::publish`]), so
//! the hot path only adds to plain integers. Histograms are observed where
//! the time is measured. The queue gauges are read from the database when a
//! scrape asks for them, at most every [`QUEUE_GAUGE_TTL`].
//!
//! Labels are low-cardinality by design: a batch phase, a queue status, a
//! drain's stop reason, a breaker state; never an event or a user.

pub mod server;
pub mod textfile;

use crate::store::ops::QueueGauges;
use crate::worker::RunTotals;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long queue gauges read from the database are served before a scrape
/// reads them again.
pub const QUEUE_GAUGE_TTL: Duration = Duration::from_secs(5);

/// The batch phases of `matchmaker_batch_duration_seconds`.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Claim,
    Read,
    Score,
    Write,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Claim => "claim",
            Phase::Read => "read",
            Phase::Score => "score",
            Phase::Write => "write",
        }
    }
}

/// The registry and a handle on every metric.
pub struct Metrics {
    registry: Registry,
    rows_claimed: IntCounter,
    rows_processed: IntCounter,
    rows_failed: IntCounter,
    rows_released: IntCounter,
    batches: IntCounter,
    drains: IntCounterVec,
    batch_duration: HistogramVec,
    join_to_match: Histogram,
    embedding_requests: IntCounter,
    embedding_failures: IntCounter,
    embedding_cache_hits: IntCounter,
    embedding_cache_misses: IntCounter,
    embedding_tokens: IntCounter,
    breaker: IntGaugeVec,
    queue_rows: IntGaugeVec,
    oldest_pending: Gauge,
    paused_events: IntGauge,
    queue_read_at: Mutex<Option<Instant>>,
    last_run_finished: Gauge,
    last_run_success: IntGauge,
    last_run_duration: Gauge,
    /// What the worker's totals were when last published.
    published: Mutex<RunTotals>,
    health: Health,
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Every metric, registered.
    pub fn new() -> Self {
        // The names are constants and distinct, so registration cannot fail.
        Self::build().expect("metric definitions are valid and distinct")
    }

    fn build() -> prometheus::Result<Self> {
        let r = Registry::new();
        let drains = IntCounterVec::new(
            Opts::new(
                "matchmaker_drains_total",
                "Drains (runs of the worker loop), by how they stopped.",
            ),
            &["stop"],
        )?;
        r.register(Box::new(drains.clone()))?;
        // From a millisecond claim to a 10 s write of a huge batch.
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let batch_duration = HistogramVec::new(
            HistogramOpts::new(
                "matchmaker_batch_duration_seconds",
                "Time a batch spent in each phase: claim (with provider embeddings), read (the event snapshot), score, write (the commit).",
            )
            .buckets(buckets),
            &["phase"],
        )?;
        r.register(Box::new(batch_duration.clone()))?;
        // What an attendee waits: a join answered within the second, a cold
        // start of a large event within minutes.
        let join_to_match = Histogram::with_opts(
            HistogramOpts::new(
                "matchmaker_join_to_match_seconds",
                "From a queue row's enqueued_at to the commit that matched its attendee.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
            ]),
        )?;
        r.register(Box::new(join_to_match.clone()))?;
        let breaker = IntGaugeVec::new(
            Opts::new(
                "matchmaker_embedding_breaker_state",
                "1 for the embedding provider's circuit-breaker state (closed, open, half_open), 0 for the others.",
            ),
            &["state"],
        )?;
        r.register(Box::new(breaker.clone()))?;
        let queue_rows = IntGaugeVec::new(
            Opts::new(
                "matchmaker_queue_rows",
                "Queue rows by status (read from the database).",
            ),
            &["status"],
        )?;
        r.register(Box::new(queue_rows.clone()))?;
        let oldest_pending = Gauge::new(
            "matchmaker_queue_oldest_pending_seconds",
            "Age of the oldest pending row of an event that is not paused (0 when none).",
        )?;
        r.register(Box::new(oldest_pending.clone()))?;
        let paused_events = IntGauge::new("matchmaker_paused_events", "Events paused with `matchmaker pause`.")?;
        r.register(Box::new(paused_events.clone()))?;
        let last_run_finished = Gauge::new(
            "matchmaker_last_run_finished_timestamp_seconds",
            "When the last run ended (Unix time).",
        )?;
        r.register(Box::new(last_run_finished.clone()))?;
        let last_run_success = IntGauge::new(
            "matchmaker_last_run_success",
            "1 if the last run ended without an error.",
        )?;
        r.register(Box::new(last_run_success.clone()))?;
        let last_run_duration = Gauge::new("matchmaker_last_run_duration_seconds", "How long the last run took.")?;
        r.register(Box::new(last_run_duration.clone()))?;
        Ok(Self {
            rows_claimed: counter(
                &r,
                "matchmaker_rows_claimed_total",
                "Queue rows claimed (an attempt each).",
            )?,
            rows_processed: counter(
                &r,
                "matchmaker_rows_processed_total",
                "Queue rows done: their attendee's list is exact.",
            )?,
            rows_failed: counter(
                &r,
                "matchmaker_rows_failed_total",
                "Queue rows that ended failed (see `status`).",
            )?,
            rows_released: counter(
                &r,
                "matchmaker_rows_released_total",
                "Claimed rows handed back unprocessed (deadline, shutdown, provider outage), attempt refunded.",
            )?,
            batches: counter(&r, "matchmaker_batches_total", "Batches claimed.")?,
            embedding_requests: counter(
                &r,
                "matchmaker_embedding_requests_total",
                "HTTP requests to the embedding provider, retries included.",
            )?,
            embedding_failures: counter(
                &r,
                "matchmaker_embedding_failures_total",
                "Provider requests that failed for good or were refused by the open breaker.",
            )?,
            embedding_cache_hits: counter(
                &r,
                "matchmaker_embedding_cache_hits_total",
                "Distinct texts found in the embedding cache.",
            )?,
            embedding_cache_misses: counter(
                &r,
                "matchmaker_embedding_cache_misses_total",
                "Distinct texts not in the embedding cache.",
            )?,
            embedding_tokens: counter(&r, "matchmaker_embedding_tokens_total", "Tokens the provider reported.")?,
            drains,
            batch_duration,
            join_to_match,
            breaker,
            queue_rows,
            oldest_pending,
            paused_events,
            queue_read_at: Mutex::new(None),
            last_run_finished,
            last_run_success,
            last_run_duration,
            published: Mutex::new(RunTotals::default()),
            health: Health::default(),
            registry: r,
        })
    }

    /// Records one phase of a batch.
    pub fn observe_phase(&self, phase: Phase, took: Duration) {
        self.batch_duration
            .with_label_values(&[phase.label()])
            .observe(took.as_secs_f64());
    }

    /// Records what an attendee waited, for each row a batch's commit matched.
    pub fn observe_join_to_match(&self, waited: Duration) {
        self.join_to_match.observe(waited.as_secs_f64());
    }

    /// Adds what the run did since the last call. `totals` are one run's
    /// totals; a new run starts from zero ([`Metrics::run_started`]).
    pub fn publish(&self, totals: &RunTotals) {
        let mut last = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let d = |now: i64, before: i64| u64::try_from(now - before).unwrap_or(0);
        self.batches.inc_by(d(totals.batches, last.batches));
        self.rows_claimed.inc_by(d(totals.claimed, last.claimed));
        self.rows_processed.inc_by(d(totals.processed, last.processed));
        self.rows_failed.inc_by(d(totals.failed, last.failed));
        self.rows_released.inc_by(d(totals.released, last.released));
        let e = totals.embeddings.since(&last.embeddings);
        self.embedding_requests.inc_by(e.provider_calls);
        self.embedding_failures.inc_by(e.failed_requests + e.fast_failures);
        self.embedding_cache_hits.inc_by(e.cache_hits);
        self.embedding_cache_misses.inc_by(e.cache_misses);
        self.embedding_tokens.inc_by(e.tokens);
        *last = totals.clone();
    }

    /// A run starts: its totals count from zero.
    pub fn run_started(&self) {
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = RunTotals::default();
    }

    /// A run ended (`stop`: drained, deadline, shutdown or error).
    pub fn run_finished(&self, stop: &str, took: Duration) {
        self.drains.with_label_values(&[stop]).inc();
        self.set_last_run(stop != "error", took);
    }

    /// Sets the last-run gauges without counting a drain (a run that failed
    /// before its loop started, e.g. the database unreachable).
    pub fn set_last_run(&self, success: bool, took: Duration) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_run_finished.set(now.as_secs_f64());
        self.last_run_success.set(i64::from(success));
        self.last_run_duration.set(took.as_secs_f64());
    }

    /// Shows the embedding provider's breaker state.
    pub fn set_breaker(&self, state: crate::embeddings::breaker::BreakerState) {
        use crate::embeddings::breaker::BreakerState::*;
        for (label, s) in [("closed", Closed), ("open", Open), ("half_open", HalfOpen)] {
            self.breaker.with_label_values(&[label]).set(i64::from(state == s));
        }
    }

    /// Whether the queue gauges are older than [`QUEUE_GAUGE_TTL`] (and
    /// marks them as being read, so concurrent scrapes read once).
    pub fn queue_gauges_due(&self) -> bool {
        let mut at = self.queue_read_at.lock().unwrap_or_else(|e| e.into_inner());
        if at.is_some_and(|t| t.elapsed() < QUEUE_GAUGE_TTL) {
            return false;
        }
        *at = Some(Instant::now());
        true
    }

    /// Sets the queue gauges from a database read.
    pub fn set_queue(&self, q: &QueueGauges) {
        for (status, n) in [
            ("pending", q.pending),
            ("processing", q.processing),
            ("done", q.done),
            ("failed", q.failed),
        ] {
            self.queue_rows.with_label_values(&[status]).set(n);
        }
        self.oldest_pending.set(q.oldest_pending_seconds.unwrap_or(0.0));
        self.paused_events.set(q.paused_events);
    }

    /// The daemon's liveness state.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4,
    /// which node_exporter's textfile collector reads too).
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec fails only on a malformed family, which the
        // registry never yields.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds on a clock of this process (0 means "never").
fn now_ms(origin: Instant) -> i64 {
    i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Whether the daemon's drain loop is alive. It is **wedged** when either
/// - a drain has been running without progress (no completed round of the
///   loop, no batch) for longer than the health timeout: the hard stop at
///   `--max-runtime` plus a second should have ended it long before, so
///   something outside the worker's own timeouts holds it; or
/// - every drain has failed for longer than the health timeout (the
///   database unreachable, the schema gone, the role's rights revoked): the
///   process runs but does nothing useful.
///
/// An idle daemon (no work, no drain) is healthy however long it idles.
#[derive(Debug)]
pub struct Health {
    origin: Instant,
    /// When the running drain started or last made progress (0: no drain).
    drain_progress: AtomicI64,
    /// When drains started failing without a success since (0: not failing).
    failing_since: AtomicI64,
    last_error: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            drain_progress: AtomicI64::new(0),
            failing_since: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

impl Health {
    /// A drain starts.
    pub fn drain_started(&self) {
        self.drain_progress.store(now_ms(self.origin), Ordering::Relaxed);
    }

    /// The running drain made progress (a round of its loop, a batch).
    pub fn progress(&self) {
        if self.drain_progress.load(Ordering::Relaxed) != 0 {
            self.drain_progress.store(now_ms(self.origin), Ordering::Relaxed);
        }
    }

    /// A drain ended, with its error if it failed.
    pub fn drain_finished(&self, error: Option<&str>) {
        self.drain_progress.store(0, Ordering::Relaxed);
        match error {
            None => self.failing_since.store(0, Ordering::Relaxed),
            Some(e) => {
                let _ =
                    self.failing_since
                        .compare_exchange(0, now_ms(self.origin), Ordering::Relaxed, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        }
    }

    /// `Err(reason)` when wedged (see [`Health`]) for longer than `timeout`.
    pub fn check(&self, timeout: Duration) -> Result<(), String> {
        let now = now_ms(self.origin);
        let limit = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let progress = self.drain_progress.load(Ordering::Relaxed);
        if progress != 0 && now - progress > limit {
            return Err(format!(
                "wedged: the running drain has made no progress for {:.0}s",
                (now - progress) as f64 / 1e3
            ));
        }
        let failing = self.failing_since.load(Ordering::Relaxed);
        if failing != 0 && now - failing > limit {
            let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(format!(
                "wedged: every drain has failed for {:.0}s; last error: {}",
                (now - failing) as f64 / 1e3,
                last.unwrap_or_default()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_adds_only_what_changed() {
        let m = Metrics::new();
        m.run_started();
        let mut t = RunTotals {
            processed: 5,
            batches: 1,
            ..RunTotals::default()
        };
        m.publish(&t);
        m.publish(&t);
        t.processed = 8;
        m.publish(&t);
        assert_eq!(m.rows_processed.get(), 8);
        assert_eq!(m.batches.get(), 1);
        // A new run counts from zero again and adds to the same counters.
        m.run_started();
        m.publish(&RunTotals {
            processed: 2,
            ..RunTotals::default()
        });
        assert_eq!(m.rows_processed.get(), 10);
        assert!(m.encode().contains("matchmaker_rows_processed_total 10"));
    }

    #[test]
    fn health_is_wedged_by_a_stuck_drain_or_failing_drains_only() {
        let h = Health::default();
        assert!(h.check(Duration::ZERO).is_ok(), "an idle daemon is healthy");
        h.drain_started();
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.check(Duration::from_secs(60)).is_ok());
        assert!(h.check(Duration::ZERO).unwrap_err().contains("no progress"));
        h.drain_finished(Some("connection refused"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.check(Duration::ZERO).unwrap_err().contains("connection refused"));
        h.drain_started();
        h.drain_finished(None);
        assert!(h.check(Duration::ZERO).is_ok(), "one success clears the failures");
    }
}
