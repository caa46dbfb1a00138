"""Candidate items: ask a model for value-diverse responses to real queries, check them, and write a study.

For each query (an advice thread or a chatbot question) the model writes ``--per-query``
short responses, each leaning on a different Schwartz value; the values are spread
around the circle within a query and rotate across queries, so the bank covers all ten.
Answers must be a JSON list of ``{"value", "response"}`` with exactly the values asked
for; a malformed answer is asked again (a new attempt whose prompt says what was wrong),
up to ``--max-attempts``, and then the query is reported as failed: its responses are
never half-used. Every answer is kept in an SQLite cache, so a rerun asks nothing it
has asked before. ``--backend simulated`` writes template responses offline (and says so).

Every candidate is checked (too short/long, near-duplicate of an earlier response to the
same query, restating the query, refusal) and records its ``intended_value``.

Outputs, for ``--out DIR/NAME.json`` (default ``data/processed/candidates.json``):

* ``NAME.json``: every candidate of every answered query, in the release's tagged shape
  ``[{portrait_id, query_id, source, generator, content: {title, text}, outputs: [{id,
  content, intended_value, value, flags}]}]`` (``flags`` empty when it passed).
* ``NAME_items.json``: the same queries with only the unflagged candidates (flagged ones
  are left out of the study; they stay in ``NAME.json`` with their reasons); queries
  with none left are dropped.
* ``NAME_study.yaml``: a study file for ``vp app --study`` with the queries split into
  rating groups of ``--group-size``, balanced across sources.
* ``NAME_manifest.json``: settings, backend, counts, flags and failed queries.

Portrait ids follow the release: four digits, first digit 1 or 2 for advice, 3 or 4 for
chat. They are given in the order of the queries file, from ``--first-id`` (default 201,
i.e. 1201, 1202, ... then 2201, ... for advice; 3201, ... for chat), so the release's ids
(x001..x066, x901, x902) are never reused and a query keeps its id when queries are
appended to the file. Exit status 0 when every query was answered, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import re
import sqlite3
import string
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from tqdm import tqdm

import instruments
from analysis.llm.cache import AnswerCache
from analysis.llm.candidate_checks import CheckSettings, check_candidates, flag_kind
from analysis.llm.client import EndpointError, OpenAIBackend, Reply, add_request_arguments, request_options
from analysis.llm.prompts import prompt_hash
from valueportrait import DEFAULT_PROCESSED
from valueportrait import options as opt
from valueportrait.atomic import write_text_atomic
from valueportrait.errors import InputError
from valueportrait.files import read_csv_records, read_data_file

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "generate_prompts.yaml"
DEFAULT_OUT = DEFAULT_PROCESSED / "candidates.json"
SOURCES = ("advice", "chat")
#: First digits of portrait ids, per source, in the order they are used.
ID_PREFIXES = {"advice": (1, 2), "chat": (3, 4)}
SIMULATED_MODEL = "simulated-templates"
CACHE_VARIANT = "generate"


# ---------------------------------------------------------------- queries


@dataclass(frozen=True)
class QueryIn:
    query_id: str
    source: str
    title: str | None
    text: str


def _clean(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def load_queries(path: str | Path) -> list[QueryIn]:
    """Read queries from CSV (header row) or JSON (a list of objects).

    Fields: ``query_id`` (unique), ``source`` (``advice`` or ``chat``), optional ``title``,
    ``text``. Other columns are ignored. Errors name the file, the row and the field.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_data_file(path, "json")
        if not isinstance(data, list):
            raise InputError(f"{path}: top level: expected a list of queries, got {type(data).__name__}")
        rows = [(f"[{i}]", r) for i, r in enumerate(data)]
        for where, r in rows:
            if not isinstance(r, dict):
                raise InputError(f"{path}: {where}: expected an object with query_id, source, text")
    else:
        header, records = read_csv_records(path)
        missing = [f for f in ("query_id", "source", "text") if f not in header]
        if missing:
            raise InputError(f"{path}: header: missing column(s) {missing} (has {header})")
        rows = [(f"row {i + 1}", dict(zip(header, fields))) for i, (_, fields) in enumerate(records)]
    if not rows:
        raise InputError(f"{path}: no queries")
    queries, seen = [], {}
    for where, r in rows:
        qid = _clean(r.get("query_id"))
        if qid is None:
            raise InputError(f"{path}: {where}: query_id: missing")
        if qid in seen:
            raise InputError(f"{path}: {where}: query_id: {qid!r} repeats {seen[qid]}")
        seen[qid] = where
        source = _clean(r.get("source"))
        if source not in SOURCES:
            raise InputError(f"{path}: {where}: source: {r.get('source')!r} is not advice or chat")
        text = _clean(r.get("text"))
        if text is None:
            raise InputError(f"{path}: {where}: text: missing or empty")
        title = _clean(r.get("title"))
        if source == "advice" and title is None:
            raise InputError(f"{path}: {where}: title: an advice query needs a title (the thread's subject)")
        if source == "chat" and title is not None:
            # The app and the release tell the sources apart by the title (chat = text only).
            raise InputError(f"{path}: {where}: title: {title!r}: a chat query has no title (put it in the text)")
        queries.append(QueryIn(qid, source, title, text))
    return queries


def assign_portrait_ids(queries: list[QueryIn], first: int = 201) -> list[int]:
    """Four-digit ids in file order: advice 1<first>.., then 2<first>..; chat 3.., then 4...

    Raises InputError when a source has more queries than its two prefixes hold.
    """
    if not 1 <= first <= 999:
        raise InputError(f"command line: --first-id: {first} must be within 1..999")
    per_prefix = 1000 - first
    counters = dict.fromkeys(SOURCES, 0)
    ids = []
    for q in queries:
        k = counters[q.source]
        counters[q.source] += 1
        prefixes = ID_PREFIXES[q.source]
        if k >= per_prefix * len(prefixes):
            raise InputError(f"queries: source {q.source}: more than {per_prefix * len(prefixes)} queries "
                             f"do not fit four-digit ids from --first-id {first}")
        ids.append(prefixes[k // per_prefix] * 1000 + first + k % per_prefix)
    return ids


def assign_values(n_queries: int, per_query: int, values: tuple[str, ...] = instruments.PVQ_VALUES) -> list[tuple[str, ...]]:
    """The values each query's responses are written for, spread and rotated around the circle.

    Query ``i``'s response ``k`` gets value ``(i * N + floor(k * V / N)) mod V`` (``V`` = 10
    values in circle order, ``N`` = per query): within a query the values are evenly spaced
    around the circle (so they differ as much as possible), and across queries the start
    rotates so that every value is used equally often (exactly ``N`` times per 10 queries
    when ``N`` divides 10).
    """
    v = len(values)
    if not 1 <= per_query <= v:
        raise InputError(f"command line: --per-query: {per_query} must be within 1..{v} (one value per response)")
    return [tuple(values[(i * per_query + (k * v) // per_query) % v] for k in range(per_query))
            for i in range(n_queries)]


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class GeneratePrompts:
    system: str
    user: str
    retry: str
    query_advice: str
    query_chat: str
    values: dict[str, str]
    simulated: dict[str, str]
    source: str


def _template(data: dict, key: str, fields: set[str], path: Path) -> str:
    text = data.get(key)
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{path}: {key}: expected a non-empty text")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise InputError(f"{path}: {key}: bad template ({exc}); write a literal brace as {{{{ or }}}}") from None
    if used - fields:
        raise InputError(f"{path}: {key}: unknown placeholder(s) {sorted(used - fields)}; allowed: {sorted(fields)}")
    return text


@lru_cache(maxsize=4)
def load_generate_prompts(path: str | Path | None = None) -> GeneratePrompts:
    """The templates of ``generate_prompts.yaml`` (or a file laid out the same way)."""
    path = Path(path) if path else DEFAULT_PROMPTS
    data = read_data_file(path, "yaml")
    if not isinstance(data, dict):
        raise InputError(f"{path}: top level: expected a mapping")
    query = data.get("query")
    if not isinstance(query, dict):
        raise InputError(f"{path}: query: expected a mapping with advice and chat")
    tables = {}
    for name in ("values", "simulated"):
        table = data.get(name)
        if not isinstance(table, dict) or set(table) != set(instruments.PVQ_VALUES):
            raise InputError(f"{path}: {name}: expected one text for each of {', '.join(instruments.PVQ_VALUES)}")
        tables[name] = {k: " ".join(str(v).split()) for k, v in table.items()}
    return GeneratePrompts(
        system=_template(data, "system", set(), path),
        user=_template(data, "user", {"query", "n", "values", "min_words", "max_words"}, path),
        retry=_template(data, "retry", {"problem"}, path),
        query_advice=_template(query, "advice", {"title", "text"}, Path(f"{path}: query")),
        query_chat=_template(query, "chat", {"text"}, Path(f"{path}: query")),
        values=tables["values"], simulated=tables["simulated"], source=str(path),
    )


def render_query(q: QueryIn, prompts: GeneratePrompts) -> str:
    if q.source == "advice":
        return prompts.query_advice.format(title=q.title or "", text=q.text)
    return prompts.query_chat.format(text=q.text)


def build_messages(q: QueryIn, values: tuple[str, ...], prompts: GeneratePrompts, *, min_words: int, max_words: int,
                   problem: str | None = None) -> list[dict[str, str]]:
    """System + user message asking for one response per value (plus a note after a bad answer)."""
    lines = "\n".join(f"- {v}: {prompts.values[v]}" for v in values)
    user = prompts.user.format(query=render_query(q, prompts), n=len(values), values=lines,
                               min_words=min_words, max_words=max_words)
    if problem:
        user += "\n\n" + prompts.retry.format(problem=problem)
    return [{"role": "system", "content": prompts.system}, {"role": "user", "content": user}]


# ---------------------------------------------------------------- answers


class MalformedAnswer(ValueError):
    """The model's answer is not the JSON list asked for (the message says why, briefly)."""


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def _value_name(name) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip()).lower()


def parse_candidates(text: str | None, values: tuple[str, ...]) -> list[str]:
    """The responses of a valid answer, in the order of ``values``; else :class:`MalformedAnswer`.

    Valid: a JSON list (optionally inside a Markdown code fence, or under one key of an
    object) of objects with a ``value`` naming each requested value exactly once (case,
    spaces and hyphens ignored: ``self-direction`` = ``Self_Direction``) and a non-empty
    string ``response``. Nothing else is accepted: a partial answer is not used.
    """
    if text is None or not text.strip():
        raise MalformedAnswer("the answer was empty")
    body = text.strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedAnswer(f"it was not valid JSON ({exc.msg} at character {exc.pos})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise MalformedAnswer(f"it was a JSON {type(data).__name__}, not a list")
    wanted = {_value_name(v): v for v in values}
    got: dict[str, str] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "value" not in entry or "response" not in entry:
            raise MalformedAnswer(f"entry {i + 1} is not an object with value and response")
        name = _value_name(entry["value"])
        if name not in wanted:
            raise MalformedAnswer(f"entry {i + 1} has value {entry['value']!r}, which was not asked for")
        if wanted[name] in got:
            raise MalformedAnswer(f"value {wanted[name]} appears twice")
        response = entry["response"]
        if not isinstance(response, str) or not response.strip():
            raise MalformedAnswer(f"the response for {wanted[name]} is empty or not text")
        got[wanted[name]] = " ".join(response.split())
    missing = [v for v in values if v not in got]
    if missing:
        raise MalformedAnswer(f"it has no response for {', '.join(missing)}")
    return [got[v] for v in values]


@dataclass(frozen=True)
class GenQuestion:
    """One request. ``messages`` is all :class:`OpenAIBackend` reads; the rest is for us and the simulator."""

    messages: list
    prompt_hash: str
    key: tuple
    query: QueryIn
    values: tuple[str, ...]


class TemplateBackend:
    """Offline stand-in for a model: answers with the fixed template response of each value.

    Not a language model: the responses do not depend on the query. It exists so that
    tests and the demo run without a network.
    """

    name = "simulated"

    def __init__(self, prompts: GeneratePrompts):
        self.prompts = prompts

    def settings(self) -> dict:
        return {"simulated": True, "templates": self.prompts.simulated}

    async def ask(self, q: GenQuestion) -> Reply:
        await asyncio.sleep(0)
        answer = [{"value": v, "response": self.prompts.simulated[v]} for v in q.values]
        return Reply(json.dumps(answer, ensure_ascii=False), 1, 0.0)

    async def aclose(self) -> None:
        return None


@dataclass
class GenerateStats:
    queries: int = 0
    answered: int = 0       # queries with a valid answer
    failed: int = 0
    requests: int = 0       # answers asked of the backend in this run
    from_cache: int = 0     # answers read from the cache instead
    malformed: int = 0      # answers (cached or new) that were not valid
    candidates: int = 0
    flagged: int = 0
    flags: Counter = field(default_factory=Counter)
    failures: dict = field(default_factory=dict)  # query_id -> reason


@dataclass
class QueryResult:
    query: QueryIn
    portrait_id: int
    values: tuple[str, ...]
    responses: list[str] | None = None
    attempts: int = 0
    problems: list = field(default_factory=list)
    error: str | None = None
    flags: list = field(default_factory=list)  # per response: reasons from the quality checks


def _cached_raw(cache: AnswerCache, key: tuple) -> str | None:
    row = cache.conn.execute(
        "SELECT raw FROM answers WHERE model=? AND persona=? AND portrait_id=? AND option_id=? AND variant=? "
        "AND prompt_hash=?", key).fetchone()
    return row[0] if row else None


async def _generate_one(res: QueryResult, backend, cache: AnswerCache, prompts: GeneratePrompts, model: str,
                        settings: dict, *, min_words: int, max_words: int, max_attempts: int,
                        stats: GenerateStats, poll_s: float = 0.2) -> None:
    problem = None
    for attempt in range(max_attempts):
        messages = build_messages(res.query, res.values, prompts, min_words=min_words, max_words=max_words,
                                  problem=problem)
        h = prompt_hash(messages, settings)
        key = (model, "", f"gen:{res.query.query_id}", attempt, CACHE_VARIANT, h)
        q = GenQuestion(messages, h, key, res.query, res.values)
        while (state := cache.claim(key)) == "taken":
            await asyncio.sleep(poll_s)
        if state == "done":
            raw = _cached_raw(cache, key)
            stats.from_cache += 1
        else:
            stats.requests += 1
            try:
                reply = await backend.ask(q)
            except BaseException:
                cache.release(key)
                raise
            if reply.error is not None:
                cache.release(key)
                res.error = f"no answer: {reply.error}"
                res.attempts = attempt + 1
                return
            raw = reply.text
            try:
                parse_candidates(raw, res.values)
                ok = 1.0
            except MalformedAnswer:
                ok = 0.0
            # The value column holds 1 for a usable answer, 0 for a malformed one.
            cache.put(key, raw, ok, reply.attempts, reply.latency_s, backend.name)
        res.attempts = attempt + 1
        try:
            res.responses = parse_candidates(raw, res.values)
            return
        except MalformedAnswer as exc:
            stats.malformed += 1
            problem = str(exc)
            res.problems.append(problem)
    res.error = f"no valid JSON after {max_attempts} attempt(s); last problem: {problem}"


def generate(queries: list[QueryIn], backend, model: str, *, cache_path: str | Path, prompts: GeneratePrompts,
             per_query: int = 5, first_id: int = 201, min_words: int = 20, max_words: int = 80,
             max_attempts: int = 3, concurrency: int = 8, checks: CheckSettings | None = None,
             progress: bool = True) -> tuple[list[QueryResult], GenerateStats]:
    """Ask for every query's candidates (cached), then check them. Returns results in query order."""
    ids = assign_portrait_ids(queries, first_id)
    values = assign_values(len(queries), per_query)
    results = [QueryResult(q, pid, v) for q, pid, v in zip(queries, ids, values)]
    stats = GenerateStats(queries=len(queries))
    settings = {**backend.settings(), "min_words": min_words, "max_words": max_words}

    async def main(cache: AnswerCache) -> None:
        slots = asyncio.Semaphore(max(1, concurrency))
        bar = tqdm(total=len(results), desc="generating", unit="query", file=sys.stderr, disable=not progress)

        async def one(res: QueryResult) -> None:
            async with slots:
                await _generate_one(res, backend, cache, prompts, model, settings, min_words=min_words,
                                    max_words=max_words, max_attempts=max_attempts, stats=stats)
            bar.update(1)

        try:
            async with asyncio.TaskGroup() as group:
                for res in results:
                    group.create_task(one(res))
        except* EndpointError as eg:
            raise InputError(str(eg.exceptions[0])) from None
        except* (InputError, OSError, sqlite3.Error) as eg:  # a full disk, a broken cache: one line, not a group
            raise eg.exceptions[0] from None
        finally:
            bar.close()
            await backend.aclose()

    with AnswerCache(cache_path) as cache:
        asyncio.run(main(cache))

    for res in results:
        if res.responses is None:
            stats.failed += 1
            stats.failures[res.query.query_id] = res.error
            continue
        stats.answered += 1
        query_text = f"{res.query.title or ''}\n{res.query.text}"
        res.flags = check_candidates(query_text, res.responses, checks or CheckSettings())
        stats.candidates += len(res.responses)
        stats.flagged += sum(1 for f in res.flags if f)
        stats.flags.update(flag_kind(r) for f in res.flags for r in f)
    return results, stats


# ---------------------------------------------------------------- outputs


def candidate_entries(results: list[QueryResult], generator: str) -> list[dict]:
    """Every answered query with all its candidates and their flags (release tagged shape)."""
    entries = []
    for res in results:
        if res.responses is None:
            continue
        q = res.query
        entries.append({
            "portrait_id": res.portrait_id, "query_id": q.query_id, "source": q.source, "generator": generator,
            "content": {"title": q.title, "text": q.text},
            "outputs": [{"id": k + 1, "content": text, "intended_value": value, "value": value, "flags": flags}
                        for k, (text, value, flags) in enumerate(zip(res.responses, res.values, res.flags))],
        })
    return entries


def study_items(entries: list[dict]) -> list[dict]:
    """The entries with only their unflagged candidates (option ids kept); empty queries dropped."""
    out = []
    for e in entries:
        kept = [o for o in e["outputs"] if not o["flags"]]
        if kept:
            out.append({**e, "outputs": kept})
    return out


def make_groups(entries: list[dict], group_size: int) -> list[list[int]]:
    """Split queries into ``ceil(n / group_size)`` groups, balanced by size and by source.

    Queries are dealt round-robin, advice first and then chat (continuing the count), so
    group sizes differ by at most one, and so do the numbers of advice (and of chat)
    queries between groups.
    """
    if group_size < 1:
        raise InputError(f"command line: --group-size: {group_size} must be >= 1")
    n_groups = max(1, math.ceil(len(entries) / group_size))
    ordered = [e for s in SOURCES for e in entries if e["source"] == s]
    groups: list[list[int]] = [[] for _ in range(n_groups)]
    for k, e in enumerate(ordered):
        groups[k % n_groups].append(e["portrait_id"])
    return [sorted(g) for g in groups if g]


def study_spec(items: list[dict], groups: list[list[int]], *, study_id: str, title: str, items_file: str,
               target: int) -> dict:
    """A study definition in the shape :func:`collection_app.study.load_study` reads."""
    n_outputs = {e["portrait_id"]: len(e["outputs"]) for e in items}
    smallest = min(sum(n_outputs[p] for p in g) for g in groups)
    checks = [{"id": "ac_pvq", "after": 11}]
    if smallest >= 3:
        checks += [{"id": "ac_item_1", "after": smallest // 3}, {"id": "ac_item_2", "after": (2 * smallest) // 3}]
    else:
        checks.append({"id": "ac_item_1", "after": smallest // 2})
    blob = json.dumps([study_id, groups], sort_keys=True).encode()
    code = "VP" + hashlib.sha256(blob).hexdigest()[:8].upper()
    return {
        "study_id": study_id,
        "title": title,
        "items_file": items_file,
        "groups": [{"id": f"G{i + 1:02d}", "portraits": g, "target": target} for i, g in enumerate(groups)],
        "blocks": ["demographics", "pvq21", "bfi10", "items"],
        "attention_checks": checks,
        "completion": {"code": code, "url": "https://app.prolific.com/submissions/complete?cc={code}"},
        "time_limits": {"active_minutes": 60, "max_minutes": 120},
        "texts": {},
    }


def output_paths(out: Path) -> dict[str, Path]:
    if out.is_dir():  # an existing folder: the files go inside it, under the default name
        out = out / DEFAULT_OUT.name
    stem = out.parent / (out.stem if out.suffix.lower() == ".json" else out.name)
    return {"candidates": out if out.suffix.lower() == ".json" else out.with_name(out.name + ".json"),
            "items": stem.with_name(stem.name + "_items.json"),
            "study": stem.with_name(stem.name + "_study.yaml"),
            "manifest": stem.with_name(stem.name + "_manifest.json")}


def _dump_json(data) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", required=True, type=Path, help="CSV or JSON: query_id, source (advice|chat), title (advice), text")
    parser.add_argument("--base-url", help="the endpoint's base URL, e.g. http://127.0.0.1:8000/v1 (not needed with --backend simulated)")
    parser.add_argument("--model", type=opt.non_empty("model name"), help=f"model name sent to the endpoint (default with --backend simulated: {SIMULATED_MODEL})")
    parser.add_argument("--per-query", type=opt.count(1, 10), default=5, help="responses per query, each for a different value (1..10)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="candidates file; NAME_items.json, NAME_study.yaml, NAME_manifest.json go beside it (an existing folder: candidates.json and the rest go inside it)")
    parser.add_argument("--group-size", type=opt.count(1), default=8, help="queries per rating group in the study file")
    parser.add_argument("--target", type=opt.count(1), default=50, help="participants wanted per group in the study file")
    parser.add_argument("--backend", choices=("openai", "simulated"), default="openai", help="openai: any OpenAI-compatible endpoint; simulated: offline template responses")
    parser.add_argument("--concurrency", type=opt.count(1), default=4, help="queries in flight at once")
    parser.add_argument("--cache", type=Path, help="answer cache (SQLite); default: generate_cache.sqlite beside --out")
    add_request_arguments(parser, "sampling seed sent to the endpoint (a new seed asks everything afresh)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key (none needed for a local server)")
    parser.add_argument("--prompts", type=Path, help="YAML templates replacing analysis/llm/generate_prompts.yaml")
    parser.add_argument("--first-id", type=opt.count(1, 999), default=201, help="portrait ids start at <digit><first-id>, e.g. 1201 and 3201")
    parser.add_argument("--max-attempts", type=opt.count(1), default=3, help="answers asked per query before it is reported as failed (malformed JSON)")
    parser.add_argument("--max-retries", type=opt.count(0), default=6, help="HTTP retries per answer on 429/5xx/timeouts")
    parser.add_argument("--timeout", type=opt.seconds(), default=120.0, help="seconds per HTTP call")
    parser.add_argument("--max-tokens", type=opt.count(1), default=1500, help="token limit per answer")
    parser.add_argument("--min-words", type=opt.count(1), default=20, help="flag responses shorter than this")
    parser.add_argument("--max-words", type=opt.count(1), default=80, help="flag responses longer than this")
    parser.add_argument("--dup-threshold", type=opt.fraction(low_open=True), default=0.6, help="flag a response whose word-set Jaccard similarity to an earlier one is at least this")
    parser.add_argument("--restate-threshold", type=opt.fraction(low_open=True), default=0.5, help="flag a response when at least this share of its word pairs occur in the query")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(ok: bool, option: str, value, rule: str) -> None:
    if not ok:
        raise InputError(f"command line: {option}: {value!r} {rule}")


def make_backend(args, prompts: GeneratePrompts):
    if args.backend == "simulated":
        return TemplateBackend(prompts)
    if not args.base_url:
        raise InputError("command line: --base-url: required with --backend openai")
    if not re.match(r"^https?://", args.base_url):
        raise InputError(f"command line: --base-url: {args.base_url!r} is not an http(s) URL")
    if not args.model:
        raise InputError("command line: --model: required with --backend openai")
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    return OpenAIBackend(args.base_url, args.model, api_key, timeout=args.timeout, max_retries=args.max_retries,
                         max_tokens=args.max_tokens, concurrency=args.concurrency, **request_options(args))


def run(args) -> int:
    _check(args.concurrency >= 1, "--concurrency", args.concurrency, "must be >= 1")
    _check(args.max_attempts >= 1, "--max-attempts", args.max_attempts, "must be >= 1")
    _check(args.max_retries >= 0, "--max-retries", args.max_retries, "must be >= 0")
    _check(args.timeout > 0, "--timeout", args.timeout, "must be > 0")
    _check(args.max_tokens >= 1, "--max-tokens", args.max_tokens, "must be >= 1")
    _check(args.target >= 1, "--target", args.target, "must be >= 1")
    _check(args.group_size >= 1, "--group-size", args.group_size, "must be >= 1")
    _check(1 <= args.min_words <= args.max_words, "--min-words", args.min_words, f"must be within 1..--max-words ({args.max_words})")
    _check(0 < args.dup_threshold <= 1, "--dup-threshold", args.dup_threshold, "must be within (0, 1]")
    _check(0 < args.restate_threshold <= 1, "--restate-threshold", args.restate_threshold, "must be within (0, 1]")
    queries = load_queries(args.queries)
    assign_values(len(queries), args.per_query)  # validates --per-query before anything is asked
    assign_portrait_ids(queries, args.first_id)
    prompts = load_generate_prompts(args.prompts)
    backend = make_backend(args, prompts)
    model = args.model or SIMULATED_MODEL
    paths = output_paths(args.out)
    cache_path = args.cache or paths["candidates"].parent / "generate_cache.sqlite"
    simulated = backend.name == "simulated"
    if simulated:
        print("backend: simulated (fixed template responses written offline, one per value; "
              "not a language model: use them to try the pipeline, not in a real study)")
    checks = CheckSettings(args.min_words, args.max_words, args.dup_threshold, args.restate_threshold)
    results, stats = generate(
        queries, backend, model, cache_path=cache_path, prompts=prompts, per_query=args.per_query,
        first_id=args.first_id, min_words=args.min_words, max_words=args.max_words,
        max_attempts=args.max_attempts, concurrency=args.concurrency, checks=checks,
        progress=not args.no_progress,
    )
    generator = "simulated:templates" if simulated else f"openai:{model}"
    entries = candidate_entries(results, generator)
    items = study_items(entries)
    groups = make_groups(items, args.group_size) if items else []
    stem = paths["candidates"].stem
    study_id = re.sub(r"[^A-Za-z0-9_\-.]+", "-", stem).strip("-.")[:60] or "candidates"
    manifest = {
        "command": "vp generate-items", "queries_file": str(args.queries), "backend": backend.name,
        "note": ("SIMULATED: template responses written offline, not by a language model" if simulated else None),
        "model": model, "base_url": None if simulated else args.base_url, "prompts": prompts.source,
        "settings": {"per_query": args.per_query, "group_size": args.group_size, "seed": args.seed,
                     "max_attempts": args.max_attempts, "first_id": args.first_id, "min_words": args.min_words,
                     "max_words": args.max_words, "dup_threshold": args.dup_threshold,
                     "restate_threshold": args.restate_threshold, "max_tokens": args.max_tokens},
        "counts": {"queries": stats.queries, "answered": stats.answered, "failed": stats.failed,
                   "requests": stats.requests, "from_cache": stats.from_cache, "malformed_answers": stats.malformed,
                   "candidates": stats.candidates, "flagged": stats.flagged,
                   "in_study": sum(len(e["outputs"]) for e in items), "study_queries": len(items),
                   "groups": len(groups)},
        "flags": dict(sorted(stats.flags.items())),
        "failed_queries": stats.failures,
        "query_ids": {r.query.query_id: r.portrait_id for r in results},
    }
    write_text_atomic(paths["candidates"], _dump_json(entries))
    written = [paths["candidates"]]
    if items:
        spec = study_spec(items, groups, study_id=study_id,
                          title=f"Candidate items from {Path(args.queries).name}" + (" (SIMULATED)" if simulated else ""),
                          items_file=paths["items"].name, target=args.target)
        header = ("# Study file written by `vp generate-items`; edit before use (completion code, targets, texts).\n"
                  + ("# SIMULATED: the responses are offline templates, not written by a language model.\n" if simulated else "")
                  + "# Flagged candidates are left out of the items file (see the candidates file for their reasons).\n")
        write_text_atomic(paths["items"], _dump_json(items))
        write_text_atomic(paths["study"], header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100))
        written += [paths["items"], paths["study"]]
    else:
        # A study from an earlier run would no longer match the candidates file.
        for stale in (paths["items"], paths["study"]):
            stale.unlink(missing_ok=True)
    write_text_atomic(paths["manifest"], _dump_json(manifest))
    written.append(paths["manifest"])

    print(f"{stats.queries} queries: {stats.answered} answered, {stats.failed} failed; "
          f"{stats.requests} answers asked, {stats.from_cache} from the cache, {stats.malformed} malformed")
    print(f"{stats.candidates} candidates, {stats.flagged} flagged"
          + (": " + ", ".join(f"{k} {v}" for k, v in sorted(stats.flags.items())) if stats.flags else ""))
    for qid, why in list(stats.failures.items())[:10]:
        print(f"  failed: query {qid}: {why}")
    if items:
        print(f"study: {len(items)} queries, {manifest['counts']['in_study']} unflagged items in {len(groups)} group(s) "
              f"of up to {args.group_size} queries")
    else:
        print("study: no unflagged candidates, so no study file was written", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    return 1 if stats.failed or not items else 0
