"""A synthetic networking event with realistic structure, for the benchmarks.

Attendees belong to one of `CLUSTERS` topics. A topic has:

* a centre in embedding space: an attendee's embedding is the centre plus
  Gaussian noise, so same-topic attendees score about 0.5 under cosine-v1
  and others about 0;
* a handful of companies: most attendees work at one of their topic's
  companies, so the same-company rule removes partners who would otherwise
  rank high. Company names are spelled with varying case and spacing
  ("Firm 12", "firm12", " FIRM  12 ") because the rule ignores both, and
  some attendees have no company (or only blanks), which never equals
  anything;
* a preferred set of tags from a ~300-word vocabulary of lower-case single
  words, for `interests`, `looking_for` and `offering`, so that hybrid-v1's
  overlap and complementarity terms are not almost always zero.

A few pairs of same-topic attendees exclude each other (`match_exclusions`).

Everything is drawn from one `numpy.random.Generator`, so a seed gives the
same event every time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from pgclient import array_text, copy_escape, literal

#: Number of topics (Gaussian centres in embedding space).
CLUSTERS = 50
#: Size of the tag vocabulary.
VOCABULARY = 300
#: Tags a topic prefers.
TOPIC_TAGS = 24
#: Standard deviation of the embedding noise, relative to the unit centre.
NOISE = 1.0

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u"]
_ROLES = ["Founder", "Engineer", "Investor", "Researcher", "Designer", "Product manager", "Student"]


def vocabulary(n: int = VOCABULARY) -> list[str]:
    """`n` distinct lower-case single-word tags (pronounceable, letters
    only, so the worker's tag normalisation leaves them unchanged). Fixed,
    independent of the seed."""
    rng = np.random.default_rng(20261125)
    words: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        syllables = int(rng.integers(2, 4))
        w = "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(syllables))
        if w not in words:
            words.add(w)
            out.append(w)
    return out


@dataclass
class Attendee:
    """One generated `event_participants` row."""

    user_id: str
    display_name: str
    company: str | None
    role: str
    interests: list[str]
    looking_for: list[str]
    offering: list[str]
    embedding: np.ndarray | None  # float32, or None when the event has no embeddings

    def copy_line(self, event_id: str) -> str:
        """The row in COPY text format, columns as in `PARTICIPANT_COLUMNS`."""
        emb = None
        if self.embedding is not None:
            emb = "{" + ",".join("%.9g" % x for x in self.embedding.tolist()) + "}"
        fields = [
            event_id,
            self.user_id,
            self.display_name,
            self.company,
            self.role,
            array_text(self.interests),
            array_text(self.looking_for),
            array_text(self.offering),
            emb,
        ]
        return "\t".join(copy_escape(f) for f in fields)

    def insert_values(self, event_id: str) -> str:
        """The row as a SQL VALUES tuple, columns as in `PARTICIPANT_COLUMNS`."""
        emb = "NULL"
        if self.embedding is not None:
            emb = "'{" + ",".join("%.9g" % x for x in self.embedding.tolist()) + "}'"
        return "(" + ", ".join(
            [
                literal(event_id),
                literal(self.user_id),
                literal(self.display_name),
                literal(self.company),
                literal(self.role),
                literal(self.interests),
                literal(self.looking_for),
                literal(self.offering),
                emb,
            ]
        ) + ")"


#: The columns of `Attendee.copy_line` and `Attendee.insert_values`.
PARTICIPANT_COLUMNS = (
    "event_participants (event_id, user_id, display_name, company, role, "
    "interests, looking_for, offering, embedding)"
)


@dataclass
class Event:
    """A generated event: attendees in generation order, and exclusions as
    (user, excluded user) pairs."""

    attendees: list[Attendee]
    exclusions: list[tuple[str, str]] = field(default_factory=list)


def _company_spelling(rng: np.random.Generator, firm: int) -> str:
    """One of several spellings of the same company (same key once case and
    white space are ignored)."""
    variants = [f"Firm {firm}", f"firm{firm}", f" FIRM  {firm} ", f"Firm\t{firm}"]
    return variants[int(rng.integers(0, len(variants)))] if rng.random() < 0.3 else variants[0]


def _tags(rng: np.random.Generator, preferred: np.ndarray, vocab: list[str], lo: int, hi: int) -> list[str]:
    """Between lo and hi distinct tags, mostly from the preferred set."""
    n = int(rng.integers(lo, hi + 1))
    chosen: list[int] = []
    while len(chosen) < n:
        t = int(rng.choice(preferred)) if rng.random() < 0.7 else int(rng.integers(0, len(vocab)))
        if t not in chosen:
            chosen.append(t)
    return [vocab[t] for t in chosen]


def generate(n: int, dims: int, seed: int, with_embeddings: bool = True, exclusions: int | None = None) -> Event:
    """An event of `n` attendees (see the module docs).

    `dims` is the embedding length; `with_embeddings=False` leaves every
    embedding NULL (the queue benchmark needs none). `exclusions` defaults
    to about one pair per 100 attendees.
    """
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    centres = rng.standard_normal((CLUSTERS, dims)).astype(np.float64)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic_tags = [rng.choice(len(vocab), size=TOPIC_TAGS, replace=False) for _ in range(CLUSTERS)]
    firms_per_topic = max(2, n // (CLUSTERS * 8))  # about 8 attendees per company
    topic = rng.integers(0, CLUSTERS, size=n)

    embeddings = None
    if with_embeddings:
        noise = rng.standard_normal((n, dims)) * (NOISE / np.sqrt(dims))
        embeddings = (centres[topic] + noise).astype(np.float32)

    attendees: list[Attendee] = []
    for i in range(n):
        t = int(topic[i])
        r = rng.random()
        if r < 0.06:
            company = None
        elif r < 0.09:
            company = ["", "   "][int(rng.integers(0, 2))]
        elif r < 0.85:
            company = _company_spelling(rng, t * firms_per_topic + int(rng.integers(0, firms_per_topic)))
        else:
            company = _company_spelling(rng, CLUSTERS * firms_per_topic + int(rng.integers(0, max(1, n // 4))))
        attendees.append(
            Attendee(
                user_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                display_name=f"Attendee {i}",
                company=company,
                role=_ROLES[int(rng.integers(0, len(_ROLES)))],
                interests=_tags(rng, topic_tags[t], vocab, 3, 8),
                looking_for=_tags(rng, topic_tags[t], vocab, 1, 3),
                offering=_tags(rng, topic_tags[t], vocab, 1, 3),
                embedding=None if embeddings is None else embeddings[i],
            )
        )

    pairs: set[tuple[str, str]] = set()
    wanted = max(1, n // 100) if exclusions is None else exclusions
    by_topic: dict[int, list[int]] = {}
    for i, t in enumerate(topic.tolist()):
        by_topic.setdefault(t, []).append(i)
    tries = 0
    while len(pairs) < wanted and tries < wanted * 20 and n >= 2:
        tries += 1
        members = by_topic[int(topic[int(rng.integers(0, n))])]
        if len(members) < 2:
            continue
        a, b = rng.choice(members, size=2, replace=False)
        pair = (attendees[int(a)].user_id, attendees[int(b)].user_id)
        if pair not in pairs and pair[::-1] not in pairs:
            pairs.add(pair)
    return Event(attendees=attendees, exclusions=sorted(pairs))
