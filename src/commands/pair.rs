//! `matchmaker pair`: computes, writes and prints one meeting round of an
//! event (issue 13).
//!
//! Two steps, so that a large round (a minute at 10,000 attendees) never
//! holds the event's lock while it computes: the triggers take that lock on
//! every join, edit and leave, which would wait for it.
//!
//! 1. One read-only `REPEATABLE READ` snapshot: the event, its pairing mode
//!    and sides, and every earlier round. The round is planned from it
//!    (CPU only, outside any transaction): it is the plan for the event as
//!    that snapshot saw it, exactly as if it had been computed in no time;
//!    joins and leaves after it never rewrite a round.
//! 2. One transaction holding the event's lock ([`rounds::lock_event`]),
//!    which every writer of rounds takes: if the event's rounds are still
//!    those of the snapshot (same numbers, same `created_at`), the round is
//!    written whole ([`rounds::insert`]; `--force` deletes the old one
//!    first), read back and committed. If another `pair` run changed them
//!    meanwhile, nothing is written and both steps run again (at most
//!    [`ATTEMPTS`] times, then a one-line error).
//!
//! A crash (even SIGKILL) leaves no round or the whole round; two runs for
//! one event never write interleaved or conflicting rounds. An existing
//! round is printed as written (a round is a printed plan) unless `--force`.
//!
//! Rules:
//! - the next round is the highest existing one plus one; `--round N` may
//!   name an existing round or any round up to the next one;
//! - "met before" and past sit-outs come from every other round of the
//!   event, so a round redone with `--force` repeats no pair of a later
//!   round either;
//! - when no two eligible attendees may meet (fewer than 2 eligible, all
//!   pairs already met, one side only), nothing is written and the command
//!   fails with one line saying so.
//!
//! `MATCHMAKER_FAULT_PAIR_DELAY` (e.g. `2s`) is for tests and drills only:
//! the command sleeps that long inside the transaction after writing the
//! round and before committing, so a kill can be aimed at that moment.
//! `MATCHMAKER_FAULT_PAIR_PLAN_DELAY` sleeps between the plan and the write
//! (first attempt only), as a long round would.

use crate::config::DbArgs;
use crate::matching::pairing::{plan_round, EventScores, Mode, Options, RoundPlan, Strategy};
use crate::matching::score::explain;
use crate::matching::IdMap;
use crate::store::rounds::{self, NewRound, PairRow};
use crate::store::{events, snapshot};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// Above this many attendees a round keeps fewer candidates per attendee and
/// reads the dense rows twice (one solve, then the bound), as the benchmark
/// does at 10,000 (about a minute).
const LARGE_ROUND: usize = 5_000;
/// Pairs printed in the text summary.
const SHOWN: usize = 10;
/// Reads and plans a round at most this often when other `pair` runs keep
/// changing the event's rounds meanwhile.
const ATTEMPTS: u32 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub db: DbArgs,
    /// The event (id or code).
    #[arg(long, env = "MATCHMAKER_EVENT")]
    pub event: String,
    /// The round (default: the next one).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub round: Option<i32>,
    /// `optimal` (the most pairs, fair sit-outs, the highest total score) or
    /// `greedy` (the old baseline).
    #[arg(long, default_value = "optimal", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// Delete the round if it exists and compute it again.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object on stdout.
    #[arg(long, env = "MATCHMAKER_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}

/// The figures of a freshly computed round that are not stored.
struct Computed {
    certified: bool,
    greedy_total: Option<f64>,
}

pub async fn run(args: Args) -> Result<()> {
    let commit_delay = fault_delay("MATCHMAKER_FAULT_PAIR_DELAY")?;
    let plan_delay = fault_delay("MATCHMAKER_FAULT_PAIR_PLAN_DELAY")?;
    let (_, pool) = super::connect(&args.db, 1).await?;
    let info = events::require(&pool, &args.event).await?;
    let event_id = info.id;

    let mut attempt = 0;
    let (header, rows, names, computed) = loop {
        attempt += 1;
        // 1. Read everything the round depends on from one snapshot, with no
        //    lock: a large round computes for a minute, and the triggers take
        //    the event's lock on every join, edit and leave, which must not
        //    wait that long. The round is the plan for the event as this
        //    snapshot saw it (later joins and leaves never rewrite a round).
        let mut read = pool.begin().await.context("starting the round's read")?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *read)
            .await
            .context("starting the round's read")?;
        let existing = rounds::list(&mut *read, event_id).await?;
        let next = existing.iter().map(|r| r.round).max().unwrap_or(0).saturating_add(1);
        let round = args.round.unwrap_or(next);
        if round > next {
            bail!(
                "round {round} of {} is in the future: the next round is {next}",
                info.code
            );
        }
        let exists = existing.iter().any(|r| r.round == round);
        let inputs = if !exists || args.force {
            Some(Inputs::read(&mut read, event_id, &info.code, round).await?)
        } else {
            None
        };
        read.commit().await.context("ending the round's read")?;
        let planned = match inputs {
            Some(inputs) => Some(plan(&inputs, &info.code, round, args.strategy)?),
            None => None,
        };

        if let (Some(d), 1) = (plan_delay, attempt) {
            tracing::warn!(delay = ?d, "MATCHMAKER_FAULT_PAIR_PLAN_DELAY: sleeping between the plan and the write (tests and drills only)");
            tokio::time::sleep(d).await;
        }

        // 2. Write under the event's lock, in one transaction, if no other
        //    `pair` run wrote, redid or deleted a round of the event since
        //    the snapshot (its rounds decide "met before", the sit-outs and
        //    the round number). Every writer of rounds takes this lock, so
        //    the comparison cannot go stale before the commit.
        let mut tx = pool.begin().await.context("starting the round's transaction")?;
        rounds::lock_event(&mut tx, event_id).await?;
        if rounds::list(&mut *tx, event_id).await? != existing {
            tx.rollback().await.context("rolling back")?;
            if attempt >= ATTEMPTS {
                bail!(
                    "the rounds of {} changed {ATTEMPTS} times while this one was computed (another `pair` run?); nothing written, run it again",
                    info.code
                );
            }
            tracing::info!(
                attempt,
                "another run changed the event's rounds meanwhile: computing again"
            );
            continue;
        }
        let mut computed = None;
        if let Some((new, c)) = planned {
            if exists {
                rounds::delete(&mut tx, event_id, round).await?;
            }
            rounds::insert(&mut tx, event_id, &new).await?;
            if let Some(d) = commit_delay {
                tracing::warn!(delay = ?d, "MATCHMAKER_FAULT_PAIR_DELAY: sleeping before the commit (tests and drills only)");
                tokio::time::sleep(d).await;
            }
            computed = Some(c);
        }
        let header = rounds::list(&mut *tx, event_id)
            .await?
            .into_iter()
            .find(|r| r.round == round)
            .with_context(|| format!("round {round} of {} vanished", info.code))?;
        let rows = rounds::pairs(&mut *tx, event_id, round).await?;
        let names: HashMap<Uuid, String> = rounds::names(&mut *tx, event_id).await?.into_iter().collect();
        tx.commit().await.context("committing the round")?;
        break (header, rows, names, computed);
    };

    let report = Report {
        code: &info.code,
        header: &header,
        rows: &rows,
        names: &names,
        computed: computed.as_ref(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// A test and drill hook: the duration in environment variable `name`.
fn fault_delay(name: &str) -> Result<Option<std::time::Duration>> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => humantime::parse_duration(&v)
            .map(Some)
            .with_context(|| format!("{name}={v:?}")),
        _ => Ok(None),
    }
}

/// What a round is computed from, read in one snapshot.
struct Inputs {
    event: crate::matching::Event,
    mode: Mode,
    sides: IdMap<Uuid, String>,
    met: Vec<(Uuid, Uuid)>,
    sat: IdMap<Uuid, i64>,
}

impl Inputs {
    /// Reads the event, its pairing mode and sides, and its earlier rounds.
    async fn read(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        event_id: Uuid,
        code: &str,
        round: i32,
    ) -> Result<Self> {
        let read = snapshot::read_in(&mut *tx, event_id)
            .await?
            .with_context(|| format!("event {code} no longer exists"))?;
        let event = crate::worker::event_of(event_id, &read);
        let mode: Mode = rounds::pairing_mode(&mut **tx, event_id)
            .await?
            .unwrap_or_else(|| "any".into())
            .parse()
            .map_err(anyhow::Error::msg)?;
        let sides = rounds::sides(&mut **tx, event_id).await?.into_iter().collect();
        // Every other round counts, later ones too (`--force` on an early
        // round); the round itself does not, as it is replaced.
        let met = rounds::met_in_other_rounds(&mut **tx, event_id, round).await?;
        let sat = rounds::sat_out_in_other_rounds(&mut **tx, event_id, round)
            .await?
            .into_iter()
            .collect();
        Ok(Self {
            event,
            mode,
            sides,
            met,
            sat,
        })
    }
}

/// Plans round `round` from what [`Inputs::read`] read (CPU only).
fn plan(inputs: &Inputs, code: &str, round: i32, strategy: Strategy) -> Result<(NewRound, Computed)> {
    let Inputs {
        event,
        mode,
        sides,
        met,
        sat,
    } = inputs;
    let scores = EventScores::new(event, *mode, sides, met);
    let people = scores.attendees();
    let n = people.len();
    if n < 2 {
        bail!("{code} has {n} eligible attendee(s): a round needs at least 2; nothing written");
    }
    let sat_out: Vec<u32> = people
        .iter()
        .map(|p| sat.get(&p.user_id).map_or(0, |&c| u32::try_from(c).unwrap_or(u32::MAX)))
        .collect();
    let options = options_for(n);
    let plan = with_progress(n * options.max_passes, strategy.as_str(), |tick| {
        plan_round(&scores, &sat_out, strategy, options, tick)
    });
    if plan.pairs == 0 {
        bail!(
            "no two of the {n} eligible attendees of {code} may meet this round (all met before, excluded, same company or same side); nothing written"
        );
    }
    let greedy_total = match strategy {
        Strategy::Greedy => None,
        Strategy::Optimal => Some(
            with_progress(n * options.max_passes, "greedy baseline", |tick| {
                plan_round(&scores, &sat_out, Strategy::Greedy, options, tick)
            })
            .total_score,
        ),
    };
    let rows = rows_of(&plan, event, people);
    let new = NewRound {
        round,
        strategy: strategy.as_str().to_string(),
        total_score: plan.total_score,
        upper_bound: plan.upper_bound,
        rows,
    };
    let computed = Computed {
        certified: plan.certified,
        greedy_total,
    };
    Ok((new, computed))
}

/// The benchmark's settings: the defaults up to [`LARGE_ROUND`] attendees,
/// then 10 candidates each and one solve plus the bound pass.
fn options_for(n: usize) -> Options {
    if n > LARGE_ROUND {
        Options {
            candidates: 10,
            max_passes: 2,
            ..Options::default()
        }
    } else {
        Options::default()
    }
}

/// Runs `f` with a progress bar on stderr (hidden when stderr is not a
/// terminal) counting the rows read, at most `len`.
fn with_progress<T>(len: usize, what: &str, f: impl FnOnce(&mut dyn FnMut(usize)) -> T) -> T {
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} rows ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    let out = f(&mut |rows| bar.inc(rows as u64));
    bar.finish_and_clear();
    out
}

/// One row per attendee: both directions of each pair with the reasons from
/// that attendee's side, tables numbered from 1, then the sit-outs.
fn rows_of(plan: &RoundPlan, event: &crate::matching::Event, people: &[&crate::matching::Participant]) -> Vec<PairRow> {
    let alg = event.settings.algorithm.as_ref().ok().copied();
    let reasons = |me: usize, other: usize| alg.map(|a| explain(a, people[me], people[other], &event.tags));
    let mut rows = Vec::with_capacity(people.len());
    for (table, (a, b, score)) in plan.pair_list().into_iter().enumerate() {
        let (a, b) = (a as usize, b as usize);
        let table_no = Some(i32::try_from(table + 1).unwrap_or(i32::MAX));
        rows.push(PairRow {
            user_id: people[a].user_id,
            partner_id: Some(people[b].user_id),
            score: Some(score),
            reasons: reasons(a, b),
            table_no,
        });
        rows.push(PairRow {
            user_id: people[b].user_id,
            partner_id: Some(people[a].user_id),
            score: Some(score),
            reasons: reasons(b, a),
            table_no,
        });
    }
    for (v, m) in plan.mate.iter().enumerate() {
        if m.is_none() {
            rows.push(PairRow {
                user_id: people[v].user_id,
                partner_id: None,
                score: None,
                reasons: None,
                table_no: None,
            });
        }
    }
    rows
}

/// What is printed about a round.
struct Report<'a> {
    code: &'a str,
    header: &'a rounds::RoundRow,
    rows: &'a [PairRow],
    names: &'a HashMap<Uuid, String>,
    computed: Option<&'a Computed>,
}

impl Report<'_> {
    fn name(&self, u: &Uuid) -> String {
        match self.names.get(u) {
            Some(n) if !n.trim().is_empty() => n.clone(),
            _ => u.to_string(),
        }
    }

    fn mean(&self) -> f64 {
        if self.header.pairs > 0 {
            self.header.total_score / f64::from(self.header.pairs)
        } else {
            0.0
        }
    }

    fn gap_percent(&self) -> f64 {
        self.header.gap_percent()
    }

    fn gain_percent(&self) -> Option<f64> {
        let g = self.computed?.greedy_total?;
        Some(if g != 0.0 {
            100.0 * (self.header.total_score - g) / g.abs()
        } else {
            0.0
        })
    }

    /// The pairs once each (the row of the first of the two), by table.
    fn pairs(&self) -> impl Iterator<Item = &PairRow> {
        let mut seen = std::collections::HashSet::new();
        self.rows.iter().filter(move |r| match (r.partner_id, r.table_no) {
            (Some(_), Some(t)) => seen.insert(t),
            _ => false,
        })
    }

    fn summary(r: &PairRow) -> String {
        r.reasons
            .as_ref()
            .and_then(|v| v.get("summary"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    fn text(&self) -> String {
        use std::fmt::Write;
        let h = self.header;
        let mut s = String::new();
        let how = if self.computed.is_some() {
            "computed now"
        } else {
            "already written; --force recomputes it"
        };
        let _ = writeln!(s, "{} round {} ({}, {how})", self.code, h.round, h.strategy);
        let _ = writeln!(
            s,
            "  pairs {}, sat out {}, mean score {:.4}, total {:.4}, upper bound {:.4} (gap {:.2} %)",
            h.pairs,
            h.sat_out,
            self.mean(),
            h.total_score,
            h.upper_bound,
            self.gap_percent()
        );
        if let (Some(c), Some(gain)) = (self.computed, self.gain_percent()) {
            let _ = writeln!(
                s,
                "  greedy on the same round: total {:.4}; optimal gains {gain:.2} %",
                c.greedy_total.unwrap_or(0.0)
            );
        }
        for r in self.pairs().take(SHOWN) {
            if let (Some(p), Some(t)) = (r.partner_id, r.table_no) {
                let _ = writeln!(
                    s,
                    "  table {t:>4}: {} + {} ({:.3}) {}",
                    self.name(&r.user_id),
                    self.name(&p),
                    r.score.unwrap_or(f32::NAN),
                    Self::summary(r)
                );
            }
        }
        if usize::try_from(h.pairs).unwrap_or(0) > SHOWN {
            let _ = writeln!(
                s,
                "  ... and {} more pairs (--json lists all)",
                h.pairs as usize - SHOWN
            );
        }
        let out: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.partner_id.is_none())
            .map(|r| self.name(&r.user_id))
            .collect();
        if !out.is_empty() {
            let _ = writeln!(s, "  sitting out: {}", out.join(", "));
        }
        s
    }

    fn json(&self) -> Value {
        let h = self.header;
        let pairs: Vec<Value> = self
            .pairs()
            .filter_map(|r| {
                let p = r.partner_id?;
                let back = self.rows.iter().find(|x| x.user_id == p);
                Some(json!({
                    "table": r.table_no,
                    "a": r.user_id,
                    "a_name": self.name(&r.user_id),
                    "b": p,
                    "b_name": self.name(&p),
                    "score": r.score,
                    "reasons_for_a": r.reasons,
                    "reasons_for_b": back.and_then(|x| x.reasons.clone()),
                }))
            })
            .collect();
        let sat_out: Vec<Uuid> = self
            .rows
            .iter()
            .filter(|r| r.partner_id.is_none())
            .map(|r| r.user_id)
            .collect();
        json!({
            "event": self.code,
            "round": h.round,
            "strategy": h.strategy,
            "computed": self.computed.is_some(),
            "attendees": self.rows.len(),
            "pairs": h.pairs,
            "sat_out": h.sat_out,
            "total_score": h.total_score,
            "mean_score": self.mean(),
            "upper_bound": h.upper_bound,
            "gap_percent": self.gap_percent(),
            "certified_optimal": self.computed.map(|c| c.certified),
            "greedy_total_score": self.computed.and_then(|c| c.greedy_total),
            "optimal_gain_percent": self.gain_percent(),
            "created_at": h.created_at,
            "pair_list": pairs,
            "sat_out_users": sat_out,
        })
    }
}
