//! The profile text sent to the provider (a versioned template), its
//! normalisation, the cache key, and how texts are split into requests.
//!
//! Everything here is pure: no I/O, no clock.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::ops::Range;

/// The version of [`ProfileText::render`]. It is part of every cache key, so
/// changing the layout (labels, order, normalisation, the length cap) must
/// change this string: old vectors are then simply never read again.
pub const TEMPLATE_VERSION: &str = "profile-v1";

/// Rendered texts are cut to this many characters (the bio, last in the
/// layout, goes first). At the usual three to four characters per token this
/// stays far below the 8,192-token input limit of OpenAI's embedding models,
/// so one huge profile cannot make the provider reject a whole request.
pub const MAX_TEXT_CHARS: usize = 6_000;

/// The fields of a profile that describe a person, as plain strings. The
/// worker builds one from a participant row; nothing here depends on the
/// worker's types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileText {
    pub role: Option<String>,
    pub company: Option<String>,
    pub interests: Vec<String>,
    pub looking_for: Vec<String>,
    pub offering: Vec<String>,
    pub bio: Option<String>,
}

impl ProfileText {
    /// The text sent to the provider, in the fixed labelled layout of
    /// [`TEMPLATE_VERSION`]:
    ///
    /// ```text
    /// role: founder
    /// company: acme corp
    /// interests: climate tech, rust
    /// looking for: seed funding
    /// offering: mentoring
    /// bio: building batteries that last.
    /// ```
    ///
    /// Normalisation, so that edits that change nothing meaningful keep the
    /// same cache key: every value is lower-cased, every run of white space or
    /// control characters becomes one space, and values are trimmed. Tags
    /// are sets (the scorers treat them so): empty ones are dropped,
    /// duplicates removed and the rest sorted. An empty field keeps its label
    /// (`bio:`), so the layout never shifts. The result is cut to
    /// [`MAX_TEXT_CHARS`] characters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(label);
            out.push(':');
            if !value.is_empty() {
                out.push(' ');
                out.push_str(&value);
            }
        };
        line("role", normalize(self.role.as_deref().unwrap_or("")));
        line("company", normalize(self.company.as_deref().unwrap_or("")));
        line("interests", tag_list(&self.interests));
        line("looking for", tag_list(&self.looking_for));
        line("offering", tag_list(&self.offering));
        line("bio", normalize(self.bio.as_deref().unwrap_or("")));
        truncate_chars(out, MAX_TEXT_CHARS)
    }
}

/// Lower case; every run of white space or control characters becomes one
/// space; trimmed.
pub fn normalize(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending_space = false;
    for c in value.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.extend(c.to_lowercase());
    }
    out
}

fn tag_list(tags: &[String]) -> String {
    let mut tags: Vec<String> = tags.iter().map(|t| normalize(t)).filter(|t| !t.is_empty()).collect();
    tags.sort_unstable();
    tags.dedup();
    tags.join(", ")
}

fn truncate_chars(mut s: String, max: usize) -> String {
    if let Some((cut, _)) = s.char_indices().nth(max) {
        s.truncate(cut);
        s.truncate(s.trim_end().len());
    }
    s
}

/// The cache key of a rendered text: SHA-256, in lower-case hex, of the
/// model, the dimensions (0 = provider default), [`TEMPLATE_VERSION`] and the
/// text. Each part is length-prefixed, so no two different tuples can
/// produce the same bytes.
pub fn cache_key(model: &str, dimensions: i32, text: &str) -> String {
    let mut h = Sha256::new();
    let dimensions = dimensions.to_string();
    for part in [model, dimensions.as_str(), TEMPLATE_VERSION, text] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let mut hex = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The token estimate used for the per-request budget: one token per four
/// characters, rounded up, at least one.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4).max(1)
}

/// Splits texts (given by their token estimates, in order) into consecutive
/// requests of at most `max_inputs` texts and at most `max_tokens` estimated
/// tokens. A single text above the token budget goes alone in its request
/// (it cannot be split; [`MAX_TEXT_CHARS`] keeps that from happening with
/// any sensible budget).
pub fn plan_requests(token_estimates: &[usize], max_inputs: usize, max_tokens: usize) -> Vec<Range<usize>> {
    let max_inputs = max_inputs.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut tokens = 0usize;
    for (i, &t) in token_estimates.iter().enumerate() {
        let full = i - start >= max_inputs || (i > start && tokens.saturating_add(t) > max_tokens);
        if full {
            out.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens = tokens.saturating_add(t);
    }
    if start < token_estimates.len() {
        out.push(start..token_estimates.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProfileText {
        ProfileText {
            role: Some("Founder".into()),
            company: Some("Acme Corp".into()),
            interests: vec!["Rust".into(), "climate tech".into()],
            looking_for: vec!["seed funding".into()],
            offering: vec![],
            bio: Some("Building batteries\nthat last.".into()),
        }
    }

    #[test]
    fn template_has_a_fixed_labelled_layout() {
        assert_eq!(
            sample().render(),
            "role: founder\ncompany: acme corp\ninterests: climate tech, rust\nlooking for: seed funding\n\
             offering:\nbio: building batteries that last."
        );
        assert_eq!(
            ProfileText::default().render(),
            "role:\ncompany:\ninterests:\nlooking for:\noffering:\nbio:"
        );
    }

    #[test]
    fn normalisation_ignores_case_white_space_and_tag_order() {
        assert_eq!(normalize("  Hello \t\n  WORLD\u{0}\r\n! "), "hello world !");
        assert_eq!(normalize("ÉCOLE  Straße"), "école straße");
        assert_eq!(normalize(" \n\t "), "");
        let mut edited = sample();
        edited.role = Some("  FOUNDER ".into());
        edited.company = Some("acme   corp".into());
        edited.interests = vec!["rust".into(), " Climate  Tech".into(), "RUST".into(), "  ".into()];
        edited.bio = Some("building   batteries that last.  ".into());
        assert_eq!(edited.render(), sample().render());
        // A real change is a different text.
        edited.offering = vec!["mentoring".into()];
        assert_ne!(edited.render(), sample().render());
    }

    #[test]
    fn huge_texts_are_cut_on_a_character_boundary() {
        let p = ProfileText {
            bio: Some("é".repeat(3 * MAX_TEXT_CHARS)),
            ..ProfileText::default()
        };
        let text = p.render();
        assert_eq!(text.chars().count(), MAX_TEXT_CHARS);
        assert!(text.starts_with("role:\ncompany:"));
    }

    #[test]
    fn keys_are_stable_and_cover_every_part() {
        let text = sample().render();
        let k = cache_key("text-embedding-3-small", 0, &text);
        // Pinned: a change here silently invalidates every cached vector
        // (bump TEMPLATE_VERSION instead).
        assert_eq!(k, cache_key("text-embedding-3-small", 0, &text));
        assert_eq!(k.len(), 64);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // Computed independently (Python's hashlib over the length-prefixed
        // parts "m", "0", "profile-v1", "t").
        assert_eq!(
            cache_key("m", 0, "t"),
            "c582df2da8fb49ceda05e359bc7a47314938ce756f15143e014ea9cd4d8dc45d"
        );
        assert_ne!(k, cache_key("text-embedding-3-large", 0, &text));
        assert_ne!(k, cache_key("text-embedding-3-small", 256, &text));
        assert_ne!(k, cache_key("text-embedding-3-small", 0, &format!("{text} ")));
        // Length prefixes: moving bytes between parts changes the key.
        assert_ne!(cache_key("ab", 0, "c"), cache_key("a", 0, "bc"));
    }

    #[test]
    fn token_estimate_is_chars_over_four() {
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(&"é".repeat(8)), 2);
    }

    #[test]
    fn requests_respect_input_and_token_limits() {
        assert_eq!(plan_requests(&[], 2048, 100), Vec::<Range<usize>>::new());
        assert_eq!(plan_requests(&[1; 5], 2, 100), vec![0..2, 2..4, 4..5]);
        assert_eq!(plan_requests(&[40, 40, 40, 10], 10, 100), vec![0..2, 2..4]);
        assert_eq!(plan_requests(&[50, 50, 1], 10, 100), vec![0..2, 2..3]);
        // A text above the budget travels alone.
        assert_eq!(plan_requests(&[10, 500, 10], 10, 100), vec![0..1, 1..2, 2..3]);
        let big = vec![1usize; 5000];
        let plan = plan_requests(&big, 2048, 1_000_000);
        assert_eq!(plan, vec![0..2048, 2048..4096, 4096..5000]);
    }
}
