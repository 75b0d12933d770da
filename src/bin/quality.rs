//! `quality`: how good are hybrid-v1's matches? A benchmark, not a test: it
//! prints figures.
//!
//! It generates synthetic events with a known answer and measures
//! precision@K: the share of each attendee's K matches that are *relevant*,
//! averaged over attendees. No database: it calls the library's pure
//! `matching` module directly, exactly as the worker does.
//!
//! ## The events
//!
//! - Attendees belong to latent **communities** (a domain such as "ocean" or
//!   "battery"), each with six topics: four of its own ("ocean analytics",
//!   "ocean policy", …) and two of an unrelated neighbour's, so communities
//!   overlap. An attendee lists one to three of their community's topics
//!   (partial overlap), often a popular tag everyone uses ("AI",
//!   "startups") and sometimes a topic of another community.
//! - **Planted complements**: each community needs two services ("ocean
//!   pilot partners") that exactly one other community offers (a random
//!   permutation without fixed points). Attendees list some of their
//!   community's needs and offers; some also need or offer a generic service
//!   ("mentoring") that says nothing about the community.
//! - **Noise**: with probability `--noise`, a tag is written in another way:
//!   Title Case, UPPER CASE, hyphenated, plural, with punctuation, or with a
//!   typo (a dropped letter, which no normaliser repairs).
//! - **Sparse profiles** (`--sparse`): at most one interest, no needs or
//!   offers; often a role and a short bio.
//! - Roles are generic ("Founder", "Researcher"), sometimes with the domain
//!   ("Ocean Researcher"). Bios mention community topics, fillers and a
//!   company.
//! - **Embeddings** (`--dims`, 0 for none): the community's random direction
//!   plus Gaussian noise (`--embedding-noise`; 1.0 gives a cosine of about 0.5
//!   within a community and 0 across); `--missing-embeddings` of attendees
//!   have none.
//!
//! The last column is the failure hybrid-v1 rules out: the share of
//! attendees whose list holds a partner with nothing in common (no shared
//! interest or keyword, no complement) while a partner with real overlap
//! was left out.
//!
//! A partner is **relevant** when they share the attendee's community, or
//! belong to a community with a planted complement either way, or one
//! really needs a generic service the other really offers (whether or not
//! their profiles say so).
//!
//! ```sh
//! cargo run --release --bin quality -- --seed 1 --runs 5
//! ```

use clap::Parser;
use matchmaker::embeddings::{LocalModel, ProfileText};
use matchmaker::matching::profile::{Participant, ParticipantRow, TagInterner};
use matchmaker::matching::score::{cosine, hybrid_with_similarity, Algorithm};
use matchmaker::matching::topk::{Entry, TopK};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "quality",
    about = "Precision@K of hybrid-v1 and baselines on synthetic events with planted communities and complements"
)]
struct Args {
    /// First random seed; run r uses seed + r.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many events (seeds) to generate and average.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: u64,
    /// Attendees per event.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(4..=20_000))]
    attendees: u64,
    /// Latent communities per event.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(3..=40))]
    communities: u64,
    /// Matches per attendee.
    #[arg(long, short, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    k: u64,
    /// Probability that a tag is written in a variant spelling.
    #[arg(long, default_value_t = 0.3, value_parser = probability)]
    noise: f64,
    /// Share of attendees with a sparse profile.
    #[arg(long, default_value_t = 0.2, value_parser = probability)]
    sparse: f64,
    /// Embedding dimensions (0: no embeddings).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(0..=4096))]
    dims: u64,
    /// Standard deviation of the embedding noise, relative to the community direction.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    embedding_noise: f64,
    /// Share of attendees without an embedding.
    #[arg(long, default_value_t = 0.1, value_parser = probability)]
    missing_embeddings: f64,
    /// Also print one table per seed.
    #[arg(long)]
    per_seed: bool,
    /// Embed each generated profile (role, bios, tags, as the worker renders
    /// it) with this local sentence-transformers folder instead of the
    /// synthetic vectors (`scripts/fetch-model.sh` prints one); `--dims` and
    /// `--embedding-noise` are then unused.
    #[arg(long, value_name = "DIR")]
    model_dir: Option<std::path::PathBuf>,
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a non-negative number")),
    }
}

const DOMAINS: &[&str] = &[
    "ocean",
    "soil",
    "grid",
    "battery",
    "solar",
    "hydrogen",
    "carbon",
    "forest",
    "water",
    "textile",
    "food",
    "payments",
    "lending",
    "insurance",
    "genomics",
    "oncology",
    "neuro",
    "vision",
    "speech",
    "robotics",
    "drone",
    "chip",
    "quantum",
    "privacy",
    "security",
    "cloud",
    "gaming",
    "music",
    "education",
    "legal",
    "housing",
    "mobility",
    "logistics",
    "retail",
    "media",
    "sports",
    "travel",
    "space",
    "materials",
    "wildlife",
];
const FACETS: &[&str] = &[
    "tech",
    "analytics",
    "policy",
    "startups",
    "research",
    "design",
    "infrastructure",
    "modelling",
    "hardware",
    "software",
];
const POPULAR: &[&str] = &["AI", "startups", "sustainability", "networking", "open source"];
const NEED_KINDS: &[&str] = &[
    "pilot partners",
    "data sets",
    "seed funding",
    "domain experts",
    "first customers",
    "technical co-founder",
];
const GENERIC_SERVICES: &[&str] = &["mentoring", "hiring", "job opportunities", "fundraising advice"];
const ROLES: &[&str] = &[
    "Founder",
    "Engineer",
    "Researcher",
    "Investor",
    "Product Manager",
    "Designer",
    "Analyst",
];
const COMPANIES: &[&str] = &[
    "Nimbus Labs",
    "Tidal Works",
    "Kiln",
    "Northwind",
    "Helio Group",
    "Brightwater",
    "Ferrous",
    "Acme",
    "Contoso",
    "Initech",
];
const FILLERS: &[&str] = &[
    "Passionate about building things that matter.",
    "Always happy to chat over coffee.",
    "Previously worked in consulting.",
    "Love meeting new people at events like this.",
    "Currently hiring!",
    "",
];

struct Community {
    domain: String,
    topics: Vec<String>,
    needs: Vec<String>,
    offers: Vec<String>,
    /// Whose needs this community offers: `offers` are `needs` of `serves`.
    serves: usize,
    direction: Vec<f64>,
}

struct Attendee {
    community: usize,
    sparse: bool,
    /// What they really look for and offer (listed or not).
    needs: Vec<String>,
    offers: Vec<String>,
    row: ParticipantRow,
}

struct Generated {
    communities: Vec<Community>,
    attendees: Vec<Attendee>,
}

impl Generated {
    fn relevant(&self, u: usize, v: usize) -> bool {
        let (x, y) = (&self.attendees[u], &self.attendees[v]);
        let (a, b) = (x.community, y.community);
        let meets = |need: &[String], offer: &[String]| need.iter().any(|n| offer.contains(n));
        a == b
            || self.communities[a].serves == b
            || self.communities[b].serves == a
            || meets(&x.needs, &y.offers)
            || meets(&y.needs, &x.offers)
    }
}

/// A standard normal number (Box–Muller).
fn gaussian(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The tag as some attendee might write it.
fn spell(rng: &mut StdRng, tag: &str, noise: f64) -> String {
    if !rng.gen_bool(noise) {
        return tag.to_string();
    }
    match rng.gen_range(0..6) {
        0 => title_case(tag),
        1 => tag.to_uppercase(),
        2 => tag.replace(' ', "-"),
        3 => match tag.strip_suffix('y') {
            Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{stem}ies"),
            _ if tag.ends_with('s') => tag.to_string(),
            _ => format!("{tag}s"),
        },
        4 => format!(" {}! ", title_case(tag)),
        _ => {
            // A typo: one letter dropped (no normaliser repairs this).
            let chars: Vec<char> = tag.chars().collect();
            if chars.len() < 4 {
                return tag.to_string();
            }
            let drop = rng.gen_range(1..chars.len() - 1);
            chars
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, c)| *c)
                .collect()
        }
    }
}

fn generate(args: &Args, seed: u64) -> Generated {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = args.communities as usize;
    let dims = args.dims as usize;
    let mut domains: Vec<&str> = DOMAINS.to_vec();
    domains.shuffle(&mut rng);
    // A random permutation without fixed points: community i's needs are
    // offered by community serves_whom[i]... stored the other way round.
    let mut order: Vec<usize> = (0..c).collect();
    order.shuffle(&mut rng);
    let mut provider = vec![0; c];
    for i in 0..c {
        provider[order[i]] = order[(i + 1) % c];
    }
    let mut communities: Vec<Community> = (0..c)
        .map(|i| {
            let domain = domains[i % domains.len()].to_string();
            let mut facets: Vec<&str> = FACETS.to_vec();
            facets.shuffle(&mut rng);
            let topics = facets[..6].iter().map(|f| format!("{domain} {f}")).collect();
            let mut kinds: Vec<&str> = NEED_KINDS.to_vec();
            kinds.shuffle(&mut rng);
            let needs = kinds[..2].iter().map(|k| format!("{domain} {k}")).collect();
            let mut direction: Vec<f64> = (0..dims).map(|_| gaussian(&mut rng)).collect();
            let norm = direction
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE);
            direction.iter_mut().for_each(|x| *x /= norm);
            Community {
                domain,
                topics,
                needs,
                offers: Vec::new(),
                serves: 0,
                direction,
            }
        })
        .collect();
    for i in 0..c {
        let p = provider[i];
        communities[p].offers = communities[i].needs.clone();
        communities[p].serves = i;
    }
    // Communities overlap: two of each one's six topics are a neighbour's
    // (a community it has no planted complement with, when there is one).
    for i in 0..c {
        let unrelated: Vec<usize> = (0..c)
            .filter(|&j| j != i && communities[i].serves != j && communities[j].serves != i)
            .collect();
        let j = match unrelated.as_slice() {
            [] => (i + 1) % c,
            js => js[rng.gen_range(0..js.len())],
        };
        let borrowed: Vec<String> = communities[j].topics[..2].to_vec();
        communities[i].topics.truncate(4);
        communities[i].topics.extend(borrowed);
    }

    let mut attendees = Vec::with_capacity(args.attendees as usize);
    for _ in 0..args.attendees {
        let ci = rng.gen_range(0..c);
        let com = &communities[ci];
        let sparse = rng.gen_bool(args.sparse);
        let noise = args.noise;
        let mut topics = com.topics.clone();
        topics.shuffle(&mut rng);
        let n_topics = if sparse {
            rng.gen_range(0..=1)
        } else {
            rng.gen_range(1..=3)
        };
        let mut interests: Vec<String> = topics[..n_topics].iter().map(|t| spell(&mut rng, t, noise)).collect();
        // What they really need and offer: their community's, sometimes a
        // generic service too. Sparse profiles list none of it.
        let mut needs = com.needs.clone();
        let mut offers = com.offers.clone();
        if rng.gen_bool(0.3) {
            needs.push(GENERIC_SERVICES[rng.gen_range(0..GENERIC_SERVICES.len())].to_string());
        }
        if rng.gen_bool(0.3) {
            offers.push(GENERIC_SERVICES[rng.gen_range(0..GENERIC_SERVICES.len())].to_string());
        }
        let (mut looking_for, mut offering) = (Vec::new(), Vec::new());
        if !sparse {
            if rng.gen_bool(0.5) {
                let tag = POPULAR[rng.gen_range(0..POPULAR.len())];
                interests.push(spell(&mut rng, tag, noise));
            }
            if rng.gen_bool(0.4) {
                let other = &communities[rng.gen_range(0..c)];
                let tag = &other.topics[rng.gen_range(0..6)];
                interests.push(spell(&mut rng, tag, noise));
            }
            for need in &needs {
                if rng.gen_bool(0.5) {
                    looking_for.push(spell(&mut rng, need, noise));
                }
            }
            for offer in &offers {
                if rng.gen_bool(0.5) {
                    offering.push(spell(&mut rng, offer, noise));
                }
            }
        }
        let role = rng.gen_bool(if sparse { 0.6 } else { 0.9 }).then(|| {
            let r = ROLES[rng.gen_range(0..ROLES.len())];
            if rng.gen_bool(0.3) {
                format!("{} {r}", title_case(&com.domain))
            } else {
                r.to_string()
            }
        });
        let bio = rng.gen_bool(if sparse { 0.6 } else { 0.8 }).then(|| {
            let t1 = &topics[rng.gen_range(0..topics.len())];
            let t2 = &topics[rng.gen_range(0..topics.len())];
            let company = COMPANIES[rng.gen_range(0..COMPANIES.len())];
            let filler = FILLERS[rng.gen_range(0..FILLERS.len())];
            match rng.gen_range(0..3) {
                0 => format!("Working on {t1} at {company}. {filler}"),
                1 => format!("{} nerd. Ask me about {t2}! {filler}", title_case(t1)),
                _ => format!("{filler} At {company}, thinking about {t1} and {t2}."),
            }
        });
        let embedding = (dims > 0 && !rng.gen_bool(args.missing_embeddings)).then(|| {
            let scale = args.embedding_noise / (dims as f64).sqrt();
            com.direction
                .iter()
                .map(|d| Some((d + scale * gaussian(&mut rng)) as f32))
                .collect()
        });
        let wrap = |v: Vec<String>| Some(v.into_iter().map(Some).collect());
        attendees.push(Attendee {
            community: ci,
            sparse,
            needs,
            offers,
            row: ParticipantRow {
                user_id: Uuid::from_u128(rng.gen()),
                active: true,
                role,
                bio,
                interests: wrap(interests),
                looking_for: wrap(looking_for),
                offering: wrap(offering),
                embedding,
                ..Default::default()
            },
        });
    }
    Generated { communities, attendees }
}

/// Each attendee's top-K under a scorer (`None`: not comparable), in the
/// product's rank order (ties by user id).
fn lists(people: &[Participant], k: usize, score: impl Fn(usize, usize) -> Option<f32>) -> Vec<Vec<usize>> {
    let index: HashMap<Uuid, usize> = people.iter().enumerate().map(|(i, p)| (p.user_id, i)).collect();
    (0..people.len())
        .map(|u| {
            let mut top = TopK::new(k);
            for (v, other) in people.iter().enumerate() {
                if v != u {
                    if let Some(s) = score(u, v) {
                        top.offer(Entry::new(other.user_id, s));
                    }
                }
            }
            top.into_vec()
                .iter()
                .filter_map(|e| index.get(&e.user).copied())
                .collect()
        })
        .collect()
}

/// A random number in [0, 1) per pair, the same from either side
/// (splitmix64 of the seed and the pair).
fn pair_noise(seed: u64, lo: usize, hi: usize) -> f32 {
    let mut z = seed ^ ((lo as u64) << 32 | hi as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// Sorted ids of a tag list under a given key function (for the baselines).
fn keyed(raw: &Option<Vec<Option<String>>>, ids: &mut HashMap<String, u32>, key: impl Fn(&str) -> String) -> Vec<u32> {
    let mut out: Vec<u32> = raw
        .iter()
        .flatten()
        .flatten()
        .map(|t| key(t))
        .filter(|k| !k.is_empty())
        .map(|k| {
            let next = ids.len() as u32;
            *ids.entry(k).or_insert(next)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn shared(a: &[u32], b: &[u32]) -> usize {
    a.iter().filter(|x| b.binary_search(x).is_ok()).count()
}

fn jaccard(a: &[u32], b: &[u32]) -> f32 {
    let s = shared(a, b);
    let u = a.len() + b.len() - s;
    if u == 0 {
        0.0
    } else {
        s as f32 / u as f32
    }
}

/// The tag key before issue #3: lower case, punctuation runs as one space.
fn old_key(t: &str) -> String {
    t.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one scorer achieved: precision@K overall, for sparse profiles and
/// for full ones, and the share of lists where a stranger displaced a
/// partner with real overlap.
type Metrics = [f64; 4];

/// `overlap[u][v]`: hybrid-v1's "real overlap" (a shared interest or
/// keyword, or a complement either way).
fn metrics(g: &Generated, overlap: &[Vec<bool>], lists: &[Vec<usize>], k: usize) -> Metrics {
    let (mut sum, mut n) = ([0.0; 3], [0usize; 3]);
    let mut displaced = 0usize;
    for (u, list) in lists.iter().enumerate() {
        let hits = list.iter().filter(|v| g.relevant(u, **v)).count();
        let p = hits as f64 / k as f64;
        let group = if g.attendees[u].sparse { 1 } else { 2 };
        for i in [0, group] {
            sum[i] += p;
            n[i] += 1;
        }
        let listed_overlaps = list.iter().filter(|v| overlap[u][**v]).count();
        let available = overlap[u].iter().filter(|o| **o).count();
        if listed_overlaps < list.len() && listed_overlaps < available {
            displaced += 1;
        }
    }
    let mean = |i: usize| if n[i] == 0 { f64::NAN } else { sum[i] / n[i] as f64 };
    [mean(0), mean(1), mean(2), displaced as f64 / lists.len().max(1) as f64]
}

/// Replaces every generated embedding (the missing stay missing) with the
/// local model's vector of the profile's rendered text.
fn embed_with_model(g: &mut Generated, model: &LocalModel) -> Result<(), String> {
    let strings = |v: &Option<Vec<Option<String>>>| v.iter().flatten().flatten().cloned().collect::<Vec<_>>();
    let targets: Vec<usize> = (0..g.attendees.len())
        .filter(|&i| g.attendees[i].row.embedding.is_some())
        .collect();
    let texts: Vec<String> = targets
        .iter()
        .map(|&i| {
            let row = &g.attendees[i].row;
            ProfileText {
                role: row.role.clone(),
                company: row.company.clone(),
                interests: strings(&row.interests),
                looking_for: strings(&row.looking_for),
                offering: strings(&row.offering),
                bio: row.bio.clone(),
            }
            .render()
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = model
        .embed(&refs)
        .map_err(|e| format!("cannot embed the profiles: {e:#}"))?;
    for (&i, v) in targets.iter().zip(vectors) {
        g.attendees[i].row.embedding = Some(v.into_iter().map(Some).collect());
    }
    Ok(())
}

fn evaluate(args: &Args, seed: u64, model: Option<&LocalModel>) -> Result<Vec<(String, Metrics)>, String> {
    let mut g = generate(args, seed);
    if let Some(model) = model {
        embed_with_model(&mut g, model)?;
    }
    let with_embeddings = args.dims > 0 || model.is_some();
    let k = args.k as usize;
    let mut tags = TagInterner::default();
    let with: Vec<Participant> = g
        .attendees
        .iter()
        .map(|a| Participant::from_row(&a.row, None, &mut tags))
        .collect();
    let without: Vec<Participant> = g
        .attendees
        .iter()
        .map(|a| {
            let row = ParticipantRow {
                embedding: None,
                ..a.row.clone()
            };
            Participant::from_row(&row, None, &mut tags)
        })
        .collect();
    let overlap: Vec<Vec<bool>> = without
        .iter()
        .map(|a| {
            without
                .iter()
                .map(|b| a.user_id != b.user_id && hybrid_with_similarity(a, b, None).overlap)
                .collect()
        })
        .collect();
    let (mut exact_ids, mut old_ids) = (HashMap::new(), HashMap::new());
    let exact: Vec<Vec<u32>> = g
        .attendees
        .iter()
        .map(|a| keyed(&a.row.interests, &mut exact_ids, |t| t.trim().to_lowercase()))
        .collect();
    let old: Vec<[Vec<u32>; 3]> = g
        .attendees
        .iter()
        .map(|a| {
            [
                keyed(&a.row.interests, &mut old_ids, old_key),
                keyed(&a.row.looking_for, &mut old_ids, old_key),
                keyed(&a.row.offering, &mut old_ids, old_key),
            ]
        })
        .collect();
    let mut rows = vec![
        (
            "random".to_string(),
            lists(&with, k, |u, v| Some(pair_noise(seed, u.min(v), u.max(v)))),
        ),
        (
            "interest Jaccard, exact tags (case-folded)".to_string(),
            lists(&with, k, |u, v| Some(jaccard(&exact[u], &exact[v]))),
        ),
        (
            "interest Jaccard, hybrid-v1's tag keys".to_string(),
            lists(&with, k, |u, v| Some(jaccard(&with[u].interests, &with[v].interests))),
        ),
    ];
    let previous = |u: usize, v: usize, e: Option<f32>| {
        let (a, b) = (&old[u], &old[v]);
        let wanted = a[1].len() + b[1].len();
        let c = if wanted == 0 {
            0.0
        } else {
            (shared(&a[1], &b[2]) + shared(&b[1], &a[2])) as f32 / wanted as f32
        };
        0.45 * jaccard(&a[0], &b[0]) + 0.45 * c + 0.10 * e.map_or(0.0, |x| x.max(0.0))
    };
    if with_embeddings {
        rows.push((
            "previous hybrid-v1 (0.45·I + 0.45·C + 0.10·E, old tag keys)".to_string(),
            lists(&with, k, |u, v| {
                Some(previous(u, v, cosine(&with[u].embedding, &with[v].embedding)))
            }),
        ));
    } else {
        rows.push((
            "previous hybrid-v1 (0.45·I + 0.45·C, old tag keys)".to_string(),
            lists(&with, k, |u, v| Some(previous(u, v, None))),
        ));
    }
    rows.push((
        "hybrid-v1 without embeddings".to_string(),
        lists(&without, k, |u, v| Algorithm::HybridV1.score(&without[u], &without[v])),
    ));
    if with_embeddings {
        rows.push((
            "hybrid-v1 with embeddings".to_string(),
            lists(&with, k, |u, v| Algorithm::HybridV1.score(&with[u], &with[v])),
        ));
        rows.push((
            "cosine-v1 (embeddings only; none: no match)".to_string(),
            lists(&with, k, |u, v| Algorithm::CosineV1.score(&with[u], &with[v])),
        ));
    }
    Ok(rows
        .into_iter()
        .map(|(name, l)| {
            let p = metrics(&g, &overlap, &l, k);
            (name, p)
        })
        .collect())
}

fn cell(values: &[f64]) -> String {
    let finite: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        return "–".into();
    }
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    if finite.len() == 1 {
        return format!("{mean:.3}");
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{mean:.3} ({lo:.3}–{hi:.3})")
}

fn table(k: u64, results: &[Vec<(String, Metrics)>]) {
    println!("| scorer | precision@{k} | sparse profiles | full profiles | stranger displaced an overlap |");
    println!("| --- | --- | --- | --- | --- |");
    for (i, (name, _)) in results[0].iter().enumerate() {
        let col = |j: usize| cell(&results.iter().map(|r| r[i].1[j]).collect::<Vec<_>>());
        println!("| {name} | {} | {} | {} | {} |", col(0), col(1), col(2), col(3));
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.k >= args.attendees {
        eprintln!("error: --k must be smaller than --attendees");
        return ExitCode::from(2);
    }
    let model = match &args.model_dir {
        Some(dir) => match LocalModel::load(dir) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let seeds: Vec<u64> = (0..args.runs).map(|r| args.seed.wrapping_add(r)).collect();
    println!(
        "{} attendees, {} communities, K = {}, spelling noise {}, sparse profiles {}, {}; seeds {}",
        args.attendees,
        args.communities,
        args.k,
        args.noise,
        args.sparse,
        if let Some(m) = &model {
            format!(
                "embeddings of the rendered profiles by {} ({} missing)",
                m.model_id(),
                args.missing_embeddings
            )
        } else if args.dims == 0 {
            "no embeddings".to_string()
        } else {
            format!(
                "{}-d embeddings (noise {}, {} missing)",
                args.dims, args.embedding_noise, args.missing_embeddings
            )
        },
        seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    );
    println!();
    let mut all = Vec::new();
    for seed in &seeds {
        let r = match evaluate(&args, *seed, model.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if args.per_seed {
            println!("seed {seed}:\n");
            table(args.k, std::slice::from_ref(&r));
            println!();
        }
        all.push(r);
    }
    if args.runs > 1 {
        println!("mean over {} seeds (min–max):\n", args.runs);
    }
    table(args.k, &all);
    ExitCode::SUCCESS
}
