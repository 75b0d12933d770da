//! Plans: what can be decided for each attendee of a batch before any of it
//! is repaired, and so in parallel: their own top-K, and the only lists
//! their bump must look at.

use super::event::Event;
use super::profile::{Embedding, Participant};
use super::summaries::{fingerprint, Summaries};
use super::topk::{self, Entry, TopK};

/// Elements per bit mask of the scans over a row.
const CHUNK: usize = 64;

/// The bit mask of the elements of `chunk` (at most 64) for which `test`
/// holds, computed without branches.
#[inline(always)]
fn hits(chunk: &[f32], test: impl Fn(f32) -> bool) -> u64 {
    let mut mask = 0u64;
    for (j, &s) in chunk.iter().enumerate() {
        mask |= u64::from(test(s)) << j;
    }
    mask
}

/// What can be decided for one attendee of a batch before any of the batch
/// is repaired, and so in parallel: their own top-K, and the lists the bump
/// rule must look at.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub own: Vec<Entry>,
    /// Participant indices of lists that were clean when the batch started
    /// and that may hold the attendee or that the attendee may enter.
    pub candidates: Vec<u32>,
}

/// Plans the repair of `user` from their score row (see [`Plan`]).
///
/// Why leaving out the other lists is safe: a list left out was clean at the
/// start of the batch, did not hold `user` (its member filter says so) and
/// had K entries that `user` does not beat. During the batch such a list
/// only changes by the bump rule (its weakest entry only gets stronger, and
/// only other attendees enter) or by a full recomputation (exact under the
/// current data, `user` included), so `user` has nothing to do there when
/// its turn comes. Lists of attendees dirty at the start are repaired by
/// their own rows, or, for this batch's attendees, computed in full from
/// the same snapshot.
pub fn plan(event: &Event, summaries: &Summaries, clean: &[bool], user: &Participant, row: &[f32]) -> Plan {
    Plan {
        own: event.top_k_of_row(row),
        candidates: bump_candidates(event, summaries, clean, user, row, 0.0),
    }
}

/// [`plan`] from a row of [`Event::approx_rows`], whose scores are within
/// `bound` of the exact ones: the same plan, up to a few more candidates.
/// The scores the plan and the repair read (the candidates', and any that
/// may be among the attendee's K best) are computed exactly into `row`; the
/// others stay approximate and are never read (see [`super::repair_with`]).
///
/// Why that is exact: with L the K-th largest of the lower bounds
/// `row[i] - bound`, at least K pairs score ≥ L exactly, so a pair with
/// `row[i] + bound < L` scores < L exactly and is not among the K best. A
/// list whose gate (weakest score) exceeds `row[i] + bound` is strictly
/// above the exact score too, which cannot enter it; those are the lists
/// [`plan`] leaves out, with the same argument (see its docs).
pub fn plan_bounded(
    event: &Event,
    summaries: &Summaries,
    clean: &[bool],
    user: &Participant,
    row: &mut [f32],
    bound: f32,
) -> Plan {
    let Embedding::Valid(mine) = &user.embedding else {
        return plan(event, summaries, clean, user, row);
    };
    let k = event.k();
    let participants = event.participants();
    let n = participants.len().min(row.len());
    // The K largest lower bounds, to find L; on the way, every pair whose
    // upper bound reaches the running K-th lower bound (which only rises to
    // L), a superset of those that reach L.
    let mut lows: Vec<f32> = Vec::with_capacity(k + 1);
    let mut floor = f32::NEG_INFINITY;
    let mut maybe: Vec<u32> = Vec::new();
    // In chunks of 64: a bit mask of the pairs that reach the floor as it
    // was at the chunk's start (branch-free, so the compiler vectorises
    // it), then those few one by one against the floor as it rises. The
    // floor only rises, so the set is the same as testing one by one.
    let row_n = &row[..n];
    for (c, chunk) in row_n.chunks(CHUNK).enumerate() {
        let mut mask = hits(chunk, |s| s + bound >= floor);
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let s = chunk[j];
            if s + bound < floor {
                continue;
            }
            maybe.push((c * CHUNK + j) as u32);
            let low = s - bound;
            if low > floor || lows.len() < k {
                let at = lows.partition_point(|&x| x >= low);
                lows.insert(at, low);
                lows.truncate(k);
                if lows.len() == k {
                    floor = lows[k - 1];
                }
            }
        }
    }
    let l = if lows.len() == k { floor } else { f32::NEG_INFINITY };
    let candidates = bump_candidates(event, summaries, clean, user, row, bound);
    let mut own = TopK::new(k);
    for &i in &maybe {
        let i = i as usize;
        if row[i] + bound >= l {
            row[i] = event.cosine_exact(mine, i);
            own.offer(Entry::new(participants[i].user_id, row[i]));
        }
    }
    // Candidates among the own ones are exact already; recomputing gives
    // the same bits.
    for &i in &candidates {
        let i = i as usize;
        if !row[i].is_nan() {
            row[i] = event.cosine_exact(mine, i);
        }
    }
    Plan {
        own: own.into_vec(),
        candidates,
    }
}

/// The clean lists `user` may be in or may enter, from the packed summaries
/// (see `Summaries::fill`): every list that may hold them, and every list
/// whose gate their score (give or take `slack`) reaches. A list beyond the
/// packed ones (none after a fill) is always included.
fn bump_candidates(
    event: &Event,
    summaries: &Summaries,
    clean: &[bool],
    user: &Participant,
    row: &[f32],
    slack: f32,
) -> Vec<u32> {
    let bit = fingerprint(&user.user_id);
    let participants = event.participants();
    let me = event.index_of(&user.user_id);
    let mut candidates = Vec::new();
    let members = &summaries.members[bit.0];
    let n = participants.len().min(clean.len());
    let packed = summaries.gate.len().min(members.len()).min(n);
    if slack > 0.0 {
        // Approximate rows: a list is a candidate when its member filter
        // may hold the attendee or their score reaches its gate, give or
        // take `slack`. Both tests are evaluated without branching on
        // `clean` (half the lists are clean midway through a cold start,
        // in no order a branch predictor could learn); only the few hits
        // are looked at one by one.
        let gate = &summaries.gate[..packed];
        let (row, clean_packed) = (&row[..packed.min(row.len())], &clean[..packed]);
        // In chunks of 64 lists: a bit mask of the lists to look at, the
        // attendee's bit plane of the member filters (one word per chunk)
        // or'ed with those their score reaches, computed branch-free (the
        // compiler vectorises it); then the few hits one by one.
        let plane = summaries.plane(bit);
        let mut base = 0;
        while base < row.len() {
            let end = (base + CHUNK).min(row.len());
            let valid = if end - base == 64 {
                u64::MAX
            } else {
                (1u64 << (end - base)) - 1
            };
            let mut mask = plane.get(base / 64).copied().unwrap_or(u64::MAX) & valid;
            for i in base..end {
                // NaN (not an eligible pair) compares false.
                let enters = clean_packed[i] & (row[i] + slack >= gate[i]);
                mask |= u64::from(enters) << (i - base);
            }
            while mask != 0 {
                let i = base + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if me == Some(i) {
                    continue;
                }
                let enters = clean_packed[i] & (row[i] + slack >= gate[i]);
                if enters || (clean_packed[i] && summaries.may_hold(i, &user.user_id, bit)) {
                    candidates.push(i as u32);
                }
            }
            base = end;
        }
        // Past the end of the row (no score: never enters): lists that may
        // hold the attendee, and those without a packed summary (none after
        // a fill), when clean.
        for (i, &is_clean) in clean.iter().enumerate().take(n).skip(row.len()) {
            let holds = i >= packed || summaries.may_hold(i, &user.user_id, bit);
            if is_clean && me != Some(i) && holds {
                candidates.push(i as u32);
            }
        }
        return candidates;
    }
    for (i, &is_clean) in clean.iter().enumerate().take(participants.len()) {
        if !is_clean || me == Some(i) {
            continue;
        }
        if i < packed && !summaries.may_hold(i, &user.user_id, bit) {
            // Not a member: look only if the attendee may enter. A NaN
            // score (not an eligible pair) compares false both ways.
            let s = row.get(i).copied().unwrap_or(f32::NAN);
            let gate = summaries.gate[i];
            let enters = s > gate
                || (s == gate
                    && summaries
                        .peek(i)
                        .and_then(|sum| sum.weakest)
                        .is_none_or(|w| topk::beats(&Entry::new(user.user_id, s), &w)));
            if !enters {
                continue;
            }
        }
        candidates.push(i as u32);
    }
    candidates
}
