//! A participant as the scorers see it, and the validation of raw rows.
//!
//! ## Tags
//!
//! Interests, `looking_for` and `offering` are free text. Two tags are the
//! same tag when their *keys* are equal ([`normalize_tag`]):
//!
//! - letters are lower-cased; apostrophes are dropped ("founder's" →
//!   "founders"); every other run of characters that are not letters or
//!   digits is one space;
//! - each word loses a simple English plural ([`stem_word`]): "Learnings" →
//!   "learning", "batteries" → "battery", "classes" → "class", "LLMs" →
//!   "llm", "VCs" → "vc". Words ending in "ss", "us" or "is" ("business",
//!   "status", "analysis"), a few singular words ending in "s" ("news",
//!   "series", "gas", "AWS"), words of one or two letters and words with a
//!   digit ("k8s") are left alone. Acronym plurals written as such ("APIs",
//!   "GPUs") lose their "s" too;
//! - the key is cut to [`MAX_TAG_CHARS`] characters.
//!
//! So "Machine-Learning", "machine learning", "machine learning!" and
//! "Machine Learnings" are one tag. The rule is a pure function of the text:
//! whether two tags are equal never depends on who else is in the event.
//!
//! ## Keywords of role and bio
//!
//! The role, then the first [`MAX_BIO_CHARS`] characters of the bio, are
//! split into words keyed like tag words. Stop words ("the", "passionate",
//! "working", …), numbers and words of fewer than three letters are dropped,
//! except upper-case acronyms ("AI", "VC", "UX"). The first [`MAX_KEYWORDS`]
//! distinct keys are the attendee's keywords. A huge bio therefore costs no
//! more than a short one.
//!
//! ## Ids and spellings
//!
//! Tags and keywords are interned by one [`TagInterner`] (equal keys, equal
//! ids), so every overlap the scorers compute is a merge of two sorted `u32`
//! lists. Each participant also remembers how *they* spelled each of their
//! ids ([`Spelling`]), so that reasons quote an attendee's own words
//! ("Climate Tech", not "climate tech").

use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The longest embedding accepted (larger vectors are malformed input).
pub const MAX_DIMENSIONS: usize = 16_000;
/// The most tags one list may hold; more is malformed input.
pub const MAX_TAGS: usize = 500;
/// Tags longer than this (in characters) are cut before matching.
pub const MAX_TAG_CHARS: usize = 200;
/// Only the first characters of a tag are read (four times
/// [`MAX_TAG_CHARS`], enough for any punctuation between the words kept).
const MAX_TAG_INPUT_CHARS: usize = 4 * MAX_TAG_CHARS;
/// Only the first characters of a role are read for keywords.
pub const MAX_ROLE_CHARS: usize = 200;
/// Only the first characters of a bio are read for keywords. The snapshot
/// read sends no more than this from the database (`left(bio, 2000)`).
pub const MAX_BIO_CHARS: usize = 2000;
/// The most keywords one attendee's role and bio give.
pub const MAX_KEYWORDS: usize = 24;

/// A participant row as the application wrote it. Every field is as lenient
/// as the column: NULL array elements and NULL vector components survive
/// decoding and are judged here, not by the driver.
#[derive(Debug, Clone)]
pub struct ParticipantRow {
    pub user_id: Uuid,
    pub active: bool,
    pub company: Option<String>,
    pub role: Option<String>,
    /// Only the first [`MAX_BIO_CHARS`] characters matter.
    pub bio: Option<String>,
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
            bio: None,
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

/// How one participant wrote one of their tag or keyword ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spelling {
    /// The tag or keyword id.
    pub id: u32,
    /// The spelling, as a [`TagInterner::spelling`] id.
    pub text: u32,
    /// Where it first appears in the participant's own lists (interests,
    /// then looking_for, then offering, then role and bio), so reasons list
    /// things in the order the attendee did.
    pub order: u32,
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
    /// Sorted, de-duplicated keyword ids of role and bio (at most
    /// [`MAX_KEYWORDS`]).
    pub keywords: Vec<u32>,
    /// This participant's own spelling of each id above, sorted by id.
    pub spellings: Box<[Spelling]>,
    pub embedding: Embedding,
    /// Malformed input other than the embedding (e.g. too many tags).
    pub problem: Option<String>,
}

/// What [`Participant::from_row`] derives from a row without the event's
/// [`TagInterner`]: normalised tags and keywords with their spellings, the
/// company key and the validated embedding. Pure, so the rows of a large
/// event are parsed on all cores ([`ParsedRow::new`]) and only the interning
/// ([`Participant::from_parsed`]) runs one row after another, in row order,
/// which gives every id exactly as parsing and interning row by row would.
#[derive(Debug, Clone)]
pub struct ParsedRow {
    user_id: Uuid,
    active: bool,
    company_key: Option<String>,
    /// interests, looking_for, offering: each tag's (key, display) in order,
    /// or why the list was refused.
    tags: [Result<Vec<(String, String)>, String>; 3],
    /// Every keyword word of role and bio as (key, display), in order, up
    /// to the word that brings [`MAX_KEYWORDS`] distinct keys.
    keywords: Vec<(String, String)>,
    embedding: Embedding,
}

impl ParsedRow {
    /// Parses a row. `dimensions` is the event's `embedding_dimensions`,
    /// when set. Without `words` (an algorithm that scores embeddings alone,
    /// see [`super::score::Algorithm::reads_words`]) no tag or keyword is
    /// normalised and the participant gets none, which is most of the work
    /// of loading a large event; a tag list too long to accept is refused
    /// all the same, so a row is malformed or not whatever the algorithm.
    pub fn new(row: &ParticipantRow, dimensions: Option<usize>, words: bool) -> Self {
        let tag_list = |name: &str, raw: &Option<Vec<Option<String>>>| {
            let raw = raw.as_deref().unwrap_or(&[]);
            if raw.len() > MAX_TAGS {
                return Err(format!(
                    "{name} has {} entries; at most {MAX_TAGS} are accepted",
                    raw.len()
                ));
            }
            if !words {
                return Ok(Vec::new());
            }
            Ok(raw
                .iter()
                .flatten()
                .filter_map(|tag| Some((normalize_tag(tag)?, display_tag(tag))))
                .collect())
        };
        Self {
            user_id: row.user_id,
            active: row.active,
            company_key: company_key(row.company.as_deref()),
            tags: [
                tag_list("interests", &row.interests),
                tag_list("looking_for", &row.looking_for),
                tag_list("offering", &row.offering),
            ],
            keywords: if words {
                keyword_words(row.role.as_deref(), row.bio.as_deref())
            } else {
                Vec::new()
            },
            embedding: if row.embedding_ndims > 1 {
                Embedding::Invalid(format!(
                    "embedding is a {}-dimensional array; a flat list of numbers is expected",
                    row.embedding_ndims
                ))
            } else {
                validate_embedding(row.embedding.as_deref(), dimensions)
            },
        }
    }
}

impl Participant {
    /// Builds the scoring view of a row. `dimensions` is the event's
    /// `embedding_dimensions`, when set.
    pub fn from_row(row: &ParticipantRow, dimensions: Option<usize>, tags: &mut TagInterner) -> Self {
        Self::from_parsed(ParsedRow::new(row, dimensions, true), tags)
    }

    /// Interns a parsed row's tags and keywords (see [`ParsedRow`]).
    pub fn from_parsed(row: ParsedRow, tags: &mut TagInterner) -> Self {
        let ParsedRow {
            user_id,
            active,
            company_key,
            tags: lists,
            keywords: words,
            embedding,
        } = row;
        let mut problem = None;
        let mut spellings: Vec<Spelling> = Vec::new();
        let push = |spellings: &mut Vec<Spelling>, id: u32, text: u32| {
            let order = u32::try_from(spellings.len()).unwrap_or(u32::MAX);
            spellings.push(Spelling { id, text, order });
        };
        let [interests, looking_for, offering] = lists.map(|list| match list {
            Err(why) => {
                problem.get_or_insert(why);
                Vec::new()
            }
            Ok(list) => {
                let mut ids = Vec::with_capacity(list.len());
                for (key, display) in &list {
                    if let Some((id, text)) = tags.intern_normalized(key, display) {
                        ids.push(id);
                        push(&mut spellings, id, text);
                    }
                }
                ids.sort_unstable();
                ids.dedup();
                ids
            }
        });
        let mut keywords: Vec<u32> = Vec::new();
        for (key, display) in &words {
            if let Some((id, text)) = tags.intern_normalized(key, display) {
                if !keywords.contains(&id) {
                    keywords.push(id);
                    push(&mut spellings, id, text);
                }
            }
        }
        keywords.sort_unstable();
        // The first spelling of each id wins (the lowest order).
        spellings.sort_by_key(|s| (s.id, s.order));
        spellings.dedup_by_key(|s| s.id);
        Self {
            user_id,
            active,
            company_key,
            interests,
            looking_for,
            offering,
            keywords,
            spellings: spellings.into_boxed_slice(),
            embedding,
            problem,
        }
    }

    /// How this participant wrote a tag or keyword id, when it is theirs.
    pub fn spelling(&self, id: u32) -> Option<Spelling> {
        self.spellings
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| self.spellings[i])
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

/// Singular nouns that end in "s" and must not lose it.
const SINGULAR_S: &[&str] = &[
    "alias", "atlas", "aws", "bias", "canvas", "chaos", "cms", "dns", "gas", "gps", "ios", "lens", "mars", "news",
    "saas", "series", "sms", "species",
];

/// Words that say nothing about what an attendee does: dropped from
/// keywords. Sorted (binary search); compared with both the lower-cased word
/// and its key ("thanks" and "thank").
#[rustfmt::skip]
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "almost", "along", "already", "also", "although",
    "always", "am", "among", "an", "and", "another", "any", "anyone", "anything", "are", "around", "as", "ask", "at",
    "away", "back", "background", "based", "be", "became", "because", "become", "been", "before", "being", "below",
    "best", "better", "between", "both", "bring", "build", "building", "but", "by", "came", "can", "cannot", "career",
    "chat", "co", "com", "come", "company", "connect", "could", "currently", "day", "days", "did", "do", "does",
    "doing", "done", "down", "during", "each", "easy", "eg", "either", "else", "enjoy", "enjoying", "etc", "even",
    "ever", "every", "everyone", "everything", "excited", "experience", "experienced", "far", "feel", "few", "field",
    "find", "first", "focus", "focused", "for", "found", "from", "fun", "further", "get", "getting", "give", "go",
    "going", "good", "got", "great", "had", "happy", "has", "have", "having", "he", "hello", "help", "her", "here",
    "hers", "herself", "hey", "hi", "him", "himself", "his", "how", "however", "http", "https", "ie", "if", "in",
    "inc", "industry", "interested", "into", "is", "it", "its", "itself", "join", "joined", "journey", "just", "keen",
    "know", "last", "least", "less", "let", "like", "likely", "little", "llc", "looking", "lot", "love", "ltd",
    "made", "main", "make", "making", "many", "may", "me", "meet", "might", "mine", "more", "most", "mostly", "much",
    "must", "my", "myself", "near", "need", "never", "new", "next", "nice", "no", "nor", "not", "now", "of", "off",
    "often", "on", "once", "one", "only", "or", "org", "other", "others", "our", "ours", "ourselves", "out", "over",
    "own", "part", "passion", "passionate", "people", "per", "please", "pretty", "previously", "professional",
    "quite", "rather", "re", "really", "recently", "say", "see", "seen", "several", "she", "should", "since", "so",
    "some", "someone", "something", "sometimes", "still", "such", "sure", "take", "talk", "team", "than", "thank",
    "thanks", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "thing",
    "think", "thinking", "this", "those", "though", "through", "thus", "time", "to", "today", "together", "too",
    "toward", "towards", "try", "two", "under", "until", "up", "upon", "us", "use", "used", "using", "very", "via",
    "want", "was", "way", "we", "well", "went", "were", "what", "when", "where", "whether", "which", "while", "who",
    "whom", "whose", "why", "will", "with", "within", "without", "work", "worked", "working", "world", "would", "www",
    "year", "yes", "yet", "you", "your", "yours", "yourself", "yourselves",
];

/// Reduces a lower-case word to its singular key, in place: the simple
/// plural rule of [`normalize_tag`].
///
/// - words of fewer than three characters, or with anything but `a`–`z`,
///   and the words of [`SINGULAR_S`] ("news", "gas", "AWS"), are left alone;
/// - "…ss", "…us", "…is" are left alone ("business", "status", "analysis");
/// - "…ies" becomes "…y" ("batteries" → "battery");
/// - otherwise a final "s" goes ("learnings" → "learning");
/// - then a final "e" after "s", "x", "z", "ch" or "sh" goes, in singular
///   and plural alike, so that "classes"/"class", "matches"/"match" and
///   "niches"/"niche" meet ("class", "match", "nich").
///
/// The result is a key, not always a word; reasons show the attendee's own
/// spelling.
pub fn stem_word(word: &mut String) {
    let b = word.as_bytes();
    let n = b.len();
    if n < 3 || !b.iter().all(u8::is_ascii_lowercase) || SINGULAR_S.binary_search(&word.as_str()).is_ok() {
        return;
    }
    if word.ends_with("ss") || word.ends_with("us") || word.ends_with("is") {
        return;
    }
    if n >= 5 && word.ends_with("ies") {
        word.truncate(n - 3);
        word.push('y');
        return;
    }
    if word.ends_with('s') {
        word.truncate(n - 1);
    }
    let b = word.as_bytes();
    let n = b.len();
    if n >= 4 && b[n - 1] == b'e' {
        let sibilant =
            matches!(b[n - 2], b's' | b'x' | b'z') || (matches!(b[n - 2], b'h') && matches!(b[n - 3], b'c' | b's'));
        if sibilant {
            word.truncate(n - 1);
        }
    }
}

/// Characters dropped inside a word rather than splitting it ("founder's").
fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{02BC}' | '`')
}

/// One word of a text, as [`split_words`] hands it out.
#[derive(Debug, Default)]
struct Word {
    /// As written: letters and digits only.
    original: String,
    /// Lower-cased.
    lower: String,
    /// Lower-cased and stemmed: what is compared.
    key: String,
    chars: usize,
    /// How many of the first characters are upper-case letters.
    leading_upper: usize,
}

impl Word {
    fn push(&mut self, c: char) {
        if self.leading_upper == self.chars && c.is_uppercase() {
            self.leading_upper += 1;
        }
        self.original.push(c);
        self.lower.extend(c.to_lowercase());
        self.chars += 1;
    }

    /// Computes the key: "LLMs", "VCs" (upper-case letters then a lower-case
    /// "s") lose the "s"; other words go through [`stem_word`].
    fn finish(&mut self) {
        self.key.clear();
        self.key.push_str(&self.lower);
        if self.chars >= 3 && self.leading_upper == self.chars - 1 && self.original.ends_with('s') {
            self.key.pop();
        } else {
            stem_word(&mut self.key);
        }
    }

    fn clear(&mut self) {
        self.original.clear();
        self.lower.clear();
        self.key.clear();
        self.chars = 0;
        self.leading_upper = 0;
    }

    /// All upper case, at least two letters ("AI", "VC").
    fn is_acronym(&self) -> bool {
        self.chars >= 2 && self.leading_upper == self.chars
    }

    /// How to quote it: as written when it has a capital after its first
    /// letter ("AI", "LLMs", "PyTorch"), else lower case ("Batteries" at the
    /// start of a sentence is "batteries").
    fn display(&self) -> &str {
        if self.original.chars().skip(1).any(char::is_uppercase) {
            &self.original
        } else {
            &self.lower
        }
    }

    /// Worth comparing: not a number, a stop word, a stray letter or two,
    /// or an implausibly long run (a URL or a hash).
    fn is_keyword(&self) -> bool {
        if self.chars > 30 || (self.chars < 3 && !self.is_acronym()) || self.lower.chars().all(char::is_numeric) {
            return false;
        }
        STOP_WORDS.binary_search(&self.lower.as_str()).is_err() && STOP_WORDS.binary_search(&self.key.as_str()).is_err()
    }
}

/// Calls `f` with every word of `text` (a maximal run of letters and
/// digits; apostrophes inside are skipped) until `f` returns `false`.
fn split_words(text: impl Iterator<Item = char>, mut f: impl FnMut(&Word) -> bool) {
    let mut w = Word::default();
    for c in text {
        if c.is_alphanumeric() {
            w.push(c);
        } else if !is_apostrophe(c) && w.chars > 0 {
            w.finish();
            if !f(&w) {
                return;
            }
            w.clear();
        }
    }
    if w.chars > 0 {
        w.finish();
        f(&w);
    }
}

/// The key of a tag (see the module docs): lower case, apostrophes dropped,
/// every other run of characters that are not letters or digits one space,
/// each word singular ([`stem_word`]), cut to [`MAX_TAG_CHARS`] characters.
/// Returns `None` for a tag with no letter or digit.
pub fn normalize_tag(tag: &str) -> Option<String> {
    let mut out = String::with_capacity(tag.len().min(MAX_TAG_CHARS) + 8);
    split_words(tag.chars().take(MAX_TAG_INPUT_CHARS), |w| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&w.key);
        true
    });
    if let Some((cut, _)) = out.char_indices().nth(MAX_TAG_CHARS) {
        out.truncate(cut);
        out.truncate(out.trim_end().len());
    }
    (!out.is_empty()).then_some(out)
}

/// How a tag is quoted back to its author: trimmed, every run of white
/// space or control characters one space, cut to [`MAX_TAG_CHARS`].
pub fn display_tag(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len().min(MAX_TAG_CHARS));
    let (mut space, mut chars) = (false, 0usize);
    for c in tag.chars().take(MAX_TAG_INPUT_CHARS) {
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
            chars += 1;
        }
        space = false;
        out.push(c);
        chars += 1;
        if chars >= MAX_TAG_CHARS {
            break;
        }
    }
    out
}

/// The keyword words of a role and bio (see the module docs) as (key,
/// display) in order, up to the word that brings [`MAX_KEYWORDS`] distinct
/// keys ([`Participant::from_parsed`] interns them: one id per key).
fn keyword_words(role: Option<&str>, bio: Option<&str>) -> Vec<(String, String)> {
    let mut words: Vec<(String, String)> = Vec::new();
    let mut distinct = 0;
    let role = role.unwrap_or_default().chars().take(MAX_ROLE_CHARS);
    let bio = bio.unwrap_or_default().chars().take(MAX_BIO_CHARS);
    // The space keeps the role's last word and the bio's first apart.
    split_words(role.chain(std::iter::once(' ')).chain(bio), |w| {
        if !w.is_keyword() {
            return true;
        }
        if !words.iter().any(|(key, _)| *key == w.key) {
            distinct += 1;
        }
        words.push((w.key.clone(), w.display().to_string()));
        distinct < MAX_KEYWORDS
    });
    words
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
    let mut norm2 = 0f64;
    for (i, v) in raw.iter().enumerate() {
        match v {
            None => return Embedding::Invalid(format!("embedding has a NULL at index {i}")),
            Some(x) if !x.is_finite() => {
                return Embedding::Invalid(format!("embedding has a non-finite value ({x}) at index {i}"))
            }
            Some(x) => norm2 += f64::from(*x) * f64::from(*x),
        }
    }
    if norm2 == 0.0 || !norm2.is_finite() {
        return Embedding::Invalid("embedding is all zeros (it has no direction)".into());
    }
    let norm = norm2.sqrt();
    // Every element is present (checked above); `f64::from` is exact, so
    // this is the same division of the same values as ever.
    Embedding::Valid(
        raw.iter()
            .map(|x| (f64::from(x.unwrap_or(0.0)) / norm) as f32)
            .collect(),
    )
}

/// Interns tag and keyword keys as small integers, so overlaps are merges of
/// sorted integer lists, and spellings, so reasons can quote attendees. Ids
/// are stable for the life of one event snapshot; scores never depend on
/// their values, only on which are equal.
#[derive(Debug, Default, Clone)]
pub struct TagInterner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    /// The first spelling seen of each id.
    first_spelling: Vec<u32>,
    spelling_ids: HashMap<String, u32>,
    spellings: Vec<String>,
}

impl TagInterner {
    /// Returns the id of a tag, or `None` when it normalises to nothing.
    pub fn intern(&mut self, tag: &str) -> Option<u32> {
        self.intern_spelled(tag).map(|(id, _)| id)
    }

    /// Returns the id of a tag and of its spelling ([`display_tag`]), or
    /// `None` when it normalises to nothing.
    pub fn intern_spelled(&mut self, tag: &str) -> Option<(u32, u32)> {
        let key = normalize_tag(tag)?;
        self.intern_normalized(&key, &display_tag(tag))
    }

    /// The ids of an already normalised key and of its spelling `display`.
    fn intern_normalized(&mut self, key: &str, display: &str) -> Option<(u32, u32)> {
        let text = self.spelling_id(display)?;
        let id = self.intern_key(key, text)?;
        Some((id, text))
    }

    /// The id of an already normalised key; `spelling` is remembered when
    /// the key is new.
    fn intern_key(&mut self, key: &str, spelling: u32) -> Option<u32> {
        if let Some(id) = self.ids.get(key) {
            return Some(*id);
        }
        let id = u32::try_from(self.names.len()).ok()?;
        self.names.push(key.to_string());
        self.first_spelling.push(spelling);
        self.ids.insert(key.to_string(), id);
        Some(id)
    }

    /// The id of a spelling.
    fn spelling_id(&mut self, text: &str) -> Option<u32> {
        if let Some(id) = self.spelling_ids.get(text) {
            return Some(*id);
        }
        let id = u32::try_from(self.spellings.len()).ok()?;
        self.spellings.push(text.to_string());
        self.spelling_ids.insert(text.to_string(), id);
        Some(id)
    }

    /// The normalised key of a tag or keyword id.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map(String::as_str).unwrap_or("")
    }

    /// The first spelling seen of a tag or keyword id (anyone's).
    pub fn display(&self, id: u32) -> &str {
        self.first_spelling
            .get(id as usize)
            .map(|s| self.spelling(*s))
            .unwrap_or("")
    }

    /// The text of a spelling id ([`Spelling::text`]).
    pub fn spelling(&self, text: u32) -> &str {
        self.spellings.get(text as usize).map(String::as_str).unwrap_or("")
    }

    /// How one participant wrote an id: their own spelling when they have
    /// one, else the first one seen.
    pub fn spelled_by(&self, p: &Participant, id: u32) -> &str {
        match p.spelling(id) {
            Some(s) => self.spelling(s.text),
            None => self.display(id),
        }
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

    /// What `event_of` does at scale: every row parsed first (here in
    /// reverse order, as threads may), then interned in row order, gives
    /// the participants and interner of interning row by row.
    #[test]
    fn rows_parsed_out_of_order_then_interned_in_order_equal_row_by_row() {
        let words = [
            "Rust",
            "rust",
            "RUST",
            "LLMs",
            "LLM",
            "batteries",
            "Battery",
            "AI",
            "the",
            "climate",
            "Climate",
            "PyTorch",
            "pytorch",
            "design",
            "hiring",
            "2030",
            "ok",
        ];
        let mut rng = 7u64;
        let mut next = |n: usize| {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (rng >> 33) as usize % n
        };
        let rows: Vec<ParticipantRow> = (0..200u128)
            .map(|i| {
                let mut pick =
                    |len: usize| -> String { (0..len).map(|_| words[next(words.len())]).collect::<Vec<_>>().join(" ") };
                let bio = pick(40) + &(0..30).map(|k| format!(" w{k}x{}", i % 3)).collect::<String>();
                let tags: Vec<Option<String>> = (0..4).map(|_| Some(pick(2))).collect();
                ParticipantRow {
                    user_id: Uuid::from_u128(i + 1),
                    active: true,
                    role: Some(pick(3)),
                    bio: Some(bio),
                    interests: Some(tags.clone()),
                    offering: Some(tags.into_iter().rev().collect()),
                    ..Default::default()
                }
            })
            .collect();
        let mut one = TagInterner::default();
        let by_row: Vec<Participant> = rows.iter().map(|r| Participant::from_row(r, None, &mut one)).collect();
        let mut parsed: Vec<ParsedRow> = rows.iter().rev().map(|r| ParsedRow::new(r, None, true)).collect();
        parsed.reverse();
        let mut two = TagInterner::default();
        let split: Vec<Participant> = parsed
            .into_iter()
            .map(|r| Participant::from_parsed(r, &mut two))
            .collect();
        assert_eq!(by_row, split);
        assert!(by_row.iter().any(|p| p.keywords.len() == MAX_KEYWORDS));
        assert_eq!(one.names, two.names);
        assert_eq!(one.spellings, two.spellings);
        assert_eq!(one.first_spelling, two.first_spelling);
    }

    #[test]
    fn without_words_a_row_keeps_its_embedding_and_its_problems_but_no_tags() {
        let long: Vec<Option<String>> = (0..=MAX_TAGS).map(|i| Some(format!("tag {i}"))).collect();
        let rows = [
            ParticipantRow {
                user_id: Uuid::from_u128(1),
                active: true,
                company: Some("Acme".into()),
                role: Some("Data engineer".into()),
                bio: Some("Batteries, climate and LLMs.".into()),
                interests: Some(vec![Some("Climate Tech".into())]),
                looking_for: Some(vec![Some("funding".into())]),
                embedding: Some(vec![Some(3.0), Some(4.0)]),
                ..Default::default()
            },
            ParticipantRow {
                user_id: Uuid::from_u128(2),
                offering: Some(long),
                embedding: Some(vec![Some(1.0), None]),
                ..Default::default()
            },
        ];
        let mut tags = TagInterner::default();
        for row in &rows {
            let full = Participant::from_row(row, None, &mut tags);
            let bare = Participant::from_parsed(ParsedRow::new(row, None, false), &mut tags);
            assert_eq!(bare.embedding, full.embedding);
            assert_eq!(bare.problem, full.problem);
            assert_eq!(bare.company_key, full.company_key);
            assert_eq!((bare.user_id, bare.active), (full.user_id, full.active));
            let words = [&bare.interests, &bare.looking_for, &bare.offering, &bare.keywords];
            assert!(words.iter().all(|w| w.is_empty()) && bare.spellings.is_empty());
        }
        let with_tags = Participant::from_row(&rows[0], None, &mut tags);
        assert!(!with_tags.interests.is_empty() && !with_tags.keywords.is_empty());
        assert!(Participant::from_row(&rows[1], None, &mut tags).problem.is_some());
    }

    #[test]
    fn spelling_variants_share_one_key() {
        let same = |xs: &[&str]| {
            let keys: Vec<Option<String>> = xs.iter().map(|x| normalize_tag(x)).collect();
            assert!(keys.iter().all(|k| k.is_some() && *k == keys[0]), "{xs:?} → {keys:?}");
        };
        same(&[
            "Machine-Learning",
            "machine learning",
            "machine learning!",
            "Machine Learnings",
            "MACHINE  LEARNING",
        ]);
        same(&["Battery", "batteries", "Batteries!"]);
        same(&["LLMs", "llm", "LLM"]);
        same(&["VCs", "VC", "vc", "vcs"]);
        same(&["APIs", "API"]);
        same(&["class", "classes"]);
        same(&["business", "businesses", "Business"]);
        same(&["match", "matches"]);
        same(&["niche", "niches"]);
        same(&["box", "boxes"]);
        same(&["founder's network", "Founders Network", "founder network"]);
        same(&["Startup", "startups"]);
        same(&["start up", "start-ups", "Start Up!"]);
        same(&["women’s health", "womens health", "Women's Health"]);
    }

    #[test]
    fn plural_rule_does_not_over_stem() {
        let key = |s: &str| normalize_tag(s).unwrap_or_default();
        for keep in [
            "business", "status", "analysis", "news", "series", "gas", "aws", "bus", "k8s", "saas", "bias",
        ] {
            assert_eq!(key(keep), keep, "{keep} must stay as it is");
        }
        assert_ne!(key("business"), key("busines"));
        assert_ne!(key("news"), key("new"));
        assert_ne!(key("AWS"), key("AW"));
        // Words, not characters: only each word's own end is touched.
        assert_eq!(key("Climate Tech"), "climate tech");
        assert_eq!(key("data sciences"), "data science");
        assert_eq!(key("ties"), "tie");
        assert_eq!(key("companies"), "company");
    }

    #[test]
    fn spellings_are_remembered_per_participant() {
        let mut tags = TagInterner::default();
        let row = |id: u128, interests: &[&str], bio: &str| ParticipantRow {
            user_id: Uuid::from_u128(id),
            active: true,
            interests: Some(interests.iter().map(|s| Some(s.to_string())).collect()),
            bio: Some(bio.to_string()),
            ..Default::default()
        };
        let a = Participant::from_row(&row(1, &["Machine Learning", "  Climate   Tech "], ""), None, &mut tags);
        let b = Participant::from_row(&row(2, &["machine-learnings"], "Batteries and LLMs."), None, &mut tags);
        assert_eq!(a.interests.len(), 2);
        let ml = b.interests[0];
        assert!(a.interests.contains(&ml));
        assert_eq!(tags.spelled_by(&a, ml), "Machine Learning");
        assert_eq!(tags.spelled_by(&b, ml), "machine-learnings");
        assert_eq!(tags.display(ml), "Machine Learning");
        let climate = tags.intern("climate tech").unwrap_or(u32::MAX);
        assert_eq!(tags.spelled_by(&a, climate), "Climate Tech");
        let words: Vec<&str> = b.keywords.iter().map(|k| tags.spelled_by(&b, *k)).collect();
        assert_eq!(words.len(), 2);
        assert!(words.contains(&"batteries") && words.contains(&"LLMs"), "{words:?}");
    }

    #[test]
    fn keywords_drop_stop_words_keep_acronyms_and_are_bounded() {
        let mut tags = TagInterner::default();
        let p = |role: &str, bio: &str, tags: &mut TagInterner| {
            let row = ParticipantRow {
                user_id: Uuid::from_u128(1),
                active: true,
                role: Some(role.into()),
                bio: Some(bio.into()),
                ..Default::default()
            };
            Participant::from_row(&row, None, tags)
        };
        let a = p(
            "Founder",
            "I am passionate about AI and the batteries of 2030, really!",
            &mut tags,
        );
        let names: Vec<&str> = a.keywords.iter().map(|k| tags.name(*k)).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec!["ai", "battery", "founder"]);
        // Role and bio words never run together.
        let b = p("Head of Climate", "Policy wonk", &mut tags);
        let names: Vec<&str> = b.keywords.iter().map(|k| tags.name(*k)).collect();
        assert!(names.contains(&"climate") && names.contains(&"policy"), "{names:?}");
        // A bio of a million characters reads no more than the cap.
        let huge: String = (0..200_000).map(|i| format!("w{i}x ")).collect();
        let started = std::time::Instant::now();
        let c = p("", &huge, &mut tags);
        assert_eq!(c.keywords.len(), MAX_KEYWORDS);
        let spaced = format!("{} batteries", " ".repeat(1_000_000));
        let d = p("", &spaced, &mut tags);
        assert!(
            d.keywords.is_empty(),
            "words past the first {MAX_BIO_CHARS} characters are not read"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn word_lists_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(SINGULAR_S.windows(2).all(|w| w[0] < w[1]));
    }
}
