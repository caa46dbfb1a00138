"""`vp run-llm --batch write|submit|collect` against a loopback fake of OpenAI's Files and Batches endpoints.

The fake (tests/openai_batch_server.py) is written from the API's documentation: request
lines validated as documented, output and error lines in the documented shapes, failed
lines, an expired batch, 429s, a wrong key. The outside figures are the fake's answers
(known per question) and its request counts: after `collect`, a plain run must send the
chat endpoint nothing at all, or exactly the questions the batch missed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_server import LoopbackServer, expected_value, question_key  # noqa: E402
from openai_batch_server import batch_server  # noqa: E402
from test_llm_runner import make_bank  # noqa: E402

from analysis.llm.bank import parse_bank  # noqa: E402
from analysis.llm.batch import custom_id  # noqa: E402
from analysis.llm.client import OpenAIBackend  # noqa: E402
from analysis.llm.prompts import load_prompts  # noqa: E402
from analysis.llm.runner import build_questions  # noqa: E402
from valueportrait.cli import main as vp  # noqa: E402

KEY = "sk-batch-test-9f8e7d6c5b4a"
PROMPTS = load_prompts()


@pytest.fixture
def bank(tmp_path) -> Path:
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(make_bank(4, "batch")))  # 12 items, 72 questions
    return path


def args(bank: Path, out: Path, url: str | None = None, *extra: str) -> list[str]:
    base = ["run-llm", "--model", "gpt-batch", "--item-bank", str(bank), "--out", str(out), "--no-progress",
            "--api-key-env", "VP_TEST_BATCH_KEY", "--concurrency", "4", "--max-retries", "2"]
    return base + (["--base-url", url] if url else []) + list(extra)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("VP_TEST_BATCH_KEY", KEY)


def test_written_lines_have_the_documented_shape_and_run_llms_bodies(tmp_path, bank):
    out = tmp_path / "llm"
    assert vp(args(bank, out, None, "--batch", "write")) == 0  # no --base-url needed: nothing is sent
    lines = [json.loads(line) for line in (out / "gpt-batch.batch.jsonl").read_text().splitlines()]
    items = parse_bank(json.loads(bank.read_text()))
    backend = OpenAIBackend("http://unused", "gpt-batch")
    questions = build_questions(items, PROMPTS, "gpt-batch", None, backend.settings())
    assert len(lines) == len(questions) == 72
    ids = set()
    for line, q in zip(lines, questions):
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert isinstance(line["custom_id"], str) and len(line["custom_id"]) <= 64 and line["custom_id"] not in ids
        ids.add(line["custom_id"])
        pid, oid, variant, order, phash = line["custom_id"].split("/")
        assert (pid, int(oid), variant, phash) == (q.item.portrait_id, q.item.option_id, q.variant, q.prompt_hash)
        assert order == ("lowest_first" if variant.endswith("_reversed") else "highest_first")
        assert set(line["body"]) == {"model", "messages", "max_tokens", "temperature", "seed"}
        assert line["body"]["messages"] == q.messages
    # the bodies are what a plain run sends: the chat fake records the last body it got
    with LoopbackServer() as server:
        assert vp(args(bank, tmp_path / "plain", server.url, "--limit", "1")) == 1
        assert server.fake.last_body == lines[0]["body"]
    state = json.loads((out / "gpt-batch.batch.json").read_text())
    assert state["parts"][0]["lines"] == 72 and state["parts"][0]["batch_id"] is None


def test_collect_fills_the_cache_so_a_plain_run_sends_nothing(tmp_path, bank, capsys):
    out = tmp_path / "llm"
    with batch_server(api_key=KEY, rate_limit_first=2) as server:
        assert vp(args(bank, out, server.url, "--batch", "submit")) == 0  # writes first, then uploads
        assert vp(args(bank, out, server.url, "--batch", "submit")) == 0  # nothing new: never submitted twice
        assert [c for c in server.fake.batch_calls if c[0] == "POST"] == [("POST", "/v1/files")] * 3 + [("POST", "/v1/batches")]
        assert vp(args(bank, out, server.url, "--batch", "collect", "--poll-interval", "0.01")) == 0
        assert server.fake.total == 0  # the chat endpoint was never asked
        assert vp(args(bank, out, server.url)) == 0
        assert server.fake.total == 0  # the plain run found every answer in the cache
        assert set(server.fake.auth_seen) == {f"Bearer {KEY}"}
        statuses = [b["status"] for b in server.fake.batches.values()]
    assert statuses == ["completed"]
    printed = capsys.readouterr().out
    assert "72 answers stored" in printed and "72 from the cache, 0 asked" in printed
    raw = [json.loads(line) for line in (out / "gpt-batch_raw.jsonl").read_text().splitlines()]
    for record in raw:
        messages = PROMPTS.messages(next(it for it in parse_bank(json.loads(bank.read_text()))
                                         if (it.portrait_id, it.option_id) == (record["portrait_id"], record["option_id"])),
                                    record["variant"])
        assert record["value"] == expected_value(question_key(messages)) and record["status"] == "answered"
    # the key is in no file, log, cache or state
    for path in out.iterdir():
        assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in printed


def test_expired_batch_and_failed_lines_are_asked_by_the_next_plain_run(tmp_path, bank, capsys):
    out = tmp_path / "llm"
    with batch_server(api_key=KEY, expire=True, expire_share=0.6, pdead=0.1) as server:
        assert vp(args(bank, out, server.url, "--batch", "submit")) == 0
        assert vp(args(bank, out, server.url, "--batch", "collect", "--poll-interval", "0.01")) == 1
        batch = next(iter(server.fake.batches.values()))
        errors = [json.loads(line) for line in server.fake.files[batch["error_file_id"]]["content"].decode().splitlines()]
    assert batch["status"] == "expired"
    expired = [e for e in errors if e["error"] and e["error"]["code"] == "batch_expired"]
    rejected = [e for e in errors if e["response"] and e["response"]["status_code"] == 400]
    assert len(expired) == 72 - int(72 * 0.6) and len(rejected) >= 1 and len(expired) + len(rejected) == len(errors)
    printed = capsys.readouterr()
    assert f"batch_expired: {len(expired)}" in printed.out and f"HTTP 400: {len(rejected)}" in printed.out
    assert "without --batch to ask" in printed.err
    missed = {e["custom_id"] for e in errors}
    with LoopbackServer() as chat:  # a plain run on an endpoint that answers everything
        assert vp(args(bank, out, chat.url)) == 0
        asked = set(chat.fake.log)  # the fake logs each question it was asked by its key
        assert chat.fake.total == len(missed)
    items = parse_bank(json.loads(bank.read_text()))
    questions = build_questions(items, PROMPTS, "gpt-batch", None, OpenAIBackend("http://x", "gpt-batch").settings())
    assert asked == {question_key(q.messages) for q in questions if custom_id(q) in missed}
    records = json.loads((out / "gpt-batch.json").read_text())
    assert all(r["numeric_response"] is not None for r in records)


def test_a_batch_that_fails_validation_is_reported_and_stores_nothing(tmp_path, bank, capsys):
    out = tmp_path / "llm"
    assert vp(args(bank, out, None, "--batch", "write")) == 0
    # a hand-edited request file (with its record updated): the second line goes to the wrong endpoint
    request_file = out / "gpt-batch.batch.jsonl"
    lines = request_file.read_text().splitlines(keepends=True)
    bad = json.loads(lines[1])
    bad["url"] = "/v1/completions"
    lines[1] = json.dumps(bad) + "\n"
    request_file.write_text("".join(lines))
    state_file = out / "gpt-batch.batch.json"
    state = json.loads(state_file.read_text())
    state["parts"][0]["sha256"] = hashlib.sha256(request_file.read_bytes()).hexdigest()
    state_file.write_text(json.dumps(state))
    with batch_server(api_key=KEY) as server:
        assert vp(args(bank, out, server.url, "--batch", "submit")) == 0
        assert vp(args(bank, out, server.url, "--batch", "collect", "--poll-interval", "0.01")) == 1
    printed = capsys.readouterr().out
    assert "failed: line 2: invalid_request: url '/v1/completions'" in printed and "0 answers stored" in printed


def test_batch_errors_are_one_line(tmp_path, bank, capsys):
    out = tmp_path / "llm"
    with batch_server(api_key="another-key") as server:
        assert vp(args(bank, out, server.url, "--batch", "collect")) == 2
        assert "no batch here" in capsys.readouterr().err
        assert vp(args(bank, out, server.url, "--batch", "submit")) == 2  # the fake refuses our key
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "HTTP 401" in err and KEY not in err
        state = json.loads((out / "gpt-batch.batch.json").read_text())
        assert state["parts"][0]["input_file_id"] is None  # nothing recorded as sent
    with batch_server(api_key=KEY) as server:
        assert vp(args(bank, out, server.url, "--batch", "submit")) == 0
        # the same batch for another model, or a new write while it is pending, is refused
        other = args(bank, out, server.url, "--batch", "collect")
        other[other.index("gpt-batch")] = "gpt-other"
        assert vp(other + ["--max-tokens", "30"]) == 2  # another model has no batch record: a one-line error
        assert vp(args(bank, out, server.url, "--batch", "collect", "--max-tokens", "30")) == 2
        assert "settings: the batch was written for" in capsys.readouterr().err
        assert vp(args(bank, out, None, "--batch", "write")) == 2
        assert "not collected yet" in capsys.readouterr().err
        assert vp(args(bank, out, server.url, "--batch", "collect", "--no-wait")) == 3  # still validating
        assert vp(args(bank, out, server.url, "--batch", "collect", "--poll-interval", "0.01")) == 0
    assert vp(args(bank, out, None, "--batch", "collect", "--backend", "simulated")) == 2
