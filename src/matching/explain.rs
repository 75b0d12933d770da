//! Why one attendee is or is not in another's list (`matchmaker explain`):
//! the same eligibility rules and scores as [`Event::pair_score`] and
//! [`Event::top_k`], named.

use super::event::Event;
use super::topk::Entry;
use serde::Serialize;
use uuid::Uuid;

/// Why `partner` is or is not in `user`'s list, checked in this order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum WhyNot {
    /// In the list at `rank` (1-based) with `score`.
    InList { rank: usize, score: f32 },
    /// The partner is not a participant of the event.
    NotInEvent,
    /// The attendee and the partner are the same person.
    SamePerson,
    /// Left the event (status other than active): `"user"`, `"partner"` or `"both"`.
    Inactive { who: &'static str },
    /// An exclusion row: `"user"` excluded the partner, `"partner"` excluded the user, or `"both"`.
    Excluded { by: &'static str },
    /// The event excludes pairs from the same company, and they share one.
    SameCompany,
    /// No usable embedding (or another profile problem): whose, and the scorer's text.
    NoValidEmbedding { who: &'static str, problem: String },
    /// Eligible, but scored below the K-th entry of the list.
    BelowKth { score: f32, kth_score: f32, gap: f32 },
    /// Eligible and scored, yet not in the list (a tie at the K-th score
    /// broken against the partner, or a list shorter than K that omits it).
    NotSelected { score: f32 },
}

fn who(a: bool, b: bool) -> Option<&'static str> {
    match (a, b) {
        (true, true) => Some("both"),
        (true, false) => Some("user"),
        (false, true) => Some("partner"),
        (false, false) => None,
    }
}

/// The reason for `partner` relative to `user`'s computed `list`
/// (from [`Event::top_k`]). `None` when `user` is not in the event.
pub fn why(event: &Event, list: &[Entry], user: Uuid, partner: Uuid) -> Option<WhyNot> {
    let a = event.participant(user)?;
    if let Some(i) = list.iter().position(|e| e.user == partner) {
        return Some(WhyNot::InList {
            rank: i + 1,
            score: list[i].score,
        });
    }
    let Some(b) = event.participant(partner) else {
        return Some(WhyNot::NotInEvent);
    };
    if user == partner {
        return Some(WhyNot::SamePerson);
    }
    if let Some(w) = who(!a.active, !b.active) {
        return Some(WhyNot::Inactive { who: w });
    }
    let ab = event.exclusions.contains(&(user, partner));
    let ba = event.exclusions.contains(&(partner, user));
    if let Some(w) = who(ab, ba) {
        return Some(WhyNot::Excluded { by: w });
    }
    if event.settings.exclude_same_company && a.company_key.is_some() && a.company_key == b.company_key {
        return Some(WhyNot::SameCompany);
    }
    for (w, p) in [("user", a), ("partner", b)] {
        if !event.matchable(p) {
            let problem = event
                .problem(p)
                .or_else(|| event.incomparable(p))
                .unwrap_or_else(|| "not matchable under the event's algorithm".into());
            return Some(WhyNot::NoValidEmbedding { who: w, problem });
        }
    }
    let Some(score) = event.pair_score(a, b) else {
        // Both matchable but incomparable (e.g. embeddings of different lengths).
        let problem = event
            .incomparable(a)
            .or_else(|| event.incomparable(b))
            .unwrap_or_else(|| "the scorer found the pair incomparable".into());
        return Some(WhyNot::NoValidEmbedding { who: "both", problem });
    };
    match list.last() {
        Some(kth) if list.len() >= event.k() && score < kth.score => Some(WhyNot::BelowKth {
            score,
            kth_score: kth.score,
            gap: kth.score - score,
        }),
        _ => Some(WhyNot::NotSelected { score }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::event::EventSettings;
    use crate::matching::profile::{Participant, ParticipantRow, TagInterner};
    use crate::matching::score::Algorithm;

    fn id(i: u128) -> Uuid {
        Uuid::from_u128(i)
    }

    fn event(k: usize, people: &[(u128, &str, &str, Option<Vec<f32>>)]) -> Event {
        let settings = EventSettings {
            id: id(999),
            algorithm: Ok(Algorithm::CosineV1),
            matches_per_user: k,
            exclude_same_company: true,
            embedding_dimensions: None,
        };
        let mut e = Event::new(settings, TagInterner::default());
        for (i, status, company, emb) in people {
            let row = ParticipantRow {
                user_id: id(*i),
                active: *status == "active",
                company: Some((*company).into()),
                embedding: emb.as_ref().map(|v| v.iter().map(|x| Some(*x)).collect()),
                ..ParticipantRow::default()
            };
            let p = Participant::from_row(&row, None, &mut e.tags);
            e.upsert(p);
        }
        e
    }

    fn list(e: &Event, u: u128) -> Vec<Entry> {
        let p = e.participant(id(u)).cloned();
        p.map(|p| e.top_k(&p)).unwrap_or_default()
    }

    #[test]
    fn every_reason_is_named() {
        let v = |x: f32, y: f32| Some(vec![x, y]);
        let mut e = event(
            1,
            &[
                (1, "active", "a", v(1.0, 0.0)),
                (2, "active", "b", v(1.0, 0.1)),
                (3, "active", "c", v(0.0, 1.0)),
                (4, "left", "d", v(1.0, 0.0)),
                (5, "active", "a", v(1.0, 0.0)),
                (6, "active", "e", None),
                (7, "active", "f", v(1.0, 0.05)),
                (8, "active", "g", v(1.0, 0.05)),
            ],
        );
        e.exclude(id(1), id(7));
        e.exclude(id(8), id(1));
        let l = list(&e, 1);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].user, id(2));
        assert!(matches!(
            why(&e, &l, id(1), id(2)),
            Some(WhyNot::InList { rank: 1, .. })
        ));
        assert_eq!(why(&e, &l, id(1), id(42)), Some(WhyNot::NotInEvent));
        assert_eq!(why(&e, &l, id(42), id(1)), None);
        assert_eq!(why(&e, &l, id(1), id(4)), Some(WhyNot::Inactive { who: "partner" }));
        assert_eq!(why(&e, &l, id(1), id(5)), Some(WhyNot::SameCompany));
        assert_eq!(why(&e, &l, id(1), id(7)), Some(WhyNot::Excluded { by: "user" }));
        assert_eq!(why(&e, &l, id(1), id(8)), Some(WhyNot::Excluded { by: "partner" }));
        e.exclude(id(7), id(1));
        assert_eq!(why(&e, &l, id(1), id(7)), Some(WhyNot::Excluded { by: "both" }));
        match why(&e, &l, id(1), id(6)) {
            Some(WhyNot::NoValidEmbedding {
                who: "partner",
                problem,
            }) => assert!(!problem.is_empty()),
            other => panic!("{other:?}"),
        }
        match why(&e, &l, id(1), id(3)) {
            Some(WhyNot::BelowKth { score, kth_score, gap }) => {
                assert!(score < kth_score);
                assert!((gap - (kth_score - score)).abs() < 1e-6);
                assert!((kth_score - l[0].score).abs() < 1e-6);
            }
            other => panic!("{other:?}"),
        }
        let l4 = list(&e, 4);
        assert!(l4.is_empty());
        assert_eq!(why(&e, &l4, id(4), id(1)), Some(WhyNot::Inactive { who: "user" }));
    }
}
