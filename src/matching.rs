//! How a match is decided: pure functions over plain data.
//!
//! Nothing here touches the database or does I/O. The worker loads an
//! [`Event`] (settings, participants, exclusions) and the current lists,
//! calls [`repair`] once per claimed attendee, and writes back the lists that
//! changed.
//!
//! - [`profile`]: a participant normalised for scoring (interned tag keys,
//!   role and bio keywords, the attendee's own spellings, unit-length
//!   embedding, company key) and the validation of raw rows.
//! - [`score`]: the algorithms (`cosine-v1`, `hybrid-v1`, with its
//!   never-outranks guarantee) and the reasons.
//! - [`topk`]: ranking order, top-K selection and the bump rule.
//! - [`engine`]: the [`Event`] and [`repair`], which keeps lists exact.

pub mod engine;
pub mod profile;
pub mod score;
pub mod topk;

pub use engine::{repair, Event, EventSettings, Lists, RepairOutcome};
pub use profile::{Participant, ParticipantRow, TagInterner};
pub use score::Algorithm;
pub use topk::Entry;
