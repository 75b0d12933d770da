"""An independent brute-force oracle for `user_matches`, in NumPy.

It reads an event's settings, participants, exclusions and match rows from
the database, recomputes every active attendee's exact top-K eligible
partners from scratch (blocked matrix products, no code shared with the
worker), and compares.

The rules it implements (README "Eligible partners" and "How a match is
decided"):

* eligible partners: other `active` attendees of the same event, matchable
  under the algorithm (cosine-v1 needs a valid embedding), not excluded
  either way in `match_exclusions`, and, when `exclude_same_company`, not of
  the same company (compared ignoring case and all white space; an empty or
  missing company never equals another);
* rank order: higher score first, ties by `matched_user_id` ascending;
* an attendee's list holds min(K, number of eligible partners) entries,
  ranked 1..;
* a list matches when it has the expected partners in the expected order
  with scores within `TOLERANCE`; at a rank where the partner differs, the
  list still matches if the partner it holds is eligible and scores within
  `TOLERANCE` of the expected one (a near tie that float rounding may order
  either way).

The hybrid-v1 formula lives in `hybrid_v1` (src/matching/score.rs), its
inputs in `normalize_tag` / `stem_word` (tag keys) and `keywords` (role and
bio keywords: stop words, MAX_ROLE_CHARS, MAX_BIO_CHARS, MAX_KEYWORDS), all
re-implemented here from the module docs of src/matching/profile.rs. Set
overlaps are products of 0/1 matrices over interned keys, so a 10,000-person
event verifies in seconds. The bio is read whole and cut here, so a snapshot
that read less than the first 2000 characters would be caught.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from pgclient import Psql, literal

#: Largest accepted difference between a stored score and the oracle's.
TOLERANCE = 1e-4
#: As in src/matching/profile.rs.
MAX_DIMENSIONS = 16_000
MAX_TAGS = 500
MAX_TAG_CHARS = 200


# --------------------------------------------------------------------------
# hybrid-v1: the formula (keep in step with the top of src/matching/score.rs)
# --------------------------------------------------------------------------

#: hybrid-v1's weights of interest overlap I, complementarity C, role and bio
#: keywords K and embedding similarity E (W_* in score.rs).
W_INTERESTS, W_COMPLEMENT, W_KEYWORDS, W_EMBEDDING = 0.35, 0.35, 0.10, 0.20
#: The lowest score of a pair with real overlap, and the highest of a pair
#: without (OVERLAP_FLOOR, STRANGER_CEILING in score.rs).
OVERLAP_FLOOR, STRANGER_CEILING = 0.2, 0.1


@dataclass
class PairFeatures:
    """Everything a hybrid-v1 score can depend on, for a block of pairs
    (a, b): each field is an array of the block's shape.

    Set sizes and overlaps are exact integer counts (as float64). `cosine`
    is the cosine similarity of the two normalised float32 embeddings
    (float32), and `comparable` says whether both attendees have valid
    embeddings of the same length.
    """

    interests_shared: np.ndarray  # |I_a ∩ I_b|
    interests_a: np.ndarray  # |I_a|
    interests_b: np.ndarray  # |I_b|
    a_wants_b_offers: np.ndarray  # |LF_a ∩ OF_b|
    b_wants_a_offers: np.ndarray  # |LF_b ∩ OF_a|
    looking_for_a: np.ndarray  # |LF_a|
    looking_for_b: np.ndarray  # |LF_b|
    keywords_shared: np.ndarray  # |K_a ∩ K_b|
    keywords_a: np.ndarray  # |K_a|
    keywords_b: np.ndarray  # |K_b|
    cosine: np.ndarray  # float32; meaningless where not comparable
    comparable: np.ndarray  # bool


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den capped at 1; 0 where den is 0 (`ratio` in score.rs)."""
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, np.minimum(num / safe, 1.0), 0.0)


def hybrid_v1(f: PairFeatures) -> np.ndarray:
    """hybrid-v1 (src/matching/score.rs), as float32:

    * I = |I_a ∩ I_b| / |I_a ∪ I_b| (0 when both are empty);
    * C = (|LF_a ∩ OF_b| + |LF_b ∩ OF_a|) / (|LF_a| + |LF_b|) (0 when neither
      looks for anything);
    * K = |K_a ∩ K_b| / √(|K_a|·|K_b|) (0 when either has no keyword);
    * E = clamp(cosine, 0, 1) (NaN → 0), only when both embeddings are
      comparable.

    With real overlap (|I_a ∩ I_b| + |LF_a ∩ OF_b| + |LF_b ∩ OF_a| +
    |K_a ∩ K_b| > 0) the score is 0.2 + 0.8·blend, blend the weighted mean
    of I, C, K (and E when comparable; its weight is dropped otherwise);
    without, it is 0.1·E (0 without E). Computed in float64 in the same
    order as the Rust code, clamped to [0, 1] and rounded to float32, so
    that it agrees bit for bit whenever the cosine does.
    """
    union = f.interests_a + f.interests_b - f.interests_shared
    i = _ratio(f.interests_shared, union)
    c = _ratio(f.a_wants_b_offers + f.b_wants_a_offers, f.looking_for_a + f.looking_for_b)
    k = _ratio(f.keywords_shared, np.sqrt(f.keywords_a * f.keywords_b))
    cos = np.clip(f.cosine.astype(np.float32), np.float32(0.0), np.float32(1.0))
    e = np.where(np.isnan(cos), 0.0, cos.astype(np.float64))

    base = W_INTERESTS * i + W_COMPLEMENT * c + W_KEYWORDS * k
    with_e = (base + W_EMBEDDING * e) / (W_INTERESTS + W_COMPLEMENT + W_KEYWORDS + W_EMBEDDING)
    without_e = base / (W_INTERESTS + W_COMPLEMENT + W_KEYWORDS)
    blend = np.clip(np.where(f.comparable, with_e, without_e), 0.0, 1.0)

    overlap = (f.interests_shared + f.a_wants_b_offers + f.b_wants_a_offers + f.keywords_shared) > 0
    stranger = np.where(f.comparable, STRANGER_CEILING * e, 0.0)
    score = np.where(overlap, OVERLAP_FLOOR + (1.0 - OVERLAP_FLOOR) * blend, stranger)
    return np.clip(score, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------
# Tags and keywords (src/matching/profile.rs), implemented independently
# --------------------------------------------------------------------------

#: Only the first characters of a tag are read (4 × MAX_TAG_CHARS).
MAX_TAG_INPUT_CHARS = 4 * MAX_TAG_CHARS
#: Only the first characters of a role / bio are read for keywords.
MAX_ROLE_CHARS = 200
MAX_BIO_CHARS = 2000
#: The most keywords one attendee's role and bio give.
MAX_KEYWORDS = 24

#: Characters dropped inside a word rather than splitting it ("founder's").
_APOSTROPHES = re.compile("['\u2018\u2019\u02bc`]")
#: A word: a maximal run of letters and digits (`[^\W_]` is exactly
#: `str.isalnum`, which agrees with Rust's `char::is_alphanumeric` except
#: for a few combining marks of non-Latin scripts).
_WORD = re.compile(r"[^\W_]+")
_ASCII_LOWER = re.compile(r"[a-z]+")

#: Singular nouns ending in "s" that keep it (SINGULAR_S in profile.rs).
SINGULAR_S = frozenset(
    "alias atlas aws bias canvas chaos cms dns gas gps ios lens mars news saas series sms species".split()
)

#: Words dropped from keywords (STOP_WORDS in profile.rs).
STOP_WORDS = frozenset(
    """
    a about above after again against all almost along already also although always am among an and another any
    anyone anything are around as ask at away back background based be became because become been before being
    below best better between both bring build building but by came can cannot career chat co com come company
    connect could currently day days did do does doing done down during each easy eg either else enjoy enjoying
    etc even ever every everyone everything excited experience experienced far feel few field find first focus
    focused for found from fun further get getting give go going good got great had happy has have having he hello
    help her here hers herself hey hi him himself his how however http https ie if in inc industry interested into
    is it its itself join joined journey just keen know last least less let like likely little llc looking lot love
    ltd made main make making many may me meet might mine more most mostly much must my myself near need never new
    next nice no nor not now of off often on once one only or org other others our ours ourselves out over own part
    passion passionate people per please pretty previously professional quite rather re really recently say see
    seen several she should since so some someone something sometimes still such sure take talk team than thank
    thanks that the their theirs them themselves then there these they thing think thinking this those though
    through thus time to today together too toward towards try two under until up upon us use used using very via
    want was way we well went were what when where whether which while who whom whose why will with within without
    work worked working world would www year yes yet you your yours yourself yourselves
    """.split()
)


def stem_word(word: str) -> str:
    """The singular key of a lower-case word (`stem_word` in profile.rs)."""
    n = len(word)
    if n < 3 or not _ASCII_LOWER.fullmatch(word) or word in SINGULAR_S:
        return word
    if word.endswith(("ss", "us", "is")):
        return word
    if n >= 5 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s"):
        word = word[:-1]
    n = len(word)
    if n >= 4 and word[-1] == "e" and (word[-2] in "sxz" or (word[-2] == "h" and word[-3] in "cs")):
        word = word[:-1]
    return word


def _leading_upper(word: str) -> int:
    n = 0
    for c in word:
        if not c.isupper():
            break
        n += 1
    return n


def word_key(word: str) -> tuple[str, str, int]:
    """(lower case, key, leading upper-case letters) of one word as written:
    "LLMs" and "VCs" (capitals then an "s") lose the "s", other words go
    through `stem_word`."""
    lower = "".join(c.lower() for c in word)  # per character: no final sigma
    upper = _leading_upper(word)
    if len(word) >= 3 and upper == len(word) - 1 and word.endswith("s"):
        return lower, lower[:-1], upper
    return lower, stem_word(lower), upper


def _words(text: str) -> list[str]:
    return _WORD.findall(_APOSTROPHES.sub("", text))


@functools.lru_cache(maxsize=1 << 16)
def normalize_tag(tag: str) -> str | None:
    """The key of a tag: its words' keys joined by one space, cut to
    MAX_TAG_CHARS characters; None when it has no letter or digit."""
    out = " ".join(word_key(w)[1] for w in _words(tag[:MAX_TAG_INPUT_CHARS]))
    if len(out) > MAX_TAG_CHARS:
        out = out[:MAX_TAG_CHARS].rstrip(" ")
    return out or None


def _is_numeric(text: str) -> bool:
    """Every character is a number (Rust `char::is_numeric`: category N*)."""
    return all(unicodedata.category(c)[0] == "N" for c in text)


def keywords(role: str | None, bio: str | None) -> list[str]:
    """The keyword keys of a role and bio, in order: the words of the first
    MAX_ROLE_CHARS characters of the role and the first MAX_BIO_CHARS of the
    bio, without numbers, stop words (as written or keyed) and words of one
    or two characters unless all capitals ("AI"), nor words of more than 30;
    the first MAX_KEYWORDS distinct keys."""
    text = (role or "")[:MAX_ROLE_CHARS] + " " + (bio or "")[:MAX_BIO_CHARS]
    out: list[str] = []
    seen: set[str] = set()
    for w in _words(text):
        n = len(w)
        if n > 30:
            continue
        lower, key, upper = word_key(w)
        if n < 3 and not (n >= 2 and upper == n):
            continue
        if _is_numeric(lower) or lower in STOP_WORDS or key in STOP_WORDS:
            continue
        if key not in seen:
            seen.add(key)
            out.append(key)
            if len(out) >= MAX_KEYWORDS:
                break
    return out


def _flatten(raw) -> list:
    """A text array as the worker reads it: multi-dimensional arrays
    flattened in order."""
    out: list = []
    for x in raw:
        if isinstance(x, list):
            out.extend(_flatten(x))
        else:
            out.append(x)
    return out


def tag_set(raw: list | None) -> set[str]:
    """The normalised, de-duplicated tags of one list (a list of more than
    MAX_TAGS entries, NULLs included, is ignored as malformed)."""
    if not raw:
        return set()
    raw = _flatten(raw)
    if len(raw) > MAX_TAGS:
        return set()
    return {t for t in (normalize_tag(x) for x in raw if x is not None) if t is not None}


def company_key(company: str | None) -> str | None:
    """Lower-cased company without any white space; None when empty."""
    if company is None:
        return None
    key = "".join(c for c in company if not c.isspace()).lower()
    return key or None


# --------------------------------------------------------------------------
# The event as the oracle sees it
# --------------------------------------------------------------------------


@dataclass
class EventData:
    """One event read from the database, prepared for blocked scoring.

    Attendees are indexed in `user_id` order, so a lower index means a
    smaller id (the tie-break).
    """

    algorithm: str
    k: int
    exclude_same_company: bool
    users: list[str]
    active: np.ndarray  # bool
    company: np.ndarray  # int code, -1 for none
    emb: np.ndarray  # (n, d) float32, unit rows; zero rows when invalid
    emb_len: np.ndarray  # int: length of a valid embedding, 0 when missing or invalid
    # hybrid-v1's sets, as 0/1 float32 matrices (n, columns) whose products
    # are the exact intersection counts. A column is kept only when the id
    # can be shared at all (an interest or keyword of two attendees, a tag
    # someone looks for and someone offers), so real-world vocabularies stay
    # small; the set sizes are counted before that pruning.
    interests: np.ndarray
    looking_for: np.ndarray  # same columns as `offering`
    offering: np.ndarray
    keywords: np.ndarray
    n_interests: np.ndarray  # float64 |I|
    n_looking_for: np.ndarray  # float64 |LF|
    n_keywords: np.ndarray  # float64 |K|
    excluded: dict[int, set[int]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.users)

    def matchable(self) -> np.ndarray:
        """Who can appear in lists: active, and (cosine-v1) a valid embedding."""
        if self.algorithm == "cosine-v1":
            return self.active & (self.emb_len > 0)
        if self.algorithm == "hybrid-v1":
            return self.active.copy()
        return np.zeros(self.n, dtype=bool)


def _parse_embedding(text: str | None, ndims: int | None, dims: int | None) -> np.ndarray | None:
    """A valid embedding scaled to unit length (float32), or None when it is
    missing or invalid (NULL or non-finite components, all zeros, not flat,
    too long, or not the event's `embedding_dimensions`)."""
    if text is None or text == "" or (ndims is not None and ndims > 1):
        return None
    if "N" in text or "I" in text:  # NaN (also our marker for NULL) or Infinity
        return None
    v = np.array(text.split(" "), dtype=np.float64)
    if len(v) > MAX_DIMENSIONS or (dims is not None and len(v) != dims):
        return None
    # The worker checks finiteness of the float32 values, then normalises in
    # float64 and rounds to float32.
    v = v.astype(np.float32).astype(np.float64)
    norm2 = float(np.dot(v, v))
    if norm2 == 0.0 or not np.isfinite(norm2):
        return None
    return (v / np.sqrt(norm2)).astype(np.float32)


def load(db: Psql, event_id: str) -> EventData:
    """Reads one event (settings, participants, exclusions) from the database."""
    ev = db.json_rows(
        "SELECT algorithm, matches_per_user, exclude_same_company, embedding_dimensions "
        f"FROM events WHERE id = {literal(event_id)}"
    )[0]
    dims = ev["embedding_dimensions"]
    people = db.json_rows(
        "SELECT user_id, status, company, role, bio, interests, looking_for, offering, "
        "array_ndims(embedding) AS ndims "
        f"FROM event_participants WHERE event_id = {literal(event_id)} ORDER BY user_id"
    )
    users = [p["user_id"] for p in people]
    index = {u: i for i, u in enumerate(users)}
    n = len(users)

    texts: dict[str, str | None] = {}
    raw = db.copy_out_raw(
        "SELECT user_id, array_to_string(embedding, ' ', 'NaN') FROM event_participants "
        f"WHERE event_id = {literal(event_id)} AND embedding IS NOT NULL"
    )
    for line in raw.splitlines():
        uid, _, text = line.partition("\t")
        texts[uid] = text
    vectors = [_parse_embedding(texts.get(p["user_id"]), p["ndims"], dims) for p in people]
    lengths = {len(v) for v in vectors if v is not None}
    width = max(lengths) if lengths else 1
    emb = np.zeros((n, width), dtype=np.float32)
    emb_len = np.zeros(n, dtype=np.int64)
    for i, v in enumerate(vectors):
        if v is not None:
            emb[i, : len(v)] = v
            emb_len[i] = len(v)

    companies: dict[str, int] = {}
    company = np.full(n, -1, dtype=np.int64)
    for i, p in enumerate(people):
        key = company_key(p["company"])
        if key is not None:
            company[i] = companies.setdefault(key, len(companies))

    sets = {name: [tag_set(p[name]) for p in people] for name in ("interests", "looking_for", "offering")}
    words = [set(keywords(p["role"], p["bio"])) for p in people]

    def binary(lists: list[set[str]], columns: dict[str, int]) -> np.ndarray:
        m = np.zeros((n, max(1, len(columns))), dtype=np.float32)
        for r, s in enumerate(lists):
            for t in s:
                col = columns.get(t)
                if col is not None:
                    m[r, col] = 1.0
        return m

    def shared_by_two(lists: list[set[str]]) -> dict[str, int]:
        seen: dict[str, int] = {}
        for s in lists:
            for t in s:
                seen[t] = seen.get(t, 0) + 1
        return {t: i for i, t in enumerate(sorted(t for t, c in seen.items() if c >= 2))}

    wanted = set().union(*sets["looking_for"]) if n else set()
    offered = set().union(*sets["offering"]) if n else set()
    trade = {t: i for i, t in enumerate(sorted(wanted & offered))}

    excluded: dict[int, set[int]] = {}
    for a, b in db.copy_out(
        f"SELECT user_id, excluded_user_id FROM match_exclusions WHERE event_id = {literal(event_id)}"
    ):
        if a in index and b in index:
            excluded.setdefault(index[a], set()).add(index[b])
            excluded.setdefault(index[b], set()).add(index[a])

    return EventData(
        algorithm=ev["algorithm"],
        k=int(ev["matches_per_user"]),
        exclude_same_company=bool(ev["exclude_same_company"]),
        users=users,
        active=np.array([p["status"] == "active" for p in people], dtype=bool),
        company=company,
        emb=emb,
        emb_len=emb_len,
        interests=binary(sets["interests"], shared_by_two(sets["interests"])),
        looking_for=binary(sets["looking_for"], trade),
        offering=binary(sets["offering"], trade),
        keywords=binary(words, shared_by_two(words)),
        n_interests=np.array([len(s) for s in sets["interests"]], dtype=np.float64),
        n_looking_for=np.array([len(s) for s in sets["looking_for"]], dtype=np.float64),
        n_keywords=np.array([len(s) for s in words], dtype=np.float64),
        excluded=excluded,
    )


def score_block(ev: EventData, rows: np.ndarray, matchable: np.ndarray) -> np.ndarray:
    """Scores of attendees `rows` against everyone: a (len(rows), n) float32
    matrix with -inf where the pair is not eligible."""
    cos = ev.emb[rows] @ ev.emb.T
    np.clip(cos, -1.0, 1.0, out=cos)
    comparable = (ev.emb_len[rows, None] == ev.emb_len[None, :]) & (ev.emb_len[rows, None] > 0)
    if ev.algorithm == "cosine-v1":
        scores = cos.astype(np.float32)
        eligible = comparable.copy()
    elif ev.algorithm == "hybrid-v1":
        def counts(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            # 0/1 float32 products are exact integer counts (below 2**24).
            return (x[rows] @ y.T).astype(np.float64)

        def a_side(v: np.ndarray) -> np.ndarray:
            return np.broadcast_to(v[rows, None], cos.shape)

        def b_side(v: np.ndarray) -> np.ndarray:
            return np.broadcast_to(v[None, :], cos.shape)

        f = PairFeatures(
            interests_shared=counts(ev.interests, ev.interests),
            interests_a=a_side(ev.n_interests),
            interests_b=b_side(ev.n_interests),
            a_wants_b_offers=counts(ev.looking_for, ev.offering),
            b_wants_a_offers=counts(ev.offering, ev.looking_for),
            looking_for_a=a_side(ev.n_looking_for),
            looking_for_b=b_side(ev.n_looking_for),
            keywords_shared=counts(ev.keywords, ev.keywords),
            keywords_a=a_side(ev.n_keywords),
            keywords_b=b_side(ev.n_keywords),
            cosine=cos,
            comparable=comparable,
        )
        scores = hybrid_v1(f)
        eligible = np.ones(cos.shape, dtype=bool)
    else:
        raise ValueError(f"the oracle does not know algorithm {ev.algorithm!r}")

    eligible &= matchable[rows, None] & matchable[None, :]
    eligible[np.arange(len(rows)), rows] = False
    if ev.exclude_same_company:
        c = ev.company
        eligible &= ~((c[rows, None] == c[None, :]) & (c[rows, None] >= 0))
    for r, u in enumerate(rows.tolist()):
        for x in ev.excluded.get(u, ()):
            eligible[r, x] = False
    return np.where(eligible, scores, np.float32(-np.inf)).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the best min(k, eligible) entries of one row, in rank order
    (score descending, then index, i.e. user id, ascending)."""
    eligible = int(np.isfinite(scores).sum())
    kk = min(k, eligible)
    if kk == 0:
        return np.empty(0, dtype=np.int64)
    threshold = np.partition(scores, len(scores) - kk)[len(scores) - kk]
    cand = np.nonzero(scores >= threshold)[0]
    order = np.lexsort((cand, -scores[cand]))
    return cand[order[:kk]]


@dataclass
class Verdict:
    """The comparison of `user_matches` with the oracle."""

    exact: bool
    mismatches: int  # attendees whose list is wrong (owners of stray rows included)
    attendees: int  # active attendees checked
    rows: int  # match rows read
    examples: list[str]


def verify(db: Psql, event_id: str, log=lambda msg: print(msg, file=sys.stderr)) -> Verdict:
    """Compares the event's `user_matches` with the brute force."""
    ev = load(db, event_id)
    index = {u: i for i, u in enumerate(ev.users)}
    stored: dict[str, list[tuple[int, str, float, str]]] = {}
    nrows = 0
    for owner, matched, rank, score, alg in db.copy_out(
        "SELECT user_id, matched_user_id, rank, score, algorithm_version FROM user_matches "
        f"WHERE event_id = {literal(event_id)}"
    ):
        stored.setdefault(owner, []).append((int(rank), matched, float(score), alg))
        nrows += 1
    for lst in stored.values():
        lst.sort()

    matchable = ev.matchable()
    wrong: set[str] = set()
    examples: list[str] = []

    def bad(owner: str, why: str) -> None:
        wrong.add(owner)
        if len(examples) < 10:
            examples.append(f"{owner}: {why}")

    for owner in stored:
        if owner not in index or not matchable[index[owner]]:
            bad(owner, f"has {len(stored[owner])} rows but is not a matchable active attendee")

    block = max(16, min(1024, 2_000_000 // max(1, ev.n)))
    candidates = np.nonzero(matchable)[0]
    for start in range(0, len(candidates), block):
        rows = candidates[start : start + block]
        scores = score_block(ev, rows, matchable)
        for r, u in enumerate(rows.tolist()):
            owner = ev.users[u]
            want = top_k(scores[r], ev.k)
            have = stored.get(owner, [])
            if len(have) != len(want):
                bad(owner, f"{len(have)} rows, expected {len(want)}")
                continue
            for pos, (rank, matched, score, alg) in enumerate(have):
                exp_idx = int(want[pos])
                exp_score = float(scores[r, exp_idx])
                if rank != pos + 1:
                    bad(owner, f"ranks are not 1..{len(have)}: {[h[0] for h in have]}")
                    break
                if alg != ev.algorithm:
                    bad(owner, f"rank {rank} has algorithm_version {alg}, the event uses {ev.algorithm}")
                    break
                j = index.get(matched)
                true = float(scores[r, j]) if j is not None else float("-inf")
                if not np.isfinite(true):
                    bad(owner, f"rank {rank} is {matched}, not an eligible partner")
                    break
                if abs(score - true) > TOLERANCE:
                    bad(owner, f"rank {rank} ({matched}) stored score {score:.6f}, oracle {true:.6f}")
                    break
                if j != exp_idx and abs(true - exp_score) > TOLERANCE:
                    bad(
                        owner,
                        f"rank {rank} is {matched} ({true:.6f}), expected {ev.users[exp_idx]} ({exp_score:.6f})",
                    )
                    break
            if len({h[1] for h in have}) != len(have):
                bad(owner, "a partner appears twice")
    verdict = Verdict(
        exact=not wrong,
        mismatches=len(wrong),
        attendees=int(ev.active.sum()),
        rows=nrows,
        examples=examples,
    )
    for e in examples:
        log(f"  mismatch: {e}")
    return verdict
