//! `matchmaker status`: queue and job state, for people or (`--json`) machines.

use crate::config::DbArgs;
use crate::config::{parse_duration_min_1s, parse_duration_nonzero};
use crate::store::events;
use crate::store::ops::{self, QueueGauges};
use crate::store::status::{self, Status};
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    /// Only this event (id or code).
    #[arg(long, env = "MATCHMAKER_EVENT")]
    pub event: Option<String>,
    /// Print JSON on stdout instead of tables.
    #[arg(long, env = "MATCHMAKER_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
    /// How many failed and waiting rows to list.
    #[arg(long, env = "MATCHMAKER_STATUS_LIMIT", default_value_t = 10, value_parser = clap::value_parser!(i64).range(0..=10_000))]
    pub limit: i64,
    /// One summary line and a monitoring-plugins exit code: 0 OK, 1 WARNING
    /// (expired leases, retries piling up), 2 CRITICAL (failed rows, or a
    /// pending row older than --max-age), 3 UNKNOWN (no answer).
    #[arg(long, conflicts_with_all = ["json", "watch"])]
    pub check: bool,
    /// With --check: the oldest a pending row may be (paused events aside).
    #[arg(long, default_value = "5m", value_parser = parse_duration_min_1s)]
    pub max_age: Duration,
    /// With --check: warn when this many rows wait out a retry.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_retrying: i64,
    /// Redraw every --interval until Ctrl-C.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
    /// With --watch: time between redraws.
    #[arg(long, default_value = "2s", value_parser = parse_duration_nonzero)]
    pub interval: Duration,
}

/// Runs `status`; returns the exit code (see [`Args::check`]).
pub async fn run(args: Args) -> Result<u8> {
    if args.check {
        // Anything that stops the check from reading the queue is UNKNOWN.
        let (code, line) = match check(&args).await {
            Ok(r) => r,
            Err(e) => (3, format!("MATCHMAKER UNKNOWN - {}", crate::telemetry::error_chain(&e))),
        };
        println!("{}", crate::db::scrub(&line, &args.db.database_url));
        return Ok(code);
    }
    let (_, pool) = super::connect(&args.db, 2).await?;
    let event = events::resolve(&pool, args.event.as_deref()).await?;
    if args.watch {
        let stop = super::shutdown_on_signals();
        loop {
            let status = status::read(&pool, event, args.limit).await?;
            // Clear the screen and go home, then the report.
            print!("\x1b[H\x1b[2J{}", render(&status));
            println!(
                "\n(every {}; Ctrl-C to stop)",
                humantime::format_duration(args.interval)
            );
            tokio::select! {
                _ = tokio::time::sleep(args.interval) => {}
                _ = stop.cancelled() => return Ok(0),
            }
        }
    }
    let status = status::read(&pool, event, args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(0)
}

/// `status --check`: (exit code, summary line).
async fn check(args: &Args) -> Result<(u8, String)> {
    let (_, pool) = super::connect(&args.db, 1).await?;
    let event = events::resolve(&pool, args.event.as_deref()).await?;
    let g = ops::gauges_of(&pool, event).await?;
    Ok(verdict(&g, args.max_age, args.max_retrying))
}

/// The monitoring-plugins verdict on queue counts: (exit code, line).
pub fn verdict(g: &QueueGauges, max_age: Duration, max_retrying: i64) -> (u8, String) {
    let age = g.oldest_pending_seconds.unwrap_or(0.0);
    let mut critical = Vec::new();
    let mut warning = Vec::new();
    if g.failed > 0 {
        critical.push(format!("{} failed row(s) (see `matchmaker status`)", g.failed));
    }
    if age > max_age.as_secs_f64() {
        critical.push(format!(
            "oldest pending row {} old (max {})",
            secs(age),
            humantime::format_duration(max_age)
        ));
    }
    if g.expired_leases > 0 {
        warning.push(format!("{} row(s) with an expired lease", g.expired_leases));
    }
    if g.retrying >= max_retrying {
        warning.push(format!("{} row(s) waiting to retry (max {max_retrying})", g.retrying));
    }
    let (code, word, why) = if !critical.is_empty() {
        critical.extend(warning);
        (2, "CRITICAL", critical)
    } else if !warning.is_empty() {
        (1, "WARNING", warning)
    } else {
        (0, "OK", Vec::new())
    };
    let mut line = format!("MATCHMAKER {word} - ");
    if !why.is_empty() {
        line.push_str(&why.join("; "));
        line.push_str("; ");
    }
    let paused = if g.paused_events > 0 {
        format!(", {} paused event(s)", g.paused_events)
    } else {
        String::new()
    };
    line.push_str(&format!(
        "{} pending, {} processing, oldest pending {}{paused}",
        g.pending,
        g.processing,
        secs(age)
    ));
    // Performance data, as monitoring plugins print it.
    line.push_str(&format!(
        " | pending={} processing={} failed={} retrying={} expired_leases={} oldest_pending={age:.0}s",
        g.pending, g.processing, g.failed, g.retrying, g.expired_leases
    ));
    (code, line)
}

fn secs(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0}s")
    } else if s < 5400.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The human-readable report.
pub fn render(s: &Status) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "QUEUE");
    if s.queue.is_empty() {
        let _ = writeln!(o, "  (empty)");
    }
    for q in &s.queue {
        let _ = writeln!(o, "  {:<11} priority {}  {:>8} rows", q.status, q.priority, q.rows);
    }
    if let Some(age) = s.oldest_pending_seconds {
        let _ = writeln!(o, "  oldest pending: {}", secs(age));
    }
    let _ = writeln!(o, "\nLEASES");
    if s.leases.is_empty() {
        let _ = writeln!(o, "  (no live leases)");
    }
    for l in &s.leases {
        let _ = writeln!(
            o,
            "  {:<40} {:>5} rows, until {}",
            l.locked_by,
            l.rows,
            when(Some(l.expires_at))
        );
    }
    if s.expired_leases > 0 {
        let _ = writeln!(
            o,
            "  {} rows with an expired lease (a worker died; the next batch of their event takes them over)",
            s.expired_leases
        );
    }
    let _ = writeln!(o, "\nEVENTS");
    if s.events.is_empty() {
        let _ = writeln!(o, "  (no jobs yet)");
    }
    for e in &s.events {
        let done = e.processed + e.failed;
        let total = (i64::from(done) + e.remaining).max(1);
        let pct = 100.0 * f64::from(done) / total as f64;
        let rate = e
            .rate_per_second
            .map(|r| format!("{r:.1}/s"))
            .unwrap_or_else(|| "-".into());
        let eta = e.eta_seconds.map(secs).unwrap_or_else(|| "-".into());
        let state = match e.paused_at {
            Some(_) => format!("{} (paused)", e.status),
            None => e.status.clone(),
        };
        let _ = writeln!(
            o,
            "  {:<24} {:<22} {:>6} processed {:>4} failed {:>6} remaining ({pct:.0}%)  rate {rate}  ETA {eta}",
            e.code, state, e.processed, e.failed, e.remaining
        );
        if let Some(at) = e.paused_at {
            let _ = writeln!(
                o,
                "  {:<24} paused since {}: rows stay queued until `matchmaker resume --event {}`",
                "",
                when(Some(at)),
                e.code
            );
        }
        let _ = writeln!(
            o,
            "  {:<24} started {}  heartbeat {}  completed {}",
            "",
            when(e.started_at),
            when(e.heartbeat_at),
            when(e.completed_at)
        );
    }
    for (title, at, rows, total) in [
        ("FAILED", "failed at", &s.failed, s.failed_total),
        ("WAITING TO RETRY", "next try at", &s.retrying, s.retrying_total),
    ] {
        if rows.is_empty() {
            continue;
        }
        let more = if total > rows.len() as i64 {
            format!(" (the latest {} of {total}; --limit shows more)", rows.len())
        } else {
            String::new()
        };
        let _ = writeln!(o, "\n{title}{more}");
        for r in rows.iter() {
            let who = match r.display_name.as_deref() {
                Some(name) if !name.is_empty() => format!("{name} ({})", r.user_id),
                _ => r.user_id.to_string(),
            };
            let _ = writeln!(
                o,
                "  #{} {} {who} after {} attempt(s), {at} {}: {}",
                r.id,
                r.event_code,
                r.attempts,
                when(r.at),
                r.last_error.as_deref().unwrap_or("")
            );
        }
    }
    if !s.rounds.is_empty() {
        let _ = writeln!(o, "\nMEETING ROUNDS");
        for r in &s.rounds {
            let gap = r.gap_percent();
            let _ = writeln!(
                o,
                "  round {:<3} {:<8} {:<8} {:>5} pairs {:>4} sat out  score {:.3} (gap to bound {gap:.2}%)  at {}",
                r.round,
                r.strategy,
                r.status,
                r.pairs,
                r.sat_out,
                r.total_score,
                when(Some(r.completed_at))
            );
        }
    }
    let _ = writeln!(o, "\nRECENT RUNS");
    for r in &s.runs {
        let _ = writeln!(
            o,
            "  {} {:<20} {:<36} claimed {:>5} processed {:>5} failed {:>3}  {}",
            when(Some(r.started_at)),
            r.command,
            r.worker_id,
            r.claimed,
            r.processed,
            r.failed,
            match (r.stop_reason.as_deref(), r.error.as_deref()) {
                (Some("error"), Some(e)) => format!("error: {e}"),
                (Some(reason), _) => reason.to_string(),
                (None, _) => "running (or killed)".to_string(),
            }
        );
        if r.embedding_inputs > 0 || r.embedding_calls > 0 {
            let _ = writeln!(
                o,
                "      embeddings: {} asked, cache {} hit(s) / {} miss(es), {} provider call(s), {} token(s), {} failed request(s)",
                r.embedding_inputs,
                r.embedding_cache_hits,
                r.embedding_cache_misses,
                r.embedding_calls,
                r.embedding_tokens,
                r.embedding_failures
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> QueueGauges {
        QueueGauges {
            pending: 4,
            oldest_pending_seconds: Some(30.0),
            ..QueueGauges::default()
        }
    }

    #[test]
    fn check_verdicts_follow_the_monitoring_plugins_convention() {
        let five = Duration::from_secs(300);
        let (code, line) = verdict(&gauges(), five, 10);
        assert_eq!(code, 0, "{line}");
        assert!(line.starts_with("MATCHMAKER OK - 4 pending"), "{line}");
        let (code, line) = verdict(
            &QueueGauges {
                expired_leases: 2,
                ..gauges()
            },
            five,
            10,
        );
        assert_eq!(code, 1, "{line}");
        let (code, _) = verdict(
            &QueueGauges {
                retrying: 9,
                ..gauges()
            },
            five,
            10,
        );
        assert_eq!(code, 0);
        let (code, _) = verdict(
            &QueueGauges {
                retrying: 10,
                ..gauges()
            },
            five,
            10,
        );
        assert_eq!(code, 1);
        let (code, line) = verdict(
            &QueueGauges {
                failed: 1,
                expired_leases: 2,
                ..gauges()
            },
            five,
            10,
        );
        assert_eq!(code, 2, "critical wins over warning");
        assert!(line.contains("1 failed") && line.contains("expired lease"), "{line}");
        let old = QueueGauges {
            oldest_pending_seconds: Some(301.0),
            ..gauges()
        };
        assert_eq!(verdict(&old, five, 10).0, 2);
        assert!(!line.contains('\n'));
    }
}
