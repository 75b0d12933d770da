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

The hybrid-v1 formula lives in `hybrid_v1` alone: it is being revised on
another branch, and that function is what to update when it changes.
"""

from __future__ import annotations

import sys
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

#: hybrid-v1's weights of interest overlap I, complementarity C and embedding
#: similarity E (W_INTERESTS, W_COMPLEMENT, W_EMBEDDING in score.rs).
W_INTERESTS, W_COMPLEMENT, W_EMBEDDING = 0.45, 0.45, 0.10


@dataclass
class PairFeatures:
    """Everything a tag-and-embedding score can depend on, for a block of
    pairs (a, b): each field is an array of the block's shape.

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
    cosine: np.ndarray  # float32; meaningless where not comparable
    comparable: np.ndarray  # bool


def hybrid_v1(f: PairFeatures) -> np.ndarray:
    """hybrid-v1 = 0.45·I + 0.45·C + 0.10·E, as float32.

    * I = |I_a ∩ I_b| / |I_a ∪ I_b| (Jaccard of normalised interests; 0 when
      both are empty);
    * C = (|LF_a ∩ OF_b| + |LF_b ∩ OF_a|) / (|LF_a| + |LF_b|) (0 when neither
      looks for anything);
    * E = max(0, cosine) when both embeddings are comparable, else 0.

    Computed in float64 in the same order as the Rust code, then rounded to
    float32, so that it usually agrees bit for bit.
    """
    union = f.interests_a + f.interests_b - f.interests_shared
    with np.errstate(divide="ignore", invalid="ignore"):
        i = np.where(union == 0, 0.0, f.interests_shared / np.where(union == 0, 1.0, union))
        wanted = f.looking_for_a + f.looking_for_b
        c = np.where(
            wanted == 0, 0.0, (f.a_wants_b_offers + f.b_wants_a_offers) / np.where(wanted == 0, 1.0, wanted)
        )
    e = np.where(f.comparable, np.maximum(f.cosine, np.float32(0.0)).astype(np.float64), 0.0)
    return (W_INTERESTS * i + W_COMPLEMENT * c + W_EMBEDDING * e).astype(np.float32)


# --------------------------------------------------------------------------
# Normalisation (src/matching/profile.rs), implemented independently
# --------------------------------------------------------------------------


def normalize_tag(tag: str) -> str | None:
    """Lower case; every run of characters that are not letters or digits
    becomes one space; trimmed; cut to 200 characters. None when nothing
    is left."""
    out: list[str] = []
    pending_space = False
    chars = 0
    for c in tag:
        if c.isalnum():
            if pending_space and out:
                out.append(" ")
                chars += 1
            pending_space = False
            low = c.lower()
            out.append(low)
            chars += len(low)
            if chars >= MAX_TAG_CHARS:
                break
        else:
            pending_space = True
    return "".join(out) or None


def tag_set(raw: list | None) -> set[str]:
    """The normalised, de-duplicated tags of one list (a list of more than
    MAX_TAGS entries is ignored as malformed)."""
    if not raw or len(raw) > MAX_TAGS:
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
    interests: np.ndarray  # (n, V) float32 0/1
    looking_for: np.ndarray
    offering: np.ndarray
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
        "SELECT user_id, status, company, interests, looking_for, offering, "
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
    vocab: dict[str, int] = {}
    for lists in sets.values():
        for s in lists:
            for t in s:
                vocab.setdefault(t, len(vocab))
    mats = {}
    for name, lists in sets.items():
        m = np.zeros((n, max(1, len(vocab))), dtype=np.float32)
        for i, s in enumerate(lists):
            for t in s:
                m[i, vocab[t]] = 1.0
        mats[name] = m

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
        interests=mats["interests"],
        looking_for=mats["looking_for"],
        offering=mats["offering"],
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
        ni = ev.interests.sum(axis=1).astype(np.float64)
        nlf = ev.looking_for.sum(axis=1).astype(np.float64)
        f = PairFeatures(
            interests_shared=(ev.interests[rows] @ ev.interests.T).astype(np.float64),
            interests_a=np.broadcast_to(ni[rows, None], cos.shape),
            interests_b=np.broadcast_to(ni[None, :], cos.shape),
            a_wants_b_offers=(ev.looking_for[rows] @ ev.offering.T).astype(np.float64),
            b_wants_a_offers=(ev.offering[rows] @ ev.looking_for.T).astype(np.float64),
            looking_for_a=np.broadcast_to(nlf[rows, None], cos.shape),
            looking_for_b=np.broadcast_to(nlf[None, :], cos.shape),
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
