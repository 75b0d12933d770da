//! The event in memory and [`repair`], the one operation the worker applies
//! per claimed attendee.
//!
//! ## Why repairing one attendee keeps every list exact
//!
//! Call a pair *dirty* when one of its two attendees has a queue row that
//! is pending or being processed. The invariant is: every list is the exact
//! top-K of its owner under the current data, for some values of its dirty
//! pairs. When the queue holds no pending or processing rows, no pair is
//! dirty, so every list is exact (the product's exactness property).
//!
//! Every change to the data enqueues the attendee whose pairs it changes, in
//! the same transaction, so the change only touches dirty pairs. `repair(u)`
//! then makes every pair involving `u` clean:
//!
//! - `u`'s own list is recomputed in full from the current data;
//! - for every other attendee `v` that is not dirty itself:
//!   - `u` not in `v`'s list: the bump rule. `v`'s list was exact for some
//!     value of `(v, u)`, so with the true value the new top-K is the top-K of
//!     the old list plus `u`;
//!   - `u` in `v`'s list with the same score: nothing changes;
//!   - `u` in `v`'s list with a higher score: only its rank can change;
//!   - `u` in `v`'s list with a lower score, or no longer eligible: someone
//!     outside the list may now beat it, so `v`'s list is recomputed in full.
//! - a dirty `v` is left alone: its own queue row will recompute its list.
//!
//! An attendee who left (or is unmatchable) is removed from every list, and
//! every clean list that lost them is recomputed in full.

use super::event::{score_at, Event, Lists};
use super::plan::Plan;
use super::profile::Participant;
use super::summaries::{fingerprint, Summaries};
use super::topk::{self, Entry, TopK};
use std::collections::HashSet;
use uuid::Uuid;

/// Which attendees still have queue work of their own (their lists are
/// left for that work).
pub trait Dirty {
    fn is_dirty(&self, user: &Uuid) -> bool;

    /// [`Dirty::is_dirty`] for the participant at index `i` of the event
    /// (implementations may answer from an array).
    fn is_dirty_at(&self, _i: usize, user: &Uuid) -> bool {
        self.is_dirty(user)
    }
}

impl<S: std::hash::BuildHasher> Dirty for HashSet<Uuid, S> {
    fn is_dirty(&self, user: &Uuid) -> bool {
        self.contains(user)
    }
}

/// What repairing one attendee did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairOutcome {
    /// Malformed input to report for this attendee (their row is retried and
    /// ends `failed` with this text); the lists are repaired regardless.
    pub problem: Option<String>,
    /// Attendees whose list may have changed, the repaired one included.
    pub touched: Vec<Uuid>,
    /// How many lists were recomputed in full (beyond the attendee's own).
    pub full_recomputes: usize,
    /// Clean lists that hold the attendee and did not otherwise change
    /// (their rows may need a fresh explanation).
    pub holders: Vec<Uuid>,
    /// Clean lists decided from their summary alone / by reading the list.
    pub fast_checks: usize,
    pub slow_checks: usize,
}

/// Makes every pair involving `user` clean (see the module docs). `dirty`
/// holds the attendees that still have queue work of their own; their lists
/// are left for that work.
pub fn repair<D: Dirty + ?Sized>(event: &Event, lists: &mut Lists, dirty: &D, user: Uuid) -> RepairOutcome {
    repair_with(event, lists, dirty, user, Accelerators::default())
}

/// What a batch already has that lets [`repair_with`] skip work. Each is
/// optional; the result is the same with or without them.
#[derive(Default)]
pub struct Accelerators<'a> {
    /// The attendee's row of [`Event::score_rows`] (or of
    /// [`Event::approx_rows`] made exact by [`super::plan_bounded`] wherever
    /// the plan and the repair read it).
    pub row: Option<&'a [f32]>,
    /// Summaries of the lists, kept in step with them: they let the repair
    /// skip, without reading them, the lists the attendee is not in and
    /// cannot enter.
    pub summaries: Option<&'a mut Summaries>,
    /// The attendee's [`Plan`]: their own list, and the only lists to visit.
    pub plan: Option<&'a Plan>,
}

/// [`repair`] with what a batch already has (see [`Accelerators`]). Same
/// result.
pub fn repair_with<D: Dirty + ?Sized>(
    event: &Event,
    lists: &mut Lists,
    dirty: &D,
    user: Uuid,
    with: Accelerators<'_>,
) -> RepairOutcome {
    let Accelerators {
        row,
        mut summaries,
        plan,
    } = with;
    let mut out = RepairOutcome {
        touched: vec![user],
        ..Default::default()
    };
    let me = event.participant(user);
    out.problem = match me {
        Some(p) if p.active => event.problem(p),
        _ => None,
    };
    let forget = |summaries: &mut Option<&mut Summaries>, v: &Uuid| {
        if let Some(s) = summaries.as_deref_mut() {
            s.forget(event.index_of(v));
        }
    };
    let recompute = |v: Uuid, lists: &mut Lists, out: &mut RepairOutcome, summaries: &mut Option<&mut Summaries>| {
        let list = event.participant(v).map(|p| event.top_k(p)).unwrap_or_default();
        set_list(lists, v, list);
        forget(summaries, &v);
        out.touched.push(v);
        out.full_recomputes += 1;
    };
    forget(&mut summaries, &user);

    let me = match me {
        Some(p) if event.matchable(p) => p,
        _ => {
            // Gone, left or unmatchable: in no list, and no list of their own.
            lists.remove(&user);
            let holders: Vec<Uuid> = lists
                .iter()
                .filter(|(_, l)| l.iter().any(|e| e.user == user))
                .map(|(v, _)| *v)
                .collect();
            for v in holders {
                if let Some(l) = lists.get_mut(&v) {
                    l.retain(|e| e.user != user);
                }
                forget(&mut summaries, &v);
                out.touched.push(v);
                let clean = event.participant(v).is_some_and(|p| event.matchable(p)) && !dirty.is_dirty(&v);
                if clean {
                    recompute(v, lists, &mut out, &mut summaries);
                }
            }
            return out;
        }
    };

    let k = event.k();
    let computed;
    let row = match row {
        Some(r) => r,
        None => {
            computed = event.score_rows(&[me]);
            &computed
        }
    };
    let my_bit = fingerprint(&user);
    let mut own = TopK::new(k);
    let participants = event.participants();
    // Without a plan: every attendee, building the own list on the way.
    // With one: only the lists the plan could not rule out.
    let all: Box<dyn Iterator<Item = usize>> = match plan {
        None => Box::new(0..participants.len()),
        Some(p) => Box::new(p.candidates.iter().map(|&i| i as usize)),
    };
    for i in all {
        let other = &participants[i];
        let v = other.user_id;
        let score = score_at(row, i);
        if plan.is_none() {
            if let Some(s) = score {
                own.offer(Entry::new(v, s));
            }
        }
        if v == user || dirty.is_dirty_at(i, &v) {
            continue;
        }
        // The fast path: v's list cannot hold `user` (its fingerprint or
        // its members say so), so only the bump rule applies, and the
        // weakest entry decides.
        if let Some(sums) = summaries.as_deref_mut() {
            let sum = sums.get(i, &v, lists, k);
            if sum.fits && (sum.members[my_bit.0] & my_bit.1 == 0 || !sums.may_hold(i, &user, my_bit)) {
                out.fast_checks += 1;
                let Some(s) = score else { continue };
                let candidate = Entry::new(user, s);
                if sum.weakest.is_some_and(|w| !topk::beats(&candidate, &w)) {
                    continue;
                }
                if topk::offer(lists.entry(v).or_default(), k, candidate) {
                    sums.forget(Some(i));
                    out.touched.push(v);
                }
                continue;
            }
        }
        out.slow_checks += 1;
        let Some(score) = score else {
            // Not eligible (any more): must not stay in their list.
            let holds = lists.get(&v).is_some_and(|l| l.iter().any(|e| e.user == user));
            if holds {
                recompute(v, lists, &mut out, &mut summaries);
            }
            continue;
        };
        let list = lists.entry(v).or_default();
        match list.iter().position(|e| e.user == user) {
            None => {
                if topk::offer(list, k, Entry::new(user, score)) {
                    forget(&mut summaries, &v);
                    out.touched.push(v);
                }
            }
            // Longer than K (K was lowered): only a full recomputation is exact.
            Some(_) if list.len() > k => recompute(v, lists, &mut out, &mut summaries),
            Some(i) => {
                let old = list[i].score;
                if score.to_bits() == old.to_bits() {
                    out.holders.push(v);
                    continue;
                }
                if score > old {
                    list[i].score = score;
                    topk::sort(list);
                    forget(&mut summaries, &v);
                    out.touched.push(v);
                } else {
                    recompute(v, lists, &mut out, &mut summaries);
                }
            }
        }
    }
    let own = match plan {
        Some(p) => p.own.clone(),
        None => own.into_vec(),
    };
    if own.is_empty() && out.problem.is_none() {
        out.problem = event.incomparable(me);
    }
    set_list(lists, user, own);
    forget(&mut summaries, &user);
    out.touched.sort_unstable();
    out.touched.dedup();
    out
}

fn set_list(lists: &mut Lists, user: Uuid, list: Vec<Entry>) {
    if list.is_empty() {
        lists.remove(&user);
    } else {
        lists.insert(user, list);
    }
}

/// The exact lists of every attendee, from scratch: the brute force the
/// incremental path must always agree with.
pub fn brute_force(event: &Event) -> Lists {
    let mut lists = Lists::default();
    let n = event.participants().len();
    for chunk in event.participants().chunks(64) {
        let users: Vec<&Participant> = chunk.iter().collect();
        let rows = event.score_rows(&users);
        for (p, row) in chunk.iter().zip(rows.chunks(n.max(1))) {
            let list = if event.matchable(p) {
                event.top_k_of_row(row)
            } else {
                Vec::new()
            };
            set_list(&mut lists, p.user_id, list);
        }
    }
    lists
}
