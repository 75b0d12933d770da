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
* a preferred set of tags from a 300-tag vocabulary (real multi-word tags
  such as "machine learning" or "women's health" plus pronounceable made-up
  words), for `interests`, `looking_for` and `offering`, so that hybrid-v1's
  overlap and complementarity terms are not almost always zero. About one
  tag in four is written in a variant spelling that the worker's tag keys
  must merge ("Machine-Learning", "machine learnings", "BATTERIES!",
  "#kavo", "Women’s Health"), so normalisation is exercised;
* a few domain keywords: an attendee's `role` ("Senior ML Engineer",
  "Founder & CEO") and short `bio` (one to three sentences with stop words,
  acronyms, plurals, apostrophes, numbers and punctuation) mention some of
  them, so hybrid-v1's role/bio keyword term matters. A few bios are empty
  or NULL, and a few are longer than the 2000 characters the worker reads,
  with their only keyword past the cut, and a few list more keywords than
  the worker keeps;
* about 1% blank profiles (no tags, role or bio): nothing in common with
  anyone, so their lists hold strangers ranked by embedding alone.

With `missing_embeddings`, that share of attendees has no embedding (NULL):
hybrid-v1 then scores their pairs without the embedding term. (cosine-v1
would match them with no one, and the worker retries their queue rows before
failing them, which would distort the timings; so the cold benchmark asks
for missing embeddings only under hybrid-v1.)

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
#: Role/bio keywords a topic prefers.
TOPIC_WORDS = 6
#: Standard deviation of the embedding noise, relative to the unit centre.
NOISE = 1.0

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u"]
#: Roles, some sharing keywords ("engineer", "founder", "AI"), some with none.
_ROLES = [
    "Founder",
    "Founder & CEO",
    "Co-founder, CTO",
    "Senior ML Engineer",
    "Software Engineer",
    "Staff engineer (backend)",
    "Investor",
    "Partner @ seed-stage VC",
    "Angel investor",
    "Researcher",
    "PhD student",
    "Postdoc, AI safety",
    "Product Designer",
    "UX researcher",
    "Product manager",
    "Head of Growth",
    "Student",
    "Operations lead",
    "",
]
#: Real multi-word tags, each with spellings that share its key.
_REAL_TAGS = [
    ("machine learning", ["Machine-Learning", "machine learnings", "MACHINE LEARNING", "Machine Learning!"]),
    ("climate tech", ["Climate Tech", "climate-tech", "#climate-tech"]),
    ("batteries", ["Battery", "BATTERIES!", "battery"]),
    ("seed funding", ["Seed Funding", "seed-funding", "seed fundings"]),
    ("women's health", ["Women’s Health", "womens health", "Women's Health"]),
    ("developer tools", ["Developer Tools", "developer-tool", "Developer-Tools"]),
    ("LLMs", ["llm", "LLM", "LLMs."]),
    ("APIs", ["API", "APIs."]),
    ("startups", ["Startups!", "startup", "Startup"]),
    ("go-to-market", ["Go To Market", "go to market", "GO-TO-MARKET"]),
    ("founder's network", ["Founders Network", "founder network"]),
    ("data science", ["Data Sciences", "data-science"]),
    ("business development", ["Businesses Development", "Business Development"]),
    ("robotics", ["Robotics", "robotic"]),
    ("public policy", ["Public Policies", "public-policy"]),
    ("fintech", ["FinTech", "Fintechs"]),
    ("mentoring", ["Mentoring", "mentorings"]),
    ("hiring", ["Hiring!", "HIRING"]),
]
#: Domain keywords for roles and bios (several spelled as plurals or
#: acronyms, so the keyword keys must merge "LLMs"/"LLM", "batteries"/"battery").
_KEYWORDS = (
    "AI LLMs batteries solar grid carbon hydrogen robotics drones fintech payments lending insurance healthcare "
    "diagnostics genomics biotech vaccines edtech tutoring climate agriculture logistics shipping retail fashion "
    "gaming music privacy security cryptography compilers databases Rust Python Kubernetes GPUs chips quantum "
    "satellites mobility housing water recycling plastics energy wind nuclear mining forestry oceans sensors "
    "wearables telehealth pharma pricing marketplaces ecommerce advertising media journalism podcasts design "
    "typography accessibility translation legal compliance accounting payroll HR recruiting SaaS APIs SDKs "
    "analytics dashboards forecasting simulation"
).split()
#: Sentence templates of a bio; {a}, {b}, {c} are keywords.
_BIO_SENTENCES = [
    "I'm passionate about {a} and {b}.",
    "Previously at a {a} startup; now working on {b} for {c}.",
    "Building tools for {a} — think {b} meets {c}!",
    "10+ years in {a}. Happy to chat about {b}, {c} or anything else.",
    "Founder's mindset, researcher's patience: {a}, {b}.",
    "Currently exploring how {a} can help {b} (and vice versa).",
    "Looking for co-founders who care about {a}.",
    "We raised our seed round in 2023 to scale {a} across {b}.",
    "Ex-{a}, now {b}. Ask me about {c}!",
    "Mentoring first-time founders in {a} & {b}.",
]
#: Filler with no keyword at all (every word is a stop word or too short).
_FILLER = "I really like to meet new people, and I am always happy to chat! "


def vocabulary(n: int = VOCABULARY) -> list[str]:
    """`n` distinct tags: the real multi-word tags of `_REAL_TAGS`, then
    pronounceable lower-case made-up words. Fixed, independent of the seed.
    Their keys are distinct, so no two of them are the same tag."""
    rng = np.random.default_rng(20261125)
    words: set[str] = set()
    out: list[str] = [t for t, _ in _REAL_TAGS][:n]
    while len(out) < n:
        syllables = int(rng.integers(2, 4))
        w = "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(syllables))
        if w not in words:
            words.add(w)
            out.append(w)
    return out


def spell(rng: np.random.Generator, tag: str) -> str:
    """`tag` as written by one attendee: usually as is, sometimes in a
    variant spelling with the same key (case, plural, punctuation)."""
    if rng.random() >= 0.25:
        return tag
    for base, variants in _REAL_TAGS:
        if base == tag:
            return variants[int(rng.integers(0, len(variants)))]
    forms = [tag.upper(), tag.capitalize(), f"{tag}!", f"#{tag}", f" {tag.capitalize()}. "]
    if tag[-1] in "aeo":  # "kavo" → "kavos" (a final "us" or "is" is kept)
        forms += [f"{tag}s", f"{tag.capitalize()}s"]
    return forms[int(rng.integers(0, len(forms)))]


def bio(rng: np.random.Generator, preferred: np.ndarray) -> str | None:
    """A short bio mentioning a few keywords, mostly the topic's; a few are
    NULL or empty, a few are too long for the worker to read in full."""
    r = rng.random()
    if r < 0.03:
        return None
    if r < 0.05:
        return ""

    def word() -> str:
        if rng.random() < 0.75:
            return _KEYWORDS[int(rng.choice(preferred))]
        return _KEYWORDS[int(rng.integers(0, len(_KEYWORDS)))]

    if r < 0.06:
        # Past the cut: this keyword is not read.
        return _FILLER * (2000 // len(_FILLER) + 2) + f"Also into {word()}."
    if r < 0.07:
        # More keywords than the worker keeps (MAX_KEYWORDS = 24).
        picks = rng.choice(len(_KEYWORDS), size=30, replace=False)
        return "Skills: " + ", ".join(_KEYWORDS[int(k)] for k in picks) + "."
    sentences = [
        _BIO_SENTENCES[int(rng.integers(0, len(_BIO_SENTENCES)))].format(a=word(), b=word(), c=word())
        for _ in range(int(rng.integers(1, 4)))
    ]
    return " ".join(sentences)


@dataclass
class Attendee:
    """One generated `event_participants` row."""

    user_id: str
    display_name: str
    company: str | None
    role: str | None
    bio: str | None
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
            self.bio,
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
                literal(self.bio),
                literal(self.interests),
                literal(self.looking_for),
                literal(self.offering),
                emb,
            ]
        ) + ")"


#: The columns of `Attendee.copy_line` and `Attendee.insert_values`.
PARTICIPANT_COLUMNS = (
    "event_participants (event_id, user_id, display_name, company, role, bio, "
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
    return [spell(rng, vocab[t]) for t in chosen]


def generate(
    n: int,
    dims: int,
    seed: int,
    with_embeddings: bool = True,
    exclusions: int | None = None,
    missing_embeddings: float = 0.0,
) -> Event:
    """An event of `n` attendees (see the module docs).

    `dims` is the embedding length; `with_embeddings=False` leaves every
    embedding NULL (the queue benchmark needs none). `exclusions` defaults
    to about one pair per 100 attendees. `missing_embeddings` is the share
    of attendees without an embedding (the rest of the event is the same
    whatever it is).
    """
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    centres = rng.standard_normal((CLUSTERS, dims)).astype(np.float64)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic_tags = [rng.choice(len(vocab), size=TOPIC_TAGS, replace=False) for _ in range(CLUSTERS)]
    topic_words = [rng.choice(len(_KEYWORDS), size=TOPIC_WORDS, replace=False) for _ in range(CLUSTERS)]
    firms_per_topic = max(2, n // (CLUSTERS * 8))  # about 8 attendees per company
    topic = rng.integers(0, CLUSTERS, size=n)

    embeddings = None
    if with_embeddings:
        noise = rng.standard_normal((n, dims)) * (NOISE / np.sqrt(dims))
        embeddings = (centres[topic] + noise).astype(np.float32)
    missing = rng.random(n) < missing_embeddings

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
        a = Attendee(
            user_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
            display_name=f"Attendee {i}",
            company=company,
            role=None if rng.random() < 0.03 else _ROLES[int(rng.integers(0, len(_ROLES)))],
            bio=bio(rng, topic_words[t]),
            interests=_tags(rng, topic_tags[t], vocab, 3, 8),
            looking_for=_tags(rng, topic_tags[t], vocab, 1, 3),
            offering=_tags(rng, topic_tags[t], vocab, 1, 3),
            embedding=None if embeddings is None or missing[i] else embeddings[i],
        )
        if rng.random() < 0.01:  # a blank profile
            a.role, a.bio, a.interests, a.looking_for, a.offering = None, None, [], [], []
        attendees.append(a)

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
