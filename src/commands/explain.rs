//! `matchmaker explain`: an attendee's list with every term of each score,
//! and why another attendee is or is not in it. It reads the event with the
//! worker's own snapshot read (one REPEATABLE READ, read-only transaction:
//! participants, exclusions, stored lists and queue rows agree) and computes
//! the list with the worker's own [`Event::top_k`], so it shows what the
//! worker stores, and says so when the stored list is behind.

use crate::config::DbArgs;
use crate::matching::explain::why;
use crate::matching::score;
use crate::matching::{Entry, Event};
use crate::store::{events, snapshot};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    /// The event (id or code).
    #[arg(long, env = "MATCHMAKER_EVENT")]
    pub event: String,
    /// The attendee whose list to explain (user id).
    #[arg(long)]
    pub user: String,
    /// Also say why this attendee (user id) is or is not in the list.
    #[arg(long)]
    pub partner: Option<String>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long, env = "MATCHMAKER_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
}

fn user_id(flag: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim()).with_context(|| format!("--{flag} {s:?} is not a user id (uuid)"))
}

pub async fn run(args: Args) -> Result<()> {
    let user = user_id("user", &args.user)?;
    let partner = args.partner.as_deref().map(|p| user_id("partner", p)).transpose()?;
    let (_, pool) = super::connect(&args.db, 1).await?;
    let info = events::require(&pool, &args.event).await?;
    let mut conn = pool.acquire().await.context("connecting")?;
    let read = snapshot::read(&mut conn, info.id, None)
        .await?
        .with_context(|| format!("event {} no longer exists", info.code))?;
    let report = explain(info.id, &info.code, &read, user, partner)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Whether two lists hold the same attendees in the same order with the same
/// scores (as `real`, the column's type).
fn same_list(computed: &[Entry], stored: &[(Uuid, f32)]) -> bool {
    computed.len() == stored.len()
        && computed
            .iter()
            .zip(stored)
            .all(|(c, (u, s))| c.user == *u && (c.score - s).abs() <= 1e-6)
}

/// The report as one JSON object, from a full snapshot read.
pub fn explain(id: Uuid, code: &str, read: &snapshot::Read, user: Uuid, partner: Option<Uuid>) -> Result<Value> {
    let event: Event = crate::worker::event_of(id, read);
    let me = event
        .participant(user)
        .with_context(|| format!("user {user} is not a participant of event {code}"))?;
    let alg = event.settings.algorithm.clone();
    let list = event.top_k(me);
    let entries: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let reasons = match (&alg, event.participant(e.user)) {
                (Ok(a), Some(other)) => score::explain(*a, me, other, &event.tags),
                _ => Value::Null,
            };
            json!({ "rank": i + 1, "user": e.user, "score": e.score, "reasons": reasons })
        })
        .collect();
    let (stored, pending) = match &read.reloaded {
        Some(r) => (
            r.lists
                .iter()
                .filter(|m| m.user_id == user)
                .map(|m| (m.matched_user_id, m.score))
                .collect::<Vec<_>>(),
            r.open_rows.iter().any(|(_, u)| *u == user),
        ),
        None => (Vec::new(), false),
    };
    let stale = !same_list(&list, &stored);
    let notice = match (stale, pending) {
        (false, _) => None,
        (true, true) => Some(format!(
            "stored list is stale: {user} has a pending queue row; the worker will update it"
        )),
        (true, false) => Some(format!(
            "stored list differs from the computed one and {user} has no pending queue row: run the worker (matchmaker run)"
        )),
    };
    let why_partner = partner.map(|b| match why(&event, &list, user, b) {
        Some(w) => serde_json::to_value(w).unwrap_or(Value::Null),
        None => Value::Null,
    });
    let stored: Vec<Value> = stored
        .iter()
        .enumerate()
        .map(|(i, (u, s))| json!({ "rank": i + 1, "user": u, "score": s }))
        .collect();
    let mut out = json!({
        "event": code,
        "algorithm": alg.as_ref().map(|a| a.as_str()).unwrap_or("unknown"),
        "k": event.k(),
        "user": user,
        "active": me.active,
        "problem": event.problem(me).or_else(|| event.incomparable(me)),
        "list": entries,
        "stored": stored,
        "stale": stale,
        "pending": pending,
        "notice": notice,
    });
    if let (Some(b), Some(w)) = (partner, why_partner) {
        out["partner"] = json!({ "user": b, "why": w });
    }
    Ok(out)
}

fn num(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.4}"))
}

/// The human-readable report.
pub fn render(r: &Value) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} in {} ({}, K = {})",
        r["user"].as_str().unwrap_or("-"),
        r["event"].as_str().unwrap_or("-"),
        r["algorithm"].as_str().unwrap_or("-"),
        r["k"]
    );
    if let Some(p) = r["problem"].as_str() {
        let _ = writeln!(o, "  problem: {p}");
    }
    let _ = writeln!(
        o,
        "  {:>4}  {:<36}  {:>7}  {:>7} {:>7} {:>7} {:>7} {:>7}",
        "rank", "partner", "score", "I", "C", "K", "E", "sim"
    );
    let empty = Vec::new();
    for e in r["list"].as_array().unwrap_or(&empty) {
        let t = &e["reasons"]["terms"];
        let _ = writeln!(
            o,
            "  {:>4}  {:<36}  {:>7}  {:>7} {:>7} {:>7} {:>7} {:>7}",
            e["rank"],
            e["user"].as_str().unwrap_or("-"),
            num(&e["score"]),
            num(&t["interests"]),
            num(&t["complementarity"]),
            num(&t["keywords"]),
            num(&t["embedding"]),
            num(&e["reasons"]["similarity"]),
        );
        if let Some(s) = e["reasons"]["summary"].as_str() {
            let _ = writeln!(o, "        {s}");
        }
    }
    if r["list"].as_array().is_none_or(|l| l.is_empty()) {
        let _ = writeln!(o, "  (empty list)");
    }
    if let Some(n) = r["notice"].as_str() {
        let _ = writeln!(o, "  NOTE: {n}");
    }
    if let Some(p) = r.get("partner") {
        let w = &p["why"];
        let b = p["user"].as_str().unwrap_or("-");
        let text = match w["reason"].as_str() {
            Some("in_list") => format!("in the list at rank {} (score {})", w["rank"], num(&w["score"])),
            Some("not_in_event") => "not a participant of this event".into(),
            Some("same_person") => "the same attendee".into(),
            Some("inactive") => format!("inactive (left the event): {}", w["who"].as_str().unwrap_or("-")),
            Some("excluded") => match w["by"].as_str() {
                Some("user") => "excluded: the user excluded them".into(),
                Some("partner") => "excluded: they excluded the user".into(),
                _ => "excluded: both excluded each other".into(),
            },
            Some("same_company") => "same company (the event excludes same-company pairs)".into(),
            Some("no_valid_embedding") => format!(
                "no valid embedding ({}): {}",
                w["who"].as_str().unwrap_or("-"),
                w["problem"].as_str().unwrap_or("-")
            ),
            Some("below_kth") => format!(
                "scored {} below the K-th entry's {} (gap {})",
                num(&w["score"]),
                num(&w["kth_score"]),
                num(&w["gap"])
            ),
            Some("not_selected") => format!("scored {} but lost a tie at the K-th score", num(&w["score"])),
            _ => "unknown".into(),
        };
        let _ = writeln!(o, "  partner {b}: {text}");
    }
    o
}
