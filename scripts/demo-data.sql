-- A realistic demo event for `scripts/demo.sh`: one event, code `demo-summit`,
-- with :n attendees (default 300) whose profiles are generated
-- deterministically (every "random" choice is a hash of the attendee's index,
-- so every run produces the same event and the same matches).
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -v n=300 -f scripts/demo-data.sql
--
-- Re-running it replaces the demo event (and only the demo event).
--
-- Profiles are made so that matches mean something: a role decides which
-- needs an attendee looks for and which they offer (founders look for seed
-- funding and first customers, investors offer them and look for deal flow,
-- engineers look for job opportunities that founders and CTOs offer, ...),
-- and biases their interests towards the role's usual topics. Tags are
-- free-form text as an application would store them; the worker normalises
-- case and punctuation, so 'Machine Learning' and 'machine-learning' are the
-- same interest. A few companies are spelled several ways ('Acme Corp',
-- ' acme corp ', 'ACME CORP'): the worker never matches colleagues.
--
-- User ids are md5('demo-summit/attendee/<i>')::uuid, i = 1..n.

\set ON_ERROR_STOP 1
\if :{?n}
\else
\set n 300
\endif

BEGIN;

-- A number in [0, 1) from an attendee index and a purpose: the demo's
-- deterministic "random".
CREATE FUNCTION pg_temp.h(i integer, salt text) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || substr(md5(i::text || '/' || salt), 1, 8))::bit(32)::bigint / 4294967296.0
$$;

-- k distinct items of a pool, chosen by hash; items of `favoured` are about
-- three times as likely to be chosen.
CREATE FUNCTION pg_temp.pick(i integer, salt text, pool text[], k integer,
                             favoured text[] DEFAULT '{}')
RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(t ORDER BY w), '{}')
    FROM (
        SELECT t, pg_temp.h(i, salt || '/' || t) * CASE WHEN t = ANY (favoured) THEN 0.3 ELSE 1 END AS w
        FROM (SELECT DISTINCT unnest(pool || favoured) AS t) AS d
        ORDER BY w
        LIMIT k
    ) AS s
$$;

CREATE FUNCTION pg_temp.one(i integer, salt text, pool text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT pool[1 + floor(pg_temp.h(i, salt) * cardinality(pool))::integer]
$$;

-- Replace a previous demo event (cascades to its attendees, queue and matches).
DELETE FROM events WHERE code = 'demo-summit';

INSERT INTO events (code, name, algorithm, matches_per_user, exclude_same_company)
VALUES ('demo-summit', 'Climate & AI Founders Summit 2026', 'hybrid-v1', 3, true);

-- Roles: how common each is, the topics it favours, what it looks for, what
-- it offers, and where such people work.
CREATE TEMP TABLE demo_roles (
    role       text PRIMARY KEY,
    weight     integer NOT NULL,
    topics     text[] NOT NULL,
    looks      text[] NOT NULL,
    offers     text[] NOT NULL,
    companies  text[] NOT NULL
) ON COMMIT DROP;

INSERT INTO demo_roles VALUES
('Founder', 26,
 '{climate tech,carbon removal,batteries,fundraising,B2B SaaS,hiring}',
 '{seed funding,fundraising advice,first customers,pilot partners,technical co-founder,go-to-market,design feedback}',
 '{deal flow,job opportunities}',
 '{Helio Labs,HelioLabs,helio labs,Carbonloop,Voltaic,Graphene Grid,SoilSense,Kiln Robotics,Tern AI,Brightwater,Ferrous,Permafrost Data,Mycelium Materials,Coral Compute,Driftwood Energy,Lumen Batteries,Nimbus Analytics,Aurora Hydrogen,Verdant Foods,Stratus Carbon}'),
('CTO', 8,
 '{Rust,open source,developer tools,data engineering,machine learning,hiring}',
 '{engineering talent,open source contributors,ML expertise,go-to-market}',
 '{mentoring,job opportunities,technical co-founder}',
 '{Helio Labs,Carbonloop,Voltaic,Graphene Grid,SoilSense,Kiln Robotics,Tern AI,Brightwater,Permafrost Data,Coral Compute,Nimbus Analytics,Aurora Hydrogen}'),
('Investor', 14,
 '{impact investing,climate tech,fundraising,carbon removal,energy storage}',
 '{deal flow,co-investors,climate science expertise,policy insight}',
 '{seed funding,fundraising advice,co-investors,go-to-market,mentoring}',
 '{Evergreen Ventures,Northwind Capital,Tidal Partners,Kelp Fund,Greenfield Seed,Bluestem Capital}'),
('Product Manager', 8,
 '{product design,B2B SaaS,LLMs,grid software,EV charging}',
 '{design feedback,user research,ML expertise,mentoring}',
 '{go-to-market,user research}',
 '{Acme Corp," acme corp ",Globex,Meridian Energy,Tern AI,Voltaic,Nimbus Analytics,Contoso}'),
('ML Engineer', 12,
 '{machine learning,LLMs,computer vision,Python,remote sensing,open source}',
 '{job opportunities,mentoring,research collaboration,climate science expertise}',
 '{ML expertise,engineering talent,technical co-founder,open source contributors}',
 '{Tern AI,Coral Compute,Permafrost Data,Nimbus Analytics,Globex,Initech,ACME CORP,Kiln Robotics}'),
('Climate Scientist', 8,
 '{climate adaptation,remote sensing,carbon accounting,nature-based solutions,climate policy}',
 '{ML expertise,pilot partners,research collaboration,seed funding}',
 '{climate science expertise,research collaboration,mentoring}',
 '{Institute for Climate Modelling,Delft Climate Lab,Coastal Research Institute,Polar Data Centre}'),
('Designer', 6,
 '{product design,developer tools,food tech,circular economy}',
 '{job opportunities,mentoring,technical co-founder}',
 '{design feedback,user research}',
 '{Studio Fjord,Mycelium Materials,Verdant Foods,Acme Corp,"",""}'),
('Software Engineer', 8,
 '{Rust,open source,Python,developer tools,data engineering,grid software}',
 '{job opportunities,mentoring,technical co-founder}',
 '{engineering talent,open source contributors,technical co-founder}',
 '{Initech,Globex,Voltaic,Ferrous,Graphene Grid,Brightwater,Driftwood Energy}'),
('Policy Advisor', 4,
 '{climate policy,ESG reporting,carbon accounting,hydrogen}',
 '{climate science expertise,pilot partners,ML expertise}',
 '{policy insight,mentoring}',
 '{European Climate Office,City of Rotterdam,Green Finance Forum}'),
('Sustainability Lead', 6,
 '{ESG reporting,carbon accounting,circular economy,EV charging,solar}',
 '{policy insight,climate science expertise,ML expertise}',
 '{first customers,pilot partners}',
 '{Acme Corp,Meridian Energy,Umbrella Logistics,Contoso,Nordic Grid,Globex}'),
('PhD Student', 4,
 '{machine learning,batteries,hydrogen,remote sensing,climate adaptation}',
 '{mentoring,job opportunities,research collaboration}',
 '{research collaboration,ML expertise}',
 '{Delft Climate Lab,Institute for Climate Modelling,Polar Data Centre}');

INSERT INTO event_participants
    (event_id, user_id, display_name, company, role, interests, looking_for, offering, bio)
WITH
ev AS (SELECT id FROM events WHERE code = 'demo-summit'),
-- Every role repeated `weight` times: picking an element picks a role with
-- probability proportional to its weight.
wheel AS (SELECT array_agg(role ORDER BY role, g) AS roles
          FROM demo_roles, generate_series(1, weight) AS g),
names AS (
    SELECT '{Amara,Ben,Chloé,Dmitri,Elena,Farid,Grace,Hiro,Ines,Jonas,Kemi,Lars,Maya,Nikhil,Olga,Pablo,Quinn,Rosa,Sven,Tariq,Uma,Victor,Wen,Ximena,Yusuf,Zoe,Aisha,Bruno,Carmen,Diego,Emeka,Freya,Gustavo,Hana,Ivan,Julia,Kofi,Leila,Mateo,Noor}'::text[] AS first,
           '{Okafor,Lindqvist,Martin,Petrov,Rossi,Haddad,Kim,Tanaka,García,Weber,Adeyemi,Nielsen,Cohen,Sharma,Novak,Ruiz,Murphy,Santos,Berg,Rahman,Iyer,Dubois,Chen,López,Demir,Müller,Bello,Costa,Fernández,Moreau,Eze,Johansson,Silva,Sato,Kowalski,Schmidt,Mensah,Farah,Romero,Ali}'::text[] AS last
),
vocab AS (
    SELECT '{climate tech,carbon removal,machine learning,LLMs,batteries,energy storage,solar,grid software,hydrogen,EV charging,sustainable agriculture,food tech,circular economy,ESG reporting,carbon accounting,climate policy,fundraising,hiring,open source,Rust,Python,data engineering,computer vision,remote sensing,robotics,developer tools,product design,B2B SaaS,impact investing,climate adaptation,nature-based solutions}'::text[] AS topics
),
people AS (
    SELECT i,
           -- Unique for up to 1600 attendees.
           names.first[1 + i % 40] || ' ' || names.last[1 + (i / 40 + 17 * i) % 40] AS display_name,
           r.*
    FROM generate_series(1, :n) AS i
    CROSS JOIN names
    CROSS JOIN wheel
    -- The first three attendees (the ones scripts/demo.sh shows) have fixed
    -- roles; everyone else's is drawn by weight.
    JOIN demo_roles AS r
      ON r.role = CASE i WHEN 1 THEN 'Founder' WHEN 2 THEN 'Investor' WHEN 3 THEN 'ML Engineer'
                  ELSE wheel.roles[1 + floor(pg_temp.h(i, 'role') * cardinality(wheel.roles))::integer] END
),
profiles AS (
    SELECT p.i, p.display_name, p.role,
           nullif(pg_temp.one(p.i, 'company', p.companies), '') AS company,
           pg_temp.pick(p.i, 'interests', vocab.topics,
                        2 + floor(pg_temp.h(p.i, 'n-interests') * 4)::integer, p.topics) AS interests,
           -- The demo's featured founder and investor get their role's
           -- typical needs; everyone else draws 1-2 of each.
           CASE p.i WHEN 1 THEN '{seed funding,first customers}'
                    WHEN 2 THEN '{deal flow}'
                    ELSE pg_temp.pick(p.i, 'looks', p.looks, 1 + floor(pg_temp.h(p.i, 'n-looks') * 2)::integer)
           END AS looking_for,
           CASE p.i WHEN 1 THEN '{deal flow,job opportunities}'
                    WHEN 2 THEN '{seed funding,fundraising advice}'
                    ELSE pg_temp.pick(p.i, 'offers', p.offers, 1 + floor(pg_temp.h(p.i, 'n-offers') * 2)::integer)
           END AS offering,
           pg_temp.h(p.i, 'style') AS style,
           floor(pg_temp.h(p.i, 'bio') * 4)::integer AS bio_template
    FROM people AS p CROSS JOIN vocab
)
SELECT ev.id,
       md5('demo-summit/attendee/' || pr.i)::uuid,
       pr.display_name,
       pr.company,
       pr.role,
       -- Tags as different apps and people type them: some all lower case,
       -- some hyphenated. The worker treats them all as the same tag.
       CASE WHEN pr.style < 0.15 THEN ARRAY(SELECT lower(t) FROM unnest(pr.interests) AS t)
            WHEN pr.style < 0.25 THEN ARRAY(SELECT replace(lower(t), ' ', '-') FROM unnest(pr.interests) AS t)
            ELSE pr.interests END,
       pr.looking_for,
       pr.offering,
       CASE pr.bio_template
           WHEN 0 THEN format('%s at %s. Mostly thinking about %s these days.',
                              pr.role, coalesce(trim(pr.company), 'an independent studio'), pr.interests[1])
           WHEN 1 THEN format('Here to find %s; happy to help with %s.',
                              pr.looking_for[1], pr.offering[1])
           WHEN 2 THEN format('%s nerd. %s at %s.',
                              initcap(pr.interests[1]), pr.role, coalesce(trim(pr.company), 'an independent studio'))
           ELSE format('%s at %s. Ask me about %s and %s.',
                       pr.role, coalesce(trim(pr.company), 'an independent studio'),
                       pr.interests[1], pr.interests[2])
       END
FROM profiles AS pr CROSS JOIN ev
ORDER BY pr.i;

-- A few people asked never to be matched with someone (blocked, or already
-- met). Exclusions work in both directions: the featured founder (1) and
-- investor (2) already met, so they never see each other.
INSERT INTO match_exclusions (event_id, user_id, excluded_user_id)
SELECT e.id, md5('demo-summit/attendee/' || a)::uuid, md5('demo-summit/attendee/' || b)::uuid
FROM events AS e,
     (VALUES (1, 2), (3, 17), (42, 43), (100, 7)) AS x (a, b)
WHERE e.code = 'demo-summit' AND a <= :n AND b <= :n;

COMMIT;
