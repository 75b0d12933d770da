//! `matchmaker status`: queue and job state, for people or (`--json`) machines.

use crate::config::DbArgs;
use crate::store::events;
use crate::store::status::{self, Status};
use anyhow::Result;
use chrono::{DateTime, Utc};

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
}

pub async fn run(args: Args) -> Result<()> {
    let (_, pool) = super::connect(&args.db, 2).await?;
    let event = events::resolve(&pool, args.event.as_deref()).await?;
    let status = status::read(&pool, event, args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
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
        let _ = writeln!(
            o,
            "  {:<24} {:<22} {:>6} processed {:>4} failed {:>6} remaining ({pct:.0}%)  rate {rate}  ETA {eta}",
            e.code, e.status, e.processed, e.failed, e.remaining
        );
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
