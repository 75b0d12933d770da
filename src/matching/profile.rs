//! A participant as the scorers see it, and the validation of raw rows.

use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The longest embedding accepted (larger vectors are malformed input).
pub const MAX_DIMENSIONS: usize = 16_000;
/// The most tags one list may hold; more is malformed input.
pub const MAX_TAGS: usize = 500;
/// Tags longer than this (in characters) are cut before matching.
pub const MAX_TAG_CHARS: usize = 200;

/// A participant row as the application wrote it. Every field is as lenient
/// as the column: NULL array elements and NULL vector components survive
/// decoding and are judged here, not by the driver.
#[derive(Debug, Clone)]
pub struct ParticipantRow {
    pub user_id: Uuid,
    pub active: bool,
    pub company: Option<String>,
    pub role: Option<String>,
    pub interests: Option<Vec<Option<String>>>,
    pub looking_for: Option<Vec<Option<String>>>,
    pub offering: Option<Vec<Option<String>>>,
    pub embedding: Option<Vec<Option<f32>>>,
    /// Dimensions of the embedding array as stored (1 for a flat list); a
    /// multi-dimensional array arrives here as `embedding: None`.
    pub embedding_ndims: i32,
}

impl Default for ParticipantRow {
    fn default() -> Self {
        Self {
            user_id: Uuid::nil(),
            active: false,
            company: None,
            role: None,
            interests: None,
            looking_for: None,
            offering: None,
            embedding: None,
            embedding_ndims: 1,
        }
    }
}

/// The embedding of a participant after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Embedding {
    /// The application supplied none.
    Missing,
    /// Unit length (so a dot product is the cosine similarity).
    Valid(Arc<[f32]>),
    /// Supplied but unusable; the text says why.
    Invalid(String),
}

/// A participant normalised for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    pub user_id: Uuid,
    pub active: bool,
    /// Lower-cased company with all white space removed; `None` when empty.
    pub company_key: Option<String>,
    /// Sorted, de-duplicated tag ids.
    pub interests: Vec<u32>,
    pub looking_for: Vec<u32>,
    pub offering: Vec<u32>,
    pub embedding: Embedding,
    /// Malformed input other than the embedding (e.g. too many tags).
    pub problem: Option<String>,
}

impl Participant {
    /// Builds the scoring view of a row. `dimensions` is the event's
    /// `embedding_dimensions`, when set.
    pub fn from_row(row: &ParticipantRow, dimensions: Option<usize>, tags: &mut TagInterner) -> Self {
        let mut problem = None;
        let mut tag_list = |name: &str, raw: &Option<Vec<Option<String>>>| -> Vec<u32> {
            let raw = raw.as_deref().unwrap_or(&[]);
            if raw.len() > MAX_TAGS {
                problem.get_or_insert_with(|| {
                    format!("{name} has {} entries; at most {MAX_TAGS} are accepted", raw.len())
                });
                return Vec::new();
            }
            let mut ids: Vec<u32> = raw.iter().flatten().filter_map(|t| tags.intern(t)).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let interests = tag_list("interests", &row.interests);
        let looking_for = tag_list("looking_for", &row.looking_for);
        let offering = tag_list("offering", &row.offering);
        Self {
            user_id: row.user_id,
            active: row.active,
            company_key: company_key(row.company.as_deref()),
            interests,
            looking_for,
            offering,
            embedding: if row.embedding_ndims > 1 {
                Embedding::Invalid(format!(
                    "embedding is a {}-dimensional array; a flat list of numbers is expected",
                    row.embedding_ndims
                ))
            } else {
                validate_embedding(row.embedding.as_deref(), dimensions)
            },
            problem,
        }
    }
}

/// Lower-cases and removes all white space; an empty result is `None`, which
/// never equals anything.
pub fn company_key(company: Option<&str>) -> Option<String> {
    let key: String = company?
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    (!key.is_empty()).then_some(key)
}

/// Normalises a tag: lower case, every run of characters that are not
/// letters or digits becomes one space, trimmed, cut to [`MAX_TAG_CHARS`].
/// Returns `None` for a tag with no letter or digit.
pub fn normalize_tag(tag: &str) -> Option<String> {
    let mut out = String::with_capacity(tag.len().min(MAX_TAG_CHARS));
    let mut pending_space = false;
    let mut chars = 0usize;
    for c in tag.chars() {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
                chars += 1;
            }
            pending_space = false;
            for l in c.to_lowercase() {
                out.push(l);
                chars += 1;
            }
            if chars >= MAX_TAG_CHARS {
                break;
            }
        } else {
            pending_space = true;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Validates a raw embedding and scales it to unit length.
pub fn validate_embedding(raw: Option<&[Option<f32>]>, dimensions: Option<usize>) -> Embedding {
    let Some(raw) = raw else {
        return Embedding::Missing;
    };
    if raw.is_empty() {
        // An empty array is how some applications write "none".
        return Embedding::Missing;
    }
    if raw.len() > MAX_DIMENSIONS {
        return Embedding::Invalid(format!(
            "embedding has {} dimensions; at most {MAX_DIMENSIONS} are accepted",
            raw.len()
        ));
    }
    if let Some(d) = dimensions {
        if raw.len() != d {
            return Embedding::Invalid(format!(
                "embedding has {} dimensions but the event expects {d}",
                raw.len()
            ));
        }
    }
    let mut values = Vec::with_capacity(raw.len());
    let mut norm2 = 0f64;
    for (i, v) in raw.iter().enumerate() {
        match v {
            None => return Embedding::Invalid(format!("embedding has a NULL at index {i}")),
            Some(x) if !x.is_finite() => {
                return Embedding::Invalid(format!("embedding has a non-finite value ({x}) at index {i}"))
            }
            Some(x) => {
                norm2 += f64::from(*x) * f64::from(*x);
                values.push(f64::from(*x));
            }
        }
    }
    if norm2 == 0.0 || !norm2.is_finite() {
        return Embedding::Invalid("embedding is all zeros (it has no direction)".into());
    }
    let norm = norm2.sqrt();
    Embedding::Valid(values.iter().map(|x| (x / norm) as f32).collect())
}

/// Interns normalised tags as small integers, so overlaps are merges of
/// sorted integer lists. Ids are stable for the life of one event snapshot.
#[derive(Debug, Default, Clone)]
pub struct TagInterner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl TagInterner {
    /// Returns the id of a tag, or `None` when it normalises to nothing.
    pub fn intern(&mut self, tag: &str) -> Option<u32> {
        let key = normalize_tag(tag)?;
        if let Some(id) = self.ids.get(&key) {
            return Some(*id);
        }
        let id = u32::try_from(self.names.len()).ok()?;
        self.names.push(key.clone());
        self.ids.insert(key, id);
        Some(id)
    }

    /// The normalised text of a tag id.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map(String::as_str).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_keys_ignore_case_and_space_and_empty_never_matches() {
        assert_eq!(company_key(Some(" Acme  Corp ")), company_key(Some("acmecorp")));
        assert_eq!(company_key(Some("ACME")), Some("acme".to_string()));
        assert_eq!(company_key(Some("   ")), None);
        assert_eq!(company_key(Some("")), None);
        assert_eq!(company_key(None), None);
    }

    #[test]
    fn tags_normalise_case_punctuation_and_space() {
        assert_eq!(normalize_tag("  Climate-Tech!! "), Some("climate tech".into()));
        assert_eq!(normalize_tag("RUST"), Some("rust".into()));
        assert_eq!(normalize_tag("---"), None);
        assert_eq!(normalize_tag(""), None);
        let long = "x".repeat(10_000);
        assert_eq!(normalize_tag(&long).map(|t| t.chars().count()), Some(MAX_TAG_CHARS));
    }

    #[test]
    fn embeddings_are_validated_and_normalised() {
        let v = |xs: &[f32]| xs.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        match validate_embedding(Some(&v(&[3.0, 4.0])), Some(2)) {
            Embedding::Valid(e) => {
                assert!((e[0] - 0.6).abs() < 1e-6 && (e[1] - 0.8).abs() < 1e-6)
            }
            other => panic!("expected valid, got {other:?}"),
        }
        assert_eq!(validate_embedding(None, Some(2)), Embedding::Missing);
        assert_eq!(validate_embedding(Some(&[]), None), Embedding::Missing);
        let bad = [
            validate_embedding(Some(&v(&[1.0, 2.0, 3.0])), Some(2)),
            validate_embedding(Some(&v(&[1.0, f32::NAN])), None),
            validate_embedding(Some(&v(&[f32::INFINITY, 1.0])), None),
            validate_embedding(Some(&v(&[0.0, 0.0])), None),
            validate_embedding(Some(&[Some(1.0), None]), None),
        ];
        for b in bad {
            assert!(matches!(b, Embedding::Invalid(_)), "{b:?}");
        }
    }

    #[test]
    fn null_tags_are_skipped_and_oversized_lists_are_reported() {
        let mut tags = TagInterner::default();
        let row = ParticipantRow {
            user_id: Uuid::from_u128(1),
            active: true,
            interests: Some(vec![Some("Rust".into()), None, Some("rust ".into()), Some("".into())]),
            looking_for: Some((0..MAX_TAGS + 1).map(|i| Some(format!("t{i}"))).collect()),
            ..Default::default()
        };
        let p = Participant::from_row(&row, None, &mut tags);
        assert_eq!(p.interests.len(), 1);
        assert!(p.looking_for.is_empty());
        assert!(p.problem.as_deref().unwrap_or("").contains("looking_for has 501"));
    }
}
