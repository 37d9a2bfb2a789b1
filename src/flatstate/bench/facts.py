"""``flatstate bench facts``: recall latency, add rate and RSS of the memory facts store.

Each phase runs in a fresh process on a seeded, generated corpus:

1. populate a facts database of each size (``add_many``, 1,000 facts per
   transaction) with facts shaped like an agent's memory: preferences,
   decisions, entities and project facts over a few hundred people, projects
   and tools, with a long tail of ordinary words;
2. recall: ``recalls`` recalls (800-token budget) of prompt-like queries, each
   timed alone: p50, p99 and max. Each recall includes its write (the access
   counters);
3. add: ``adds`` new facts added one at a time, one transaction each, into the
   first size's database, timed in chunks of 500: the median chunk's rate,
   and the overall one;
4. soak: RSS after a settling collection, ``soak_recalls`` recalls, RSS again;
5. hybrid: recall with vectors on (a hashed bag-of-words embedding) at the
   first size, if sqlite-vec can load.

With ``backend="postgres"`` phases 1-3 also run against a PostgreSQL server
(each size in a namespace of its own, removed afterwards), on the same
corpus, queries and sizes, so its figures print beside SQLite's from the
same run; the soak and the hybrid phase stay on SQLite.

Benchmarks print figures; the tests never assert on them.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from flatstate.bench.measure import in_fresh_process, machine, settled_rss_mib

__all__ = [
    "BACKENDS",
    "DSN_ENV",
    "FactsBenchOptions",
    "make_facts",
    "make_queries",
    "run_facts_bench",
]

BACKENDS = ("sqlite", "postgres")
DSN_ENV = "FLATSTATE_BENCH_POSTGRES_DSN"

POPULATE_BATCH = 1000
WARMUP_RECALLS = 200
ADD_CHUNK = 500
EMBED_DIMENSIONS = 64


@dataclass
class FactsBenchOptions:
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000])
    recalls: int = 2000
    adds: int = 5000
    soak_recalls: int = 100_000
    soak_size: int = 10_000
    vector_recalls: int = 200
    seed: int = 7
    directory: str | None = None
    backend: str = "sqlite"
    dsn: str | None = None


# -- the corpus ----------------------------------------------------------------------

_FIRST = (
    "alice bob carol dave erin frank grace heidi ivan judy mallory nia oscar peggy quentin rupert "
    "sybil trent uma victor wendy xavier yara zoe amir bea chen dara emeka farah gus hana ingrid "
    "jonas kai lena marco nadia omar priya ravi sofia tomas ulla vera wei yusuf zara"
).split()
_SYLLABLES = (
    "ka ro mi tan vel or is en dor qua bri sel fen lo mar tis ga pex ul zen cor dri ash vo lin "
    "nor py tho ren sa"
).split()
_TOOLS = (
    "postgres redis kafka kubernetes docker terraform ansible grafana prometheus sentry fly render "
    "vercel netlify github gitlab jenkins circleci nginx caddy sqlite duckdb clickhouse elastic "
    "rabbitmq celery airflow dagster dbt snowflake bigquery s3 cloudflare stripe twilio sendgrid "
    "okta auth0 vault consul nomad pytest ruff mypy poetry uv vite react svelte django fastapi "
    "flask rails spring tokio axum"
).split()
_TOPICS = (
    "auth billing search logging onboarding invoices payments deploys migrations backups alerts "
    "caching metrics tracing permissions exports imports notifications webhooks scheduling "
    "pricing analytics reporting sessions transcripts compaction memory embeddings retries "
    "rate-limits quotas timeouts sharding replication failover staging production releases "
    "changelog roadmap hiring budget security compliance audits"
).split()
_VALUES = (
    "dark light tabs spaces vim emacs vscode zed python rust go typescript mornings evenings "
    "weekly daily short long terse detailed bullet-points prose metric imperial utc cet pst "
    "email slack signal phone async sync"
).split()
_ROLES = "owner lead maintainer reviewer on-call manager designer sponsor architect".split()
_WORDS = (
    "meeting deadline review ticket incident outage customer contract feature request bug fix "
    "patch version upgrade config setting flag experiment rollout rollback dashboard query table "
    "index schema column cluster node region zone latency throughput error warning budget quarter "
    "sprint milestone demo launch partner vendor license invoice report summary note draft plan "
    "proposal design spec document template script job queue worker cron pipeline build test "
    "coverage lint format branch merge commit tag release hotfix cache token secret key "
    "certificate domain endpoint route handler service client server library module package"
).split()

_TEMPLATES: list[tuple[str, str]] = [
    ("preference", "{person} prefers {value} for {topic}"),
    ("preference", "{person} likes {value} when working on {project} {topic}"),
    ("preference", "{person} wants {topic} updates by {value}, not {value2}"),
    ("preference", "For {project}, {person} asked to keep {topic} {value}"),
    ("decision", "We decided to use {tool} for {topic} in {project}"),
    ("decision", "{project} moves its {topic} from {tool} to {tool2} next {word}"),
    ("decision", "Agreed with {person}: {topic} for {project} runs on {tool}"),
    ("decision", "No more {tool} for {project} {topic}; use {tool2} instead"),
    ("entity", "{person} is the {role} of {project}"),
    ("entity", "{person} is {role} for {topic} across {project} and {project2}"),
    ("entity", "The {project} {topic} service belongs to {person}"),
    ("fact", "{project} {topic} runs on {tool} version {n}"),
    ("fact", "The {topic} {word} for {project} is tracked in {tool}"),
    ("fact", "{project} keeps its {topic} {word} in {tool} with a {n}-day retention"),
    ("fact", "{person} reported that {project} {topic} broke after the {tool} {word}"),
    ("other", "Remember to check the {word} {word2} before the {project} {topic} {word3}"),
    ("other", "{person} will send the {topic} {word} for {project} by {value}"),
]


def _pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))


class _Vocabulary:
    def __init__(self, rng: random.Random) -> None:
        self.people = [f"{first} {_pseudo_word(rng).capitalize()}" for first in _FIRST] + [
            f"{rng.choice(_FIRST)} {_pseudo_word(rng).capitalize()}" for _ in range(250)
        ]
        self.projects = sorted({_pseudo_word(rng) for _ in range(600)})
        # Zipf-like weights: a few projects, tools and words are everywhere.
        self.project_w = [1 / (i + 1) ** 0.9 for i in range(len(self.projects))]
        self.word_w = [1 / (i + 1) ** 1.1 for i in range(len(_WORDS))]
        self.tool_w = [1 / (i + 1) ** 0.8 for i in range(len(_TOOLS))]

    def fill(self, rng: random.Random) -> dict[str, str]:
        projects = rng.choices(self.projects, self.project_w, k=2)
        tools = rng.choices(_TOOLS, self.tool_w, k=2)
        words = rng.choices(_WORDS, self.word_w, k=3)
        return {
            "person": rng.choice(self.people),
            "project": projects[0],
            "project2": projects[1],
            "tool": tools[0],
            "tool2": tools[1],
            "topic": rng.choice(_TOPICS),
            "value": rng.choice(_VALUES),
            "value2": rng.choice(_VALUES),
            "role": rng.choice(_ROLES),
            "word": words[0],
            "word2": words[1],
            "word3": words[2],
            "n": str(rng.randint(1, 400)),
        }


def make_facts(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """``count`` fact fields (text, category, entity, key, value, ...), the same for one seed."""
    rng = random.Random(seed)
    vocab = _Vocabulary(random.Random(seed))
    for _ in range(count):
        category, template = rng.choice(_TEMPLATES)
        slots = vocab.fill(rng)
        text = template.format(**slots)
        if rng.random() < 0.6:
            extra = rng.choices(_WORDS, vocab.word_w, k=rng.randint(3, 12))
            text += f", because the {' '.join(extra)} {rng.choice(_TOPICS)} mattered"
        text = text[0].upper() + text[1:] + "."
        yield {
            "text": text,
            "category": category,
            "entity": slots["person"] if category in ("preference", "entity") else slots["project"],
            "key": slots["topic"],
            "value": slots["value"] if category == "preference" else None,
            "importance": round(rng.uniform(0.2, 0.9), 2),
            "decay_class": rng.choice(("stable", "stable", "normal", "permanent")),
            "session_key": f"agent:main:s{rng.randint(1, 2000)}",
        }


_QUESTIONS = (
    "What did {person} decide about {topic} for {project}?",
    "Remind me how {project} handles {topic} and which {tool} {word} we use",
    "Can you check the {word} for {project} {topic} before the {word2} with {person}?",
    "Which tool does {project} use for {topic}? I think it was {tool}",
    "{person} asked about the {topic} {word}; what do we know?",
    "Let's continue the {project} {word} work: fix the {topic} {word2} and update {tool}",
    "Summarize what we know about {person} and {project}",
    "Does {person} prefer {value} or {value2} for {topic}?",
)


def make_queries(count: int, seed: int) -> list[str]:
    """``count`` prompt-like queries over the same vocabulary as :func:`make_facts`."""
    rng = random.Random(seed + 1)
    vocab = _Vocabulary(random.Random(seed))
    return [rng.choice(_QUESTIONS).format(**vocab.fill(rng)) for _ in range(count)]


# -- the phases (each in a fresh process) -----------------------------------------


def _populate(location: str, count: int, seed: int) -> dict[str, Any]:
    from flatstate.facts import NewFact, open_facts

    start = time.perf_counter()
    with open_facts(location) as facts:
        batch: list[NewFact] = []
        for fields in make_facts(count, seed):
            batch.append(NewFact(**fields))
            if len(batch) == POPULATE_BATCH:
                facts.add_many(batch)
                batch.clear()
        if batch:
            facts.add_many(batch)
        if location.startswith("postgresql://"):
            # What autovacuum does within a minute of a bulk load: fresh statistics and a
            # visibility map, so that the figures are those of a settled table.
            facts.vacuum()
        stored = facts.count()
    elapsed = time.perf_counter() - start
    return {"facts": stored, "populate_per_s": round(count / elapsed)}


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {
        "p50_ms": round(at(0.50), 3),
        "p99_ms": round(at(0.99), 3),
        "max_ms": round(ordered[-1] / 1e6, 3),
        "mean_ms": round(statistics.fmean(ordered) / 1e6, 3),
    }


def _recall_latency(location: str, recalls: int, seed: int, vectors: bool) -> dict[str, Any]:
    from flatstate.facts import open_facts
    from flatstate.facts.vectors import HashingEmbedder

    queries = make_queries(recalls + WARMUP_RECALLS, seed)
    embed = HashingEmbedder(EMBED_DIMENSIONS) if vectors else None
    with open_facts(location, embed=embed) as facts:
        embedded = facts.embed_missing() if vectors else 0
        facts_count = facts.count()
        for query in queries[:WARMUP_RECALLS]:
            facts.recall(query)
        samples: list[int] = []
        returned = 0
        for query in queries[WARMUP_RECALLS:]:
            start = time.perf_counter_ns()
            found = facts.recall(query)
            samples.append(time.perf_counter_ns() - start)
            returned += len(found)
    result: dict[str, Any] = {"facts": facts_count, "recalls": recalls, **_percentiles(samples)}
    result["mean_facts"] = round(returned / max(1, recalls), 1)
    if vectors:
        result["dimensions"] = EMBED_DIMENSIONS
        result["embedded"] = embedded
    return result


def _add_rate(location: str, adds: int, seed: int) -> dict[str, Any]:
    from flatstate.facts import open_facts

    # Another seed: new facts, not restatements of the stored ones.
    fresh = list(make_facts(adds, seed + 1000))
    chunk = max(1, min(ADD_CHUNK, adds))
    chunk_rates: list[float] = []
    with open_facts(location) as facts:
        before = facts.count()
        start = time.perf_counter()
        for i in range(0, adds, chunk):
            chunk_start = time.perf_counter()
            part = fresh[i : i + chunk]
            for fields in part:
                facts.add(**fields)
            chunk_rates.append(len(part) / (time.perf_counter() - chunk_start))
        elapsed = time.perf_counter() - start
        after = facts.count()
    return {
        "count": adds,
        "start_facts": before,
        "new_facts": after - before,
        # The median chunk shrugs off a burst of other work on a shared machine.
        "per_s": round(statistics.median(chunk_rates)),
        "overall_per_s": round(adds / elapsed),
        "chunk": chunk,
        "seconds": round(elapsed, 2),
    }


def _soak(state_dir: str, recalls: int, seed: int) -> dict[str, Any]:
    from flatstate.facts import open_facts

    queries = make_queries(2000, seed + 2)
    with open_facts(state_dir) as facts:
        for query in queries:  # warm: page cache, statement cache, allocator pools
            facts.recall(query)
        before = settled_rss_mib()
        start = time.perf_counter()
        for i in range(recalls):
            facts.recall(queries[i % len(queries)])
        elapsed = time.perf_counter() - start
        after = settled_rss_mib()
        count = facts.count()
    return {
        "facts": count,
        "recalls": recalls,
        "seconds": round(elapsed, 1),
        "recalls_per_s": round(recalls / elapsed),
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "rss_growth_mib": round(after - before, 2),
    }


def _vectors_available() -> bool:
    from flatstate.errors import VectorsUnavailable
    from flatstate.facts.vectors import load_sqlite_vec, vector_driver

    try:
        conn = vector_driver().connect(":memory:")
        try:
            load_sqlite_vec(conn)
        finally:
            conn.close()
    except VectorsUnavailable:
        return False
    return True


def _sqlite_version() -> str:
    from flatstate.facts.vectors import fact_driver

    version: str = fact_driver().sqlite_version
    return version


def _postgres_location(dsn: str, run: str, count: int) -> str:
    from urllib.parse import quote, urlencode

    query = urlencode({"namespace": f"bench-facts-{run}-{count}"}, quote_via=quote)
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


def _drop_namespace(location: str) -> None:
    """Remove a benchmark namespace's facts (their counters and vectors go with them)."""
    import psycopg

    from flatstate.backends.postgres import split_dsn

    dsn, ours = split_dsn(location)
    schema = ours.get("schema", "flatstate")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f'"{schema}".facts',)).fetchone() != (None,):
            conn.execute(f'DELETE FROM "{schema}".facts WHERE ns = %s', (ours["namespace"],))


def _backend_phases(
    locations: dict[int, str],
    options: FactsBenchOptions,
    progress: Callable[[str], None],
    label: str,
) -> dict[str, Any]:
    """Populate each size, then time recalls at each."""
    out: dict[str, Any] = {"recall": {}}
    populated: dict[int, dict[str, Any]] = {}
    for n, location in locations.items():
        progress(f"{label}: populating {n:,} facts")
        populated[n] = in_fresh_process(_populate, location, n, options.seed)
    for n in sorted(set(options.sizes)):
        progress(f"{label}: timing {options.recalls:,} recalls at {n:,} facts")
        figures = in_fresh_process(
            _recall_latency, locations[n], options.recalls, options.seed, False
        )
        figures["populate_per_s"] = populated[n]["populate_per_s"]
        out["recall"][str(n)] = figures
    return out


def _add_phase(
    locations: dict[int, str], options: FactsBenchOptions, progress: Callable[[str], None]
) -> dict[str, Any]:
    """The add rate into the first size's store (last: it grows that store)."""
    first = min(options.sizes)
    progress(f"adding {options.adds:,} facts one at a time")
    return in_fresh_process(_add_rate, locations[first], options.adds, options.seed)


def run_facts_bench(
    options: FactsBenchOptions, progress: Callable[[str], None] = lambda phase: None
) -> dict[str, Any]:
    """Run every phase and return the figures (see the module docstring)."""
    if options.backend not in BACKENDS:
        raise ValueError(f"unknown backend {options.backend!r}; choose from {', '.join(BACKENDS)}")
    dsn = options.dsn or os.environ.get(DSN_ENV) if options.backend == "postgres" else None
    if options.backend == "postgres" and not dsn:
        raise ValueError(f"the postgres backend needs a DSN (--dsn or {DSN_ENV})")
    root = options.directory or tempfile.mkdtemp(prefix="flatstate-bench-facts-")
    sizes = sorted(set(options.sizes) | ({options.soak_size} if options.soak_recalls else set()))
    shown = asdict(options)
    if dsn:
        from flatstate.backends.postgres import redact_dsn

        shown["dsn"] = redact_dsn(dsn)
    result: dict[str, Any] = {
        "machine": machine(root, dsn),
        "sqlite": _sqlite_version(),
        "options": shown,
        "directory": root,
    }
    pg_locations: dict[int, str] = {}
    try:
        dirs = {n: os.path.join(root, f"facts-{n}") for n in sizes}
        result.update(_backend_phases(dirs, options, progress, "sqlite"))
        if dsn:
            run = uuid.uuid4().hex[:8]
            pg_locations = {n: _postgres_location(dsn, run, n) for n in sorted(set(options.sizes))}
            result["postgres"] = _backend_phases(pg_locations, options, progress, "postgres")
        if options.soak_recalls > 0:
            progress(f"soak: {options.soak_recalls:,} recalls at {options.soak_size:,} facts")
            result["soak"] = in_fresh_process(
                _soak, dirs[options.soak_size], options.soak_recalls, options.seed
            )
        first = min(options.sizes)
        if options.vector_recalls > 0 and _vectors_available():
            progress(f"timing hybrid recalls at {first:,} facts (embedding them first)")
            vector_dir = os.path.join(root, f"facts-{first}-vec")
            shutil.copytree(dirs[first], vector_dir)
            result["vector_recall"] = in_fresh_process(
                _recall_latency, vector_dir, options.vector_recalls, options.seed, True
            )
        elif options.vector_recalls > 0:
            result["vector_recall_skipped"] = "sqlite-vec cannot load (install flatstate[vec])"
        result["add"] = _add_phase(dirs, options, progress)
        if pg_locations:
            result["postgres"]["add"] = _add_phase(pg_locations, options, progress)
    finally:
        if options.directory is None:
            shutil.rmtree(root, ignore_errors=True)
        for location in pg_locations.values():
            _drop_namespace(location)
    return result
