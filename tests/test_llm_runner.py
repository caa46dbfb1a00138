"""`vp run-llm` against a real HTTP server on loopback (tests/llm_server.py) that injects faults.

The server counts the requests it gets per question, so "never double-asks" is checked
where it matters: at the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_server import GARBAGE, LoopbackServer, expected_value, question_key  # noqa: E402

from analysis.llm.bank import parse_bank  # noqa: E402
from analysis.llm.cache import AnswerCache  # noqa: E402
from analysis.llm.client import OpenAIBackend, retry_after_seconds  # noqa: E402
from analysis.llm.prompts import load_prompts  # noqa: E402
from analysis.llm.runner import ask_questions, build_questions, RunStats, run_llm  # noqa: E402
from valueportrait.cli import main as vp  # noqa: E402

PROMPTS = load_prompts()


def make_bank(n_queries: int, tag: str) -> list[dict]:
    """Queries alternating advice (1xxx, with a title) and chat (3xxx, no title), 3 responses each."""
    bank = []
    for q in range(n_queries):
        pid = (1000 if q % 2 == 0 else 3000) + q
        bank.append({
            "portrait_id": pid if q % 3 else str(pid),  # both id types occur in the wild
            "content": {"title": f"{tag} title {pid}" if pid < 3000 else None, "text": f"{tag} text of query {pid}"},
            "outputs": [{"id": j, "content": f"{tag} response {j} to {pid}", "keyed": {"pvq": ["Benevolence"]}}
                        for j in (1, 2, 3)],
        })
    return bank


def backend(server, **kw) -> OpenAIBackend:
    options = dict(timeout=2.0, backoff_base=0.01, backoff_cap=0.05, concurrency=8)
    options.update(kw)
    return OpenAIBackend(server.url, "test-model", **options)


def server_keys(items, model="test-model", persona=None, settings=None) -> dict[tuple, str]:
    """cache key -> the server's question key, for every question of a run."""
    settings = settings if settings is not None else OpenAIBackend("http://x", model).settings()
    return {q.key: question_key(q.messages) for q in build_questions(items, PROMPTS, model, persona, settings)}


def requests_per_question(server) -> dict[str, int]:
    return {k: q.requests for k, q in server.fake.log.items()}


def test_faults_are_retried_recorded_and_never_double_asked(tmp_path):
    items = parse_bank(make_bank(16, "faults"))  # 48 items, 288 questions
    with LoopbackServer(p429=0.12, p500=0.12, pslow=0.06, pgarbage=0.08, retry_after="0", slow_seconds=1.5) as server:
        stats, path = run_llm(items, backend(server, timeout=0.4), "test-model", out_dir=tmp_path,
                              concurrency=8, progress=False)
        log = dict(server.fake.log)
        first_total = server.fake.total
        # a second run finds everything in the cache and asks nothing
        stats2, _ = run_llm(items, backend(server), "test-model", out_dir=tmp_path, concurrency=8, progress=False)
        assert server.fake.total == first_total and stats2.asked == 0 and stats2.cached == 288
    faults = [q.fault for q in log.values()]
    assert len(log) == 288 and all(faults.count(f) >= 5 for f in ("429", "500", "slow", "garbage", "none"))
    expected_requests = {"none": 1, "garbage": 1, "429": 2, "500": 3, "slow": 2}
    assert {k: q.requests for k, q in log.items()} == {k: expected_requests[q.fault] for k, q in log.items()}
    assert stats.asked == 288 and stats.answered == 288 and stats.failed == 0
    assert stats.unparseable == faults.count("garbage") and stats.missing == 0

    keys = server_keys(items)
    records = {(r["portrait_id"], r["option_id"]): r for r in json.loads(path.read_text())}
    raw = [json.loads(line) for line in (tmp_path / "test-model_raw.jsonl").read_text().splitlines()]
    assert len(records) == 48 and len(raw) == 288
    for r in raw:
        key = keys[("test-model", "", r["portrait_id"], r["option_id"], r["variant"], r["prompt_hash"])]
        answer = records[(r["portrait_id"], r["option_id"])]["version_responses"][r["variant"]]
        if log[key].fault == "garbage":
            assert r["raw"] == GARBAGE and r["value"] is None and r["status"] == "unparseable" and answer is None
        else:
            assert r["value"] == expected_value(key) == answer and r["status"] == "answered"
        assert r["attempts"] == expected_requests[log[key].fault] and r["backend"] == "openai"
    for rec in records.values():
        parsed = [v for v in rec["version_responses"].values() if v is not None]
        assert rec["numeric_response"] == (pytest.approx(sum(parsed) / len(parsed)) if parsed else None)
        assert list(rec["version_responses"]) == PROMPTS.variants


def test_retry_after_is_honoured(tmp_path):
    items = parse_bank(make_bank(1, "retry-after"))[:1]  # 6 questions, each first refused with Retry-After: 1
    with LoopbackServer(p429=1.0, retry_after="1") as server:
        start = time.perf_counter()
        stats, _ = run_llm(items, backend(server), "test-model", out_dir=tmp_path, concurrency=6, progress=False)
        elapsed = time.perf_counter() - start
        assert all(q.statuses == ["429", "200"] for q in server.fake.log.values())
    # backoff alone would wait ~0.01 s; only the header explains a full second
    assert elapsed >= 1.0 and stats.answered == 6


def test_retry_after_header_forms():
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_gives_up_keeps_nothing_and_next_run_asks_again(tmp_path, capsys):
    bank_path = tmp_path / "bank.json"
    bank_path.write_text(json.dumps(make_bank(1, "dead")[:1]))
    with LoopbackServer(pdead=1.0) as server:
        status = vp(["run-llm", "--base-url", server.url, "--model", "m", "--item-bank", str(bank_path),
                     "--out", str(tmp_path), "--max-retries", "2", "--timeout", "2", "--no-progress"])
        assert all(q.requests == 3 and q.statuses == ["503"] * 3 for q in server.fake.log.values())
        assert len(server.fake.log) == 3 * 6
    out = capsys.readouterr().out
    assert status == 1 and "without an answer: 18" in out and "failed after retries" in out
    records = json.loads((tmp_path / "m.json").read_text())
    assert all(r["numeric_response"] is None and set(r["version_responses"].values()) == {None} for r in records)
    raw = [json.loads(line) for line in (tmp_path / "m_raw.jsonl").read_text().splitlines()]
    assert all(r["status"] == "missing" and "503" in r["error"] for r in raw)
    with AnswerCache(tmp_path / "llm_cache.sqlite") as cache:
        assert cache.done_keys("m", "") == set()


def test_endpoint_refusing_the_run_is_one_line_error(tmp_path, capsys):
    bank_path = tmp_path / "bank.json"
    bank_path.write_text(json.dumps(make_bank(2, "auth")))
    with LoopbackServer(force_status=401) as server:
        status = vp(["run-llm", "--base-url", server.url, "--model", "m", "--item-bank", str(bank_path),
                     "--out", str(tmp_path), "--no-progress"])
        assert server.fake.total <= 8  # stopped at once, not 36 questions x retries
    assert status == 2 and "HTTP 401" in capsys.readouterr().err


def test_which_400s_name_a_refused_parameter():
    from analysis.llm.client import refused_parameter

    sent = {"model": "m", "messages": [], "seed": 0, "temperature": 0}
    as_json = lambda message, param=None: json.dumps({"error": {"message": message, "param": param}})  # noqa: E731
    assert refused_parameter(as_json("bad request", "seed"), sent) == "seed"
    assert refused_parameter(as_json("Unrecognized request argument: seed"), sent) == "seed"
    assert refused_parameter(as_json("'temperature' is unsupported with this model: use the default"), sent) == "temperature"
    assert refused_parameter("plain text: extra field 'seed' not permitted", sent) == "seed"
    assert refused_parameter(as_json("flagged by the content filter; seedlings are fine"), sent) is None
    assert refused_parameter(as_json("invalid messages"), sent) is None
    assert refused_parameter(as_json("Unrecognized request argument: seed"), {"model": "m"}) is None  # not sent
    with_tokens = {**sent, "max_tokens": 24}
    assert refused_parameter(as_json("'max_tokens' is unsupported by this model: use 'max_completion_tokens'"),
                             with_tokens) == "max_tokens"
    assert refused_parameter(as_json("max_tokens must be at least 1, got 0"), with_tokens) is None


def test_default_request_settings_keep_the_cache_keys_of_earlier_runs():
    """The prompt hash of cached answers includes these settings: the defaults must not change them."""
    assert OpenAIBackend("http://127.0.0.1:1/v1", "m").settings() == {"temperature": 0, "max_tokens": 24, "seed": 0}
    other = OpenAIBackend("http://127.0.0.1:1/v1", "m", seed=None, temperature=None, token_field="max_completion_tokens")
    assert other.settings() == {"temperature": None, "max_tokens": 24, "seed": None, "token_field": "max_completion_tokens"}


@pytest.mark.parametrize("param, option", [("seed", ["--no-seed"]), ("temperature", ["--no-temperature"]),
                                           ("max_tokens", ["--max-tokens-field", "max_completion_tokens"])])
def test_endpoint_refusing_a_parameter_stops_with_a_hint_and_the_option_leaves_it_out(tmp_path, capsys, param, option):
    bank_path = tmp_path / "bank.json"
    bank_path.write_text(json.dumps(make_bank(2, "param")))
    args = ["run-llm", "--model", "m", "--item-bank", str(bank_path), "--out", str(tmp_path), "--no-progress"]
    with LoopbackServer(refuse=(param,)) as server:
        assert vp([*args, "--base-url", server.url]) == 2
        assert server.fake.total <= 8  # stopped at once, not every question with retries
        err = capsys.readouterr().err
        assert f"does not accept `{param}`" in err and " ".join(option) in err and len(err.strip().splitlines()) == 1
        assert vp([*args, "--base-url", server.url, *option]) == 0
        body = server.fake.last_body
    assert param not in body
    sent = {"seed", "temperature", "max_tokens", "max_completion_tokens"} & set(body)
    assert sent == {"seed", "temperature", "max_tokens", "max_completion_tokens"} - {param} - (
        {"max_completion_tokens"} if param != "max_tokens" else set())
    records = json.loads((tmp_path / "m.json").read_text())
    assert len(records) == len(parse_bank(make_bank(2, "param"))) and all(r["numeric_response"] is not None for r in records)


def test_a_400_that_is_not_about_a_parameter_fails_only_its_question(tmp_path, capsys):
    """A content filter's 400 mentioning "seed" in passing does not stop the run."""
    bank_path = tmp_path / "bank.json"
    bank_path.write_text(json.dumps(make_bank(1, "filter")))
    with LoopbackServer(content_filter=True) as server:
        status = vp(["run-llm", "--base-url", server.url, "--model", "m", "--item-bank", str(bank_path),
                     "--out", str(tmp_path), "--no-progress"])
        assert server.fake.total == 3 * 6  # every question asked once: a 400 is not retried, nor the run stopped
    captured = capsys.readouterr()
    assert status == 1 and "without an answer: 18" in captured.out and "does not accept" not in captured.err


def test_request_shape_and_concurrency_bound(tmp_path, monkeypatch):
    items = parse_bank(make_bank(10, "shape"))  # 180 questions
    monkeypatch.setenv("MY_KEY", "sk-test-123")
    with LoopbackServer(latency=0.03) as server:
        bank_path = tmp_path / "bank.json"
        bank_path.write_text(json.dumps(make_bank(10, "shape")))
        status = vp(["run-llm", "--base-url", server.url, "--model", "shape-model", "--item-bank", str(bank_path),
                     "--out", str(tmp_path), "--concurrency", "5", "--api-key-env", "MY_KEY", "--seed", "7",
                     "--no-progress"])
        body, headers = server.fake.last_body, server.fake.last_headers
        assert status == 0 and server.fake.max_in_flight == 5 and server.fake.total == len(items) * 6
    assert body["model"] == "shape-model" and body["temperature"] == 0 and body["seed"] == 7
    assert 0 < body["max_tokens"] <= 64 and body["messages"][0]["role"] == "user"
    assert headers["authorization"] == "Bearer sk-test-123"


@pytest.mark.parametrize("bypass", [False, True])
def test_http_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it(tmp_path, monkeypatch, bypass):
    """HTTP_PROXY carries the requests (the endpoint's host does not even resolve: only the
    proxy can answer), and NO_PROXY naming that host sends them direct (and they fail)."""
    items = parse_bank(make_bank(1, "proxy"))[:1]  # 6 questions
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ALL_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with LoopbackServer() as server:
        monkeypatch.setenv("HTTP_PROXY", server.url.removesuffix("/v1"))
        if bypass:
            monkeypatch.setenv("NO_PROXY", "llm.invalid")
        proxied = OpenAIBackend("http://llm.invalid/v1", "test-model", max_retries=0, timeout=5)
        stats, _ = run_llm(items, proxied, "test-model", out_dir=tmp_path, progress=False)
        if bypass:
            assert server.fake.total == 0 and stats.failed == 6
            assert all(e.startswith("gave up after 1 attempts: connection error") for e in stats.failures.values())
        else:
            assert server.fake.total == 6 and stats.answered == 6
            assert server.fake.last_headers["host"] == "llm.invalid"


def test_limit_then_resume_asks_every_question_once(tmp_path):
    items = parse_bank(make_bank(6, "limit"))  # 108 questions
    with LoopbackServer() as server:
        stats1, _ = run_llm(items, backend(server), "test-model", out_dir=tmp_path, limit=40, progress=False)
        assert server.fake.total == 40 and stats1.missing == 68
        stats2, path = run_llm(items, backend(server), "test-model", out_dir=tmp_path, progress=False)
        assert set(requests_per_question(server).values()) == {1} and len(server.fake.log) == 108
    assert stats2.cached == 40 and stats2.asked == 68 and stats2.missing == 0
    assert all(r["numeric_response"] is not None for r in json.loads(path.read_text()))


def test_cancelled_midway_then_resumed_asks_no_completed_question_again(tmp_path):
    items = parse_bank(make_bank(10, "cancel"))  # 180 questions
    cache_path = tmp_path / "cache.sqlite"
    with LoopbackServer(latency=0.02) as server:
        b = backend(server)
        questions = build_questions(items, PROMPTS, "test-model", None, b.settings())

        async def cancelled_run():
            with AnswerCache(cache_path) as cache:
                stats = RunStats()
                task = asyncio.create_task(ask_questions(questions, b, cache, PROMPTS.labels, concurrency=8,
                                                         stats=stats, progress=False))
                while stats.answered < 30:  # cancel once some answers are stored, whatever the machine's speed
                    await asyncio.sleep(0.005)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await b.aclose()

        asyncio.run(cancelled_run())
        with AnswerCache(cache_path) as cache:
            done = cache.done_keys("test-model", "")
        before = requests_per_question(server)
        assert 0 < len(done) < 180
        stats, _ = run_llm(items, backend(server), "test-model", out_dir=tmp_path, cache_path=cache_path,
                           progress=False)
        after = requests_per_question(server)
    keys = server_keys(items)
    assert all(after[keys[k]] == before[keys[k]] == 1 for k in done)
    assert stats.cached == len(done) and stats.missing == 0
    # questions in flight at the cancel were asked but never stored: asked again, at most once more
    assert max(after.values()) <= 2 and sum(after.values()) - 180 <= 8


def test_killed_process_then_resumed_asks_no_completed_question_again(tmp_path):
    bank = make_bank(20, "kill")  # 360 questions
    bank_path = tmp_path / "bank.json"
    bank_path.write_text(json.dumps(bank))
    items = parse_bank(bank)
    cache_path = tmp_path / "llm_cache.sqlite"
    vp_exe = str(Path(sys.executable).with_name("vp"))
    with LoopbackServer(latency=0.02) as server:
        cmd = [vp_exe, "run-llm", "--base-url", server.url, "--model", "test-model", "--item-bank", str(bank_path),
               "--out", str(tmp_path), "--concurrency", "4", "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stored, deadline = 0, time.time() + 60
        while stored < 60 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                with sqlite3.connect(cache_path, timeout=5) as conn:
                    stored = conn.execute("SELECT count(*) FROM answers").fetchone()[0]
            except sqlite3.Error:
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with AnswerCache(cache_path) as cache:
            done = cache.done_keys("test-model", "")
        before = requests_per_question(server)
        assert 60 <= len(done) < 360, "the run was not killed midway"
        resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        after = requests_per_question(server)
    assert resumed.returncode == 0, resumed.stderr
    keys = server_keys(items)
    assert [k for k in done if after[keys[k]] != before[keys[k]]] == []
    assert len(after) == 360 and json.loads((tmp_path / "test-model.json").read_text())[0]["numeric_response"] is not None


def test_two_runs_sharing_a_cache_never_ask_a_question_twice(tmp_path):
    items = parse_bank(make_bank(8, "shared"))  # 144 questions
    cache_path = tmp_path / "shared.sqlite"
    results = {}
    with LoopbackServer(latency=0.01) as server:
        def one(name):
            results[name] = run_llm(items, backend(server), "test-model", out_dir=tmp_path / name,
                                    cache_path=cache_path, concurrency=6, progress=False)[0]

        threads = [threading.Thread(target=one, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        counts = requests_per_question(server)
    assert len(counts) == 144 and set(counts.values()) == {1}
    a, b = results["a"], results["b"]
    assert a.asked + b.asked == 144 and a.missing == b.missing == 0
    assert (tmp_path / "a" / "test-model.json").read_text() == (tmp_path / "b" / "test-model.json").read_text()


def test_persona_reaches_the_prompt_and_names_the_files(tmp_path):
    bank_path = tmp_path / "bank.json"
    bank_path.write_text(json.dumps(make_bank(2, "persona")))
    persona = "a 65-year-old conservative man"
    with LoopbackServer() as server:
        assert vp(["run-llm", "--base-url", server.url, "--model", "org/Model-1", "--item-bank", str(bank_path),
                   "--out", str(tmp_path), "--no-progress"]) == 0
        assert vp(["run-llm", "--base-url", server.url, "--model", "org/Model-1", "--item-bank", str(bank_path),
                   "--out", str(tmp_path), "--persona", persona, "--no-progress"]) == 0
        prompts = [q.messages[0]["content"] for q in server.fake.log.values()]
    # 36 plain questions and 36 persona questions, all distinct at the server
    assert len(prompts) == 72 and sum(persona in p for p in prompts) == 36
    plain = tmp_path / "org_Model-1.json"
    with_persona = tmp_path / "org_Model-1__persona-a-65-year-old-conservative-man.json"
    assert plain.exists() and with_persona.exists()
    assert all(r["persona"] == persona for r in json.loads(with_persona.read_text()))
    raw = [json.loads(line) for line in with_persona.with_name(with_persona.stem + "_raw.jsonl").read_text().splitlines()]
    assert len(raw) == 36 and all(r["persona"] == persona and r["model"] == "org/Model-1" for r in raw)


def test_claims_of_a_dead_or_expired_run_are_taken_over(tmp_path):
    key = ("m", "", "1001", 1, "v1", "abc")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    with AnswerCache(tmp_path / "c.sqlite") as mine, AnswerCache(tmp_path / "c.sqlite") as other:
        assert other.claim(key) == "mine"
        assert mine.claim(key) == "taken"            # a live run holds it
        other.conn.execute("UPDATE claims SET expires = 0")
        assert mine.claim(key) == "mine"             # its lease ran out
        mine.conn.execute("UPDATE claims SET pid = ?, owner = 'gone', expires = 1e12", (dead_pid,))
        assert other.claim(key) == "mine"            # its owner process is dead
        other.put(key, "like me", 5, 1, 0.1, "openai")
        assert mine.claim(key) == "done"
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:  # runs drop their claims when they end
        assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
