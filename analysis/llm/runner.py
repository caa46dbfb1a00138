"""Ask a model to rate every item of the bank under every prompt variant, with a resumable cache.

Each item is asked under six prompt variants (three wordings, options in both orders);
answers are parsed to 1..6 and averaged per item. Works with any OpenAI-compatible
chat-completions endpoint, or offline with ``--backend simulated`` (a simulated
respondent with a given value profile; it says so in its output).

Outputs, in ``--out`` (default ``data/processed/llm``):

* ``NAME.json``: the release's averaged-outputs shape, one record per item:
  ``{"portrait_id", "option_id", "version_responses": {"v1": 6.0, "v1_reversed": 5.0, ...},
  "numeric_response": mean over the parsed variants}`` (``null`` where a variant's answer
  could not be parsed or was not obtained; ``numeric_response`` is ``null`` when none
  was). With ``--persona`` the records carry ``"persona"``, and NAME gets the suffix
  ``__persona-<slug>``.
* ``NAME_raw.jsonl``: every raw answer (item, variant, prompt hash, raw text, parsed
  value or null, attempts, latency, backend, status).
* the answer cache (``--cache``, default ``llm_cache.sqlite`` in the out folder): a
  killed run started again asks only what it lacks.

NAME is the model name with characters other than letters, digits, ``.``, ``_``, ``-``
replaced by ``_`` (``meta-llama/Llama-3.1-8B`` -> ``meta-llama_Llama-3.1-8B``).
Exit status 0 when every question has an answer, 1 when some could not be obtained
(outputs are still written; run again to ask only those).

``--batch write|submit|collect`` takes the OpenAI Batch API route into the same cache
instead (:mod:`analysis.llm.batch`); ``collect`` exits 3 while a batch is still running
(with ``--no-wait``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from analysis.llm.bank import Item, load_bank
from analysis.llm.cache import AnswerCache
from analysis.llm.client import (RATING_ANSWER_CHARS, EndpointError, OpenAIBackend, Question, Reply,
                                 add_request_arguments, cut_answer, request_options)
from analysis.llm.parse import parse_answer
from analysis.llm.prompts import PromptSet, load_prompts, prompt_hash
from valueportrait import DEFAULT_PROCESSED
from valueportrait import options as opt
from valueportrait.atomic import write_text_atomic
from valueportrait.errors import InputError

DEFAULT_OUT = DEFAULT_PROCESSED / "llm"


def model_slug(model: str) -> str:
    """A file-name-safe form of a model name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip()).strip("._")
    if not slug:
        raise InputError(f"--model: {model!r} gives an empty file name")
    return slug


def persona_slug(persona: str, max_len: int = 40) -> str:
    """``"a 65-year-old conservative man"`` -> ``"a-65-year-old-conservative-man"``.

    Long descriptions are cut and get a short hash, so two personas never share a file.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", persona.lower()).strip("-")
    if len(slug) > max_len or not slug:
        digest = hashlib.sha256(persona.encode("utf-8")).hexdigest()[:8]
        slug = (slug[:max_len].rstrip("-") + "-" + digest).strip("-")
    return slug


def output_name(model: str, persona: str | None) -> str:
    name = model_slug(model)
    return f"{name}__persona-{persona_slug(persona)}" if persona else name


def build_questions(items: list[Item], prompts: PromptSet, model: str, persona: str | None, settings: dict) -> list[Question]:
    """One question per item and variant, in bank order (variants in the prompt file's order)."""
    persona_key = persona or ""
    questions = []
    for item in items:
        for variant in prompts.variants:
            messages = prompts.messages(item, variant, persona)
            h = prompt_hash(messages, settings)
            key = (model, persona_key, item.portrait_id, item.option_id, variant, h)
            questions.append(Question(item, variant, persona_key, messages, h, key))
    return questions


@dataclass
class RunStats:
    questions: int = 0
    cached: int = 0          # answered by an earlier run (found in the cache at the start)
    answered_elsewhere: int = 0  # answered by another process while this run was going
    asked: int = 0           # questions this run sent to the backend
    answered: int = 0        # of those, with an answer stored
    failed: int = 0          # of those, no answer after all retries (not cached)
    unparseable: int = 0     # in the output: answers that could not be read as a phrase
    missing: int = 0         # in the output: questions without an answer
    ask_seconds: float = 0.0
    failures: dict = field(default_factory=dict)  # key -> error
    unparseable_examples: list = field(default_factory=list)  # a few raw texts, to show the user
    cut: int = 0             # in the output: answers longer than the cap, kept cut

    @property
    def rate(self) -> float:
        return self.asked / self.ask_seconds if self.ask_seconds > 0 else float("nan")


async def ask_questions(
    todo: list[Question],
    backend,
    cache: AnswerCache,
    labels,
    *,
    concurrency: int,
    stats: RunStats,
    progress: bool = True,
    desc: str = "asking",
    poll_s: float = 0.2,
) -> None:
    """Ask ``todo`` with at most ``concurrency`` questions in flight; store each answer at once.

    Workers pull from one shared iterator, so each question is asked by one worker only
    (no in-run duplicates). Right before asking, a worker claims the question in the
    cache (:meth:`AnswerCache.claim`): one answered meanwhile is not asked; one claimed
    by another live run is put aside and, once the rest is done, waited for (or taken
    over if that run dies). So runs sharing a cache never ask a question twice.
    """
    pending = iter(todo)
    deferred: list[Question] = []
    bar = tqdm(total=len(todo), desc=desc, unit="q", file=sys.stderr, disable=not progress,
               mininterval=0.5, smoothing=0.1)

    async def ask_one(q: Question) -> None:
        stats.asked += 1
        try:
            reply: Reply = await backend.ask(q)
        except BaseException:
            cache.release(q.key)
            raise
        if reply.error is not None:
            cache.release(q.key)
            stats.failed += 1
            stats.failures[q.key] = reply.error
        else:
            value = parse_answer(reply.text, labels)
            cache.put(q.key, reply.text, value, reply.attempts, reply.latency_s, backend.name)
            stats.answered += 1
        bar.update(1)

    def skip() -> None:
        stats.answered_elsewhere += 1
        bar.update(1)

    async def worker() -> None:
        for q in pending:
            state = cache.claim(q.key)
            if state == "done":
                skip()
            elif state == "taken":
                deferred.append(q)
            else:
                await ask_one(q)
        while deferred:
            q = deferred.pop()
            while (state := cache.claim(q.key)) == "taken":
                await asyncio.sleep(poll_s)
            if state == "done":
                skip()
            else:
                await ask_one(q)

    start = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(concurrency, len(todo)))):
                group.create_task(worker())
    except* EndpointError as eg:
        raise InputError(str(eg.exceptions[0])) from None
    except* (InputError, OSError, sqlite3.Error) as eg:  # a full disk, a broken cache: one line, not a group
        raise eg.exceptions[0] from None
    finally:
        stats.ask_seconds += time.perf_counter() - start
        bar.close()


def collect_outputs(questions: list[Question], items: list[Item], prompts: PromptSet, cache: AnswerCache,
                    model: str, persona: str | None, backend_name: str, stats: RunStats) -> tuple[list, list]:
    """The averaged records (release shape) and the raw records, from the cache.

    Answers are parsed again from their raw text here, so a corrected parser applies to
    cached answers too.
    """
    stored = cache.get_many(model, persona or "")
    by_item: dict[tuple[str, int], dict[str, float | None]] = {item.key: {} for item in items}
    raw_records = []
    for q in questions:
        hit = stored.get(q.key)
        value = parse_answer(hit["raw"], prompts.labels) if hit else None
        if hit and hit["raw"] and "[cut by valueportrait:" in hit["raw"][-60:]:
            stats.cut += 1
        if hit is None:
            status = "missing"
            stats.missing += 1
        elif value is None:
            status = "unparseable"
            stats.unparseable += 1
            if len(stats.unparseable_examples) < 3 and hit["raw"] not in stats.unparseable_examples:
                stats.unparseable_examples.append(cut_answer(hit["raw"], 200))
        else:
            status = "answered"
        by_item[q.item.key][q.variant] = None if value is None else float(value)
        record = {
            "model": model, "persona": persona, "backend": hit["backend"] if hit else backend_name,
            "portrait_id": q.item.portrait_id, "option_id": q.item.option_id, "variant": q.variant,
            "prompt_hash": q.prompt_hash, "raw": hit["raw"] if hit else None, "value": value,
            "status": status, "attempts": hit["attempts"] if hit else None,
            "latency_s": hit["latency_s"] if hit else None,
        }
        if hit is None and q.key in stats.failures:
            record["error"] = stats.failures[q.key]
        raw_records.append(record)
    averaged = []
    for item in items:
        responses = by_item[item.key]
        parsed = [v for v in responses.values() if v is not None]
        record = {
            "portrait_id": item.portrait_id, "option_id": item.option_id,
            "version_responses": responses,
            "numeric_response": sum(parsed) / len(parsed) if parsed else None,
        }
        if persona:
            record["persona"] = persona
        averaged.append(record)
    return averaged, raw_records


def run_llm(
    items: list[Item],
    backend,
    model: str,
    *,
    out_dir: str | Path = DEFAULT_OUT,
    cache_path: str | Path | None = None,
    prompts: PromptSet | None = None,
    persona: str | None = None,
    concurrency: int = 8,
    limit: int | None = None,
    progress: bool = True,
    write: bool = True,
) -> tuple[RunStats, Path | None]:
    """Rate ``items`` with ``backend`` under every variant; return the stats and the JSON written.

    ``limit`` asks at most that many new questions (the rest is left to a later run).
    """
    prompts = prompts or load_prompts()
    persona = persona or None
    out_dir = Path(out_dir)
    cache_path = Path(cache_path) if cache_path else out_dir / "llm_cache.sqlite"
    questions = build_questions(items, prompts, model, persona, backend.settings())
    stats = RunStats(questions=len(questions))
    with AnswerCache(cache_path) as cache:
        done = cache.done_keys(model, persona or "")
        todo = [q for q in questions if q.key not in done]
        stats.cached = len(questions) - len(todo)
        if limit is not None:
            todo = todo[: max(0, limit)]

        async def main() -> None:
            try:
                await ask_questions(todo, backend, cache, prompts.labels, concurrency=concurrency,
                                    stats=stats, progress=progress, desc=model_slug(model))
            finally:
                await backend.aclose()

        if todo:
            asyncio.run(main())
        else:
            asyncio.run(backend.aclose())
        averaged, raw_records = collect_outputs(questions, items, prompts, cache, model, persona, backend.name, stats)
    if not write:
        return stats, None
    return stats, write_outputs(averaged, raw_records, out_dir, output_name(model, persona))


def write_outputs(averaged: list, raw_records: list, out_dir: str | Path, name: str) -> Path:
    """``NAME.json`` (averaged, the release's shape) and ``NAME_raw.jsonl``; returns the JSON's path."""
    json_path = Path(out_dir) / f"{name}.json"
    write_text_atomic(json_path, json.dumps(averaged, ensure_ascii=False, indent=1) + "\n")
    write_text_atomic(json_path.with_name(f"{name}_raw.jsonl"),
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in raw_records))
    return json_path


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="the endpoint's base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1 (not needed with --backend simulated)")
    parser.add_argument("--model", required=True, type=opt.non_empty("model name"), help="model name sent to the endpoint; also names the output files")
    parser.add_argument("--item-bank", required=True, type=Path, help="item_bank.json from `vp analyze`")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--concurrency", type=opt.count(1), default=8, help="questions in flight at once")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key (none needed for a local server)")
    parser.add_argument("--persona", help='describe a person to answer as, e.g. "a 65-year-old conservative man"')
    parser.add_argument("--timeout", type=opt.seconds(), default=60.0, help="seconds per HTTP call")
    parser.add_argument("--max-retries", type=opt.count(0), default=6, help="retries per question on 429/5xx/timeouts")
    parser.add_argument("--max-tokens", type=opt.count(1), default=24, help="token limit per answer")
    parser.add_argument("--cache", type=Path, help="answer cache (SQLite); default OUT/llm_cache.sqlite")
    parser.add_argument("--backend", choices=("openai", "simulated"), default="openai", help="openai: any OpenAI-compatible endpoint; simulated: an offline respondent with --profile")
    parser.add_argument("--profile", type=Path, help='simulated backend: JSON centred PVQ profile, e.g. {"Benevolence": 0.8, "Power": -1.0}')
    parser.add_argument("--persona-profile", type=Path, help="simulated backend: profile to use instead of --profile when --persona is given")
    add_request_arguments(parser, "sampling seed sent to the endpoint; the simulated backend's noise seed")
    parser.add_argument("--noise", type=opt.non_negative(), default=0.3, help="simulated backend: SD of the answer noise (latent scale)")
    parser.add_argument("--variants", type=Path, help="YAML prompt templates replacing analysis/llm/prompts.yaml")
    parser.add_argument("--limit", type=opt.count(0), help="ask at most this many new questions (e.g. to try a model cheaply)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch = parser.add_argument_group("OpenAI Batch API (half price, answered within 24 h; fills the same cache)")
    batch.add_argument("--batch", choices=("write", "submit", "collect"),
                       help="write: the request JSONL for the questions the cache lacks (nothing sent); submit: upload "
                            "it and create the batch; collect: wait for it, download its answers into the cache, "
                            "write the outputs (a later plain run asks only what the batch missed)")
    batch.add_argument("--poll-interval", type=opt.seconds(), default=60.0, help="--batch collect: seconds between status checks")
    batch.add_argument("--no-wait", action="store_true", help="--batch collect: look once instead of waiting for the batch to finish")


def _check_positive(value, name: str, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise InputError(f"command line: {name}: {value!r} must be {'>= 0' if allow_zero else '> 0'}")


def make_backend(args, prompts: PromptSet):
    """The backend the command line asks for (validated)."""
    if args.backend == "simulated":
        from analysis.llm.simulated import SimulatedBackend, load_profile

        if args.profile is None:
            raise InputError("command line: --profile: required with --backend simulated")
        profile = load_profile(args.profile)
        persona_profile = load_profile(args.persona_profile) if args.persona_profile else None
        return SimulatedBackend(profile, prompts.labels, seed=args.seed, noise=args.noise, model=args.model,
                                persona_profile=persona_profile)
    if not args.base_url and getattr(args, "batch", None) != "write":
        raise InputError("command line: --base-url: required with --backend openai")
    if args.base_url and not re.match(r"^https?://", args.base_url):
        raise InputError(f"command line: --base-url: {args.base_url!r} is not an http(s) URL")
    if args.profile or args.persona_profile:
        raise InputError("command line: --profile: only used with --backend simulated")
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    return OpenAIBackend(args.base_url or "http://unused", args.model, api_key, timeout=args.timeout,
                         max_retries=args.max_retries, max_tokens=args.max_tokens, concurrency=args.concurrency,
                         max_answer_chars=RATING_ANSWER_CHARS, **request_options(args))


def run(args) -> int:
    _check_positive(args.concurrency, "--concurrency")
    _check_positive(args.timeout, "--timeout")
    _check_positive(args.max_retries, "--max-retries", allow_zero=True)
    _check_positive(args.max_tokens, "--max-tokens")
    _check_positive(args.limit, "--limit", allow_zero=True)
    _check_positive(args.noise, "--noise", allow_zero=True)
    items = load_bank(args.item_bank)
    if not items:
        raise InputError(f"{args.item_bank}: the bank has no items")
    prompts = load_prompts(args.variants)
    if args.batch:
        _check_positive(args.poll_interval, "--poll-interval")
        if args.backend != "openai":
            raise InputError("command line: --batch: only with --backend openai (the Batch API)")
        from analysis.llm.batch import run_batch

        backend = make_backend(args, prompts)
        questions = build_questions(items, prompts, args.model, args.persona or None, backend.settings())
        api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
        return run_batch(args, items, prompts, backend, questions, output_name(args.model, args.persona or None), api_key)
    backend = make_backend(args, prompts)
    if backend.name == "simulated":
        print(f"backend: simulated respondent (a simulator, not a language model), profile {args.profile}"
              + (f", persona profile {args.persona_profile}" if args.persona_profile else "")
              + f", seed {args.seed}, noise {args.noise}")
    stats, json_path = run_llm(
        items, backend, args.model, out_dir=args.out, cache_path=args.cache, prompts=prompts,
        persona=args.persona, concurrency=args.concurrency, limit=args.limit, progress=not args.no_progress,
    )
    rate = f" ({stats.rate:.1f}/s)" if stats.asked else ""
    print(f"{args.model}{' as ' + repr(args.persona) if args.persona else ''}: {len(items)} items x "
          f"{len(prompts.variants)} variants = {stats.questions} questions; {stats.cached} from the cache, "
          f"{stats.asked} asked{rate}, {stats.answered_elsewhere} answered meanwhile by another run")
    print(f"unparseable answers: {stats.unparseable} (kept raw, value null); "
          f"without an answer: {stats.missing} ({stats.failed} failed after retries this run)")
    for raw in stats.unparseable_examples:
        print(f"  unparseable: {raw!r}")
    if stats.cut:
        print(f"  {stats.cut} answers were longer than {RATING_ANSWER_CHARS:,} characters: kept cut to that length (marked in the text)")
    for key, error in list(stats.failures.items())[:5]:
        print(f"  failed: item {key[2]}/{key[3]} {key[4]}: {error}")
    print(f"wrote {json_path} and {json_path.with_name(json_path.stem + '_raw.jsonl')}")
    if stats.missing:
        print("some questions have no answer yet: run the same command again to ask only those", file=sys.stderr)
        return 1
    return 0
