"""`vp generate-items`: candidate responses from queries, checked, grouped into a study the app loads.

The model side runs against the loopback OpenAI-compatible server (tests/llm_server.py)
with a handler that writes JSON answers and misbehaves on cue (markers in the query
text); it counts requests, so "a rerun asks nothing" is checked at the endpoint.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jaccard as scipy_jaccard

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_server import FakeLLM, LoopbackServer, QuestionLog, question_key

import instruments
from analysis.llm.candidate_checks import (
    CheckSettings,
    bigram_containment,
    check_candidates,
    jaccard_matrix,
    refusal_phrase,
    words,
)
from analysis.llm.generate import (
    MalformedAnswer,
    QueryIn,
    assign_portrait_ids,
    assign_values,
    load_queries,
    make_groups,
    parse_candidates,
)
from collection_app import store
from collection_app.study import load_items, load_study
from valueportrait.cli import main as vp
from valueportrait.storage import open_db

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_QUERIES = ROOT / "instruments" / "examples" / "queries.csv"
REFUSAL = "I'm sorry, but I can't help with choosing sides in a personal dispute like this one, as an AI."


def value_text(value: str, salt: str = "") -> str:
    """A 42-word response whose words are all its own (no overlap with another value's)."""
    stem = value.lower().replace("_", "")
    return f"{value} view{salt}: " + " ".join(f"{stem}{salt}w{i}" for i in range(40))


class GeneratorFake(FakeLLM):
    """Answers with the JSON list asked for; query-text markers make it misbehave.

    MALFORMED_ONCE: prose first, valid JSON once the prompt carries the retry note.
    MALFORMED_ALWAYS: a list that always lacks the last value.
    REFUSE: the second response is a refusal. DUPLICATE: the third copies the second.
    FENCED: the valid list inside a Markdown code fence.
    """

    async def chat(self, body, headers=None):
        self.total += 1
        self.last_body = body
        messages = body["messages"]
        log = self.log.setdefault(question_key(messages), QuestionLog("none", messages=messages))
        log.requests += 1
        user = messages[-1]["content"]
        values = re.findall(r"^- (\w+):", user, re.MULTILINE)
        answer = [{"value": v, "response": value_text(v)} for v in values]
        if "REFUSE" in user:
            answer[1]["response"] = REFUSAL
        if "DUPLICATE" in user:
            answer[2]["response"] = answer[1]["response"].replace("w39", "extra")
        text = json.dumps(answer)
        if "MALFORMED_ONCE" in user and "could not be used" not in user:
            text = "Here are some replies you could give: first, be kind; second, be bold."
        if "MALFORMED_ALWAYS" in user:
            text = json.dumps(answer[:-1])
        if "FENCED" in user:
            text = "```json\n" + text + "\n```"
        return 200, self._completion(body, text), {}


@pytest.fixture
def gen_server():
    server = LoopbackServer()
    server.fake = GeneratorFake()  # the connection handler reads server.fake per connection
    with server:
        yield server


def write_queries(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def q(qid, source, text, title=None):
    return {"query_id": qid, "source": source, "title": title if title or source == "chat" else f"Title of {qid}",
            "text": text}


def generate(server, queries: Path, out: Path, *extra) -> int:
    return vp(["generate-items", "--queries", str(queries), "--base-url", server.url, "--model", "gen-model",
               "--out", str(out), "--no-progress", "--max-retries", "0", "--timeout", "5", *extra])


# ---------------------------------------------------------------- against the loopback server


def test_valid_answers_make_a_study_that_loads(gen_server, tmp_path):
    rows = [q("a1", "advice", "How do I tell my friend I can't lend money?"), q("a2", "advice", "FENCED Should I move?"),
            q("c1", "chat", "Is honesty always best?"), q("c2", "chat", "What makes a good life?")]
    out = tmp_path / "cand.json"
    assert generate(gen_server, write_queries(tmp_path / "q.json", rows), out, "--group-size", "2") == 0
    assert gen_server.fake.total == 4  # one answer per query, none retried
    entries = json.loads(out.read_text())
    assert [e["portrait_id"] for e in entries] == [1201, 1202, 3201, 3202]
    first = entries[0]["outputs"]
    # Query 0 of N = 5: every second value around the circle, starting at Universalism.
    assert [o["intended_value"] for o in first] == ["Universalism", "Tradition", "Security", "Achievement", "Stimulation"]
    assert [o["intended_value"] for o in entries[1]["outputs"]] == ["Power", "Hedonism", "Self_Direction", "Benevolence",
                                                                     "Conformity"]
    assert first[0]["content"] == value_text("Universalism") and first[0]["flags"] == []
    # The request carried the generation settings, and named each value once.
    assert gen_server.fake.last_body["max_tokens"] == 1500 and gen_server.fake.last_body["model"] == "gen-model"
    study = load_study(tmp_path / "cand_study.yaml")
    assert len(study.items) == 20
    groups = {g.id: g.portraits for g in study.spec.groups}
    # Two groups of two queries, each with one advice (1xxx) and one chat (3xxx) query.
    assert groups == {"G01": ("1201", "3201"), "G02": ("1202", "3202")}
    assert {i.value for i in study.items if i.portrait_id == "1201"} == {first[k]["value"] for k in range(5)}
    manifest = json.loads((tmp_path / "cand_manifest.json").read_text())
    assert manifest["counts"]["requests"] == 4 and manifest["backend"] == "openai" and manifest["note"] is None


def test_malformed_once_is_retried_with_a_note(gen_server, tmp_path):
    out = tmp_path / "cand.json"
    rows = [q("c1", "chat", "MALFORMED_ONCE Is it fine to skip a family dinner?")]
    assert generate(gen_server, write_queries(tmp_path / "q.json", rows), out) == 0
    logs = list(gen_server.fake.log.values())
    assert gen_server.fake.total == 2 and len(logs) == 2  # two different prompts, one each
    retry_prompt = logs[1].messages[-1]["content"]
    assert "could not be used: it was not valid JSON" in retry_prompt
    entries = json.loads(out.read_text())
    assert len(entries[0]["outputs"]) == 5
    assert json.loads((tmp_path / "cand_manifest.json").read_text())["counts"]["malformed_answers"] == 1


def test_malformed_always_fails_the_query_and_nothing_is_half_used(gen_server, tmp_path, capsys):
    out = tmp_path / "cand.json"
    rows = [q("bad", "chat", "MALFORMED_ALWAYS Should I forgive a friend?"), q("good", "chat", "Is travel worth it?")]
    assert generate(gen_server, write_queries(tmp_path / "q.json", rows), out, "--max-attempts", "3") == 1
    assert gen_server.fake.total == 1 + 3
    entries = json.loads(out.read_text())
    assert [e["query_id"] for e in entries] == ["good"]
    assert [e["query_id"] for e in json.loads((tmp_path / "cand_items.json").read_text())] == ["good"]
    manifest = json.loads((tmp_path / "cand_manifest.json").read_text())
    assert "no valid JSON after 3 attempt(s)" in manifest["failed_queries"]["bad"]
    assert "it has no response for Stimulation" in manifest["failed_queries"]["bad"]
    # The failed query keeps its id (3201), so a later success does not renumber the others.
    assert manifest["query_ids"] == {"bad": 3201, "good": 3202}
    assert "failed: query bad" in capsys.readouterr().out
    # Rerun: every attempt is cached (temperature 0, the same prompts), so nothing is asked.
    assert generate(gen_server, write_queries(tmp_path / "q.json", rows), out, "--max-attempts", "3") == 1
    assert gen_server.fake.total == 4


def test_refusals_and_duplicates_are_flagged_and_left_out_of_the_study(gen_server, tmp_path, capsys):
    out = tmp_path / "cand.json"
    rows = [q("r", "advice", "REFUSE My brother and I argue about our father's house."),
            q("d", "chat", "DUPLICATE Should people eat less meat?")]
    assert generate(gen_server, write_queries(tmp_path / "q.json", rows), out) == 0
    entries = {e["query_id"]: e for e in json.loads(out.read_text())}
    r_flags = [o["flags"] for o in entries["r"]["outputs"]]
    assert [bool(f) for f in r_flags] == [False, True, False, False, False]
    assert any(f.startswith("refusal:") for f in r_flags[1]) and any(f.startswith("too_short") for f in r_flags[1])
    d_flags = [o["flags"] for o in entries["d"]["outputs"]]
    # 41 shared of 43 distinct words: jaccard 41/43 = 0.95; the later twin (option 3) is flagged.
    assert d_flags[2] == [f"near_duplicate: of option 2 (jaccard {41 / 43:.2f})"]
    assert [bool(f) for f in d_flags] == [False, False, True, False, False]
    items = {e["query_id"]: [o["id"] for o in e["outputs"]] for e in json.loads((tmp_path / "cand_items.json").read_text())}
    assert items == {"r": [1, 3, 4, 5], "d": [1, 2, 4, 5]}
    study = load_study(tmp_path / "cand_study.yaml")
    assert len(study.items) == 8
    # The app's store takes the study as it is (option ids with gaps, sources from the titles).
    with open_db(tmp_path / "study.db") as db:
        store.sync_study(db, study)
        rows = db.conn.execute("SELECT portrait_id, option_id, source FROM items ORDER BY 1, 2").fetchall()
    assert [tuple(r) for r in rows] == [("1201", k, "advice") for k in (1, 3, 4, 5)] + [("3201", k, "chat") for k in (1, 2, 4, 5)]
    printed = capsys.readouterr().out
    assert "10 candidates, 2 flagged: near_duplicate 1, refusal 1, too_short 1" in printed


def test_the_cache_makes_a_rerun_ask_nothing(gen_server, tmp_path, capsys):
    out = tmp_path / "cand.json"
    queries = write_queries(tmp_path / "q.json", [q("a", "advice", "MALFORMED_ONCE Should I quit?"),
                                                  q("b", "chat", "Is money important?")])
    assert generate(gen_server, queries, out) == 0
    assert gen_server.fake.total == 3
    first = out.read_text()
    capsys.readouterr()
    assert generate(gen_server, queries, out) == 0
    assert gen_server.fake.total == 3
    assert out.read_text() == first
    assert "0 answers asked, 3 from the cache" in capsys.readouterr().out
    # A different seed is a different request: asked afresh.
    assert generate(gen_server, queries, out, "--seed", "7") == 0
    assert gen_server.fake.total == 6


def test_an_unanswered_query_is_not_cached_and_is_asked_again(tmp_path):
    queries = write_queries(tmp_path / "q.json", [q("a", "chat", "Hello?")])
    with LoopbackServer(force_status=503) as server:
        assert generate(server, queries, tmp_path / "c.json") == 1
        assert generate(server, queries, tmp_path / "c.json") == 1
        assert server.fake.total == 2  # --max-retries 0: one request per run, the failure was not cached
    manifest = json.loads((tmp_path / "c_manifest.json").read_text())
    assert manifest["failed_queries"]["a"].startswith("no answer: gave up after 1 attempts: HTTP 503")
    assert json.loads((tmp_path / "c.json").read_text()) == [] and not (tmp_path / "c_study.yaml").exists()


def test_a_refused_endpoint_is_an_input_error(tmp_path, capsys):
    with LoopbackServer(force_status=401) as server:
        status = generate(server, write_queries(tmp_path / "q.json", [q("a", "chat", "Hello?")]), tmp_path / "c.json")
    assert status == 2
    assert "HTTP 401" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


# ---------------------------------------------------------------- offline


def test_simulated_backend_offline_on_the_example_queries(tmp_path, capsys):
    simulated_example(tmp_path, capsys)


def simulated_example(tmp_path, capsys) -> Path:
    """Run the simulated backend on the example queries, check its outputs; the study file's path."""
    out = tmp_path / "example.json"
    args = ["generate-items", "--queries", str(EXAMPLE_QUERIES), "--backend", "simulated", "--out", str(out),
            "--no-progress", "--group-size", "4"]
    assert vp(args) == 0
    printed = capsys.readouterr().out
    assert "backend: simulated" in printed and "not a language model" in printed
    manifest = json.loads((tmp_path / "example_manifest.json").read_text())
    assert manifest["backend"] == "simulated" and manifest["note"].startswith("SIMULATED")
    entries = json.loads(out.read_text())
    assert {e["generator"] for e in entries} == {"simulated:templates"}
    assert len(entries) == 8 and sum(len(e["outputs"]) for e in entries) == 40
    # Eight queries x five values, rotating around the circle: each value 4 times.
    assert Counter(o["intended_value"] for e in entries for o in e["outputs"]) == dict.fromkeys(instruments.PVQ_VALUES, 4)
    assert manifest["counts"]["flagged"] == 0
    study = load_study(tmp_path / "example_study.yaml")
    assert "SIMULATED" in study.spec.title
    assert len(study.items) == 40 and len(load_items(tmp_path / "example_items.json")) == 8
    for group in study.spec.groups:
        assert sorted(p[0] for p in group.portraits) == ["1", "1", "3", "3"]
    # The rerun reads the cache.
    assert vp(args) == 0
    assert "0 answers asked, 8 from the cache" in capsys.readouterr().out
    return tmp_path / "example_study.yaml"


def test_generated_study_runs_in_the_app(tmp_path, monkeypatch, capsys):
    """The app itself (Streamlit's AppTest, no browser) serves the generated study's first rating page."""
    from streamlit.testing.v1 import AppTest

    study_path = simulated_example(tmp_path, capsys)
    monkeypatch.setenv("VP_DB", str(tmp_path / "study.db"))
    monkeypatch.setenv("VP_STUDY", str(study_path))
    monkeypatch.delenv("VP_ADMIN_PASSWORD", raising=False)
    at = AppTest.from_file(str(ROOT / "collection_app" / "app.py"), default_timeout=30)
    at.query_params.update(PROLIFIC_PID="5f0c1e2d3b4a5968778695a4", STUDY_ID="60aa11bb22cc33dd44ee55ff",
                           SESSION_ID="abc123")
    at = at.run()
    assert not at.exception
    at.button(key="consent-yes").click().run()
    at.button(key="start").click().run()
    assert not at.exception
    with open_db(tmp_path / "study.db") as db:
        assert db.conn.execute("SELECT study_id FROM studies").fetchall()[0][0] == "example"
        assert db.count("items") == 40
        assert db.count("participations") == 1


# ---------------------------------------------------------------- input files


@pytest.mark.parametrize("content, name, message", [
    ("query_id,source,title,text\nq1,forum,,Hi there\n", "q.csv", "q.csv: row 1: source: 'forum' is not advice or chat"),
    ("query_id,source,title,text\nq1,chat,,Hi\nq1,chat,,Again\n", "q.csv", "q.csv: row 2: query_id: 'q1' repeats row 1"),
    ("query_id,source,title,text\nq1,chat,, \n", "q.csv", "q.csv: row 1: text: missing or empty"),
    ("query_id,source,text\nq1,advice,Help me\n", "q.csv", "q.csv: row 1: title: an advice query needs a title"),
    ("query_id,source,title,text\nq1,chat,Hey,Help me\n", "q.csv", "q.csv: row 1: title: 'Hey': a chat query has no title"),
    ("id,source,text\nq1,chat,Hi\n", "q.csv", "q.csv: header: missing column(s) ['query_id']"),
    ("query_id,source,title,text\n", "q.csv", "q.csv: no queries"),
    ('{"query_id": "q1"}', "q.json", "q.json: top level: expected a list of queries, got dict"),
    ('[{"query_id": "q1", "source": "chat"}]', "q.json", "q.json: [0]: text: missing or empty"),
    ('[{"query_id": "q1", "source": "chat", "text": "x"', "q.json", "q.json: not valid JSON"),
])
def test_bad_query_files_name_file_row_field_value(tmp_path, capsys, content, name, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert vp(["generate-items", "--queries", str(path), "--backend", "simulated", "--out", str(tmp_path / "o.json"),
               "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.json").exists()


def test_bad_options(tmp_path, capsys):
    base = ["generate-items", "--queries", str(EXAMPLE_QUERIES), "--out", str(tmp_path / "o.json"), "--no-progress"]
    assert vp(base + ["--backend", "simulated", "--per-query", "11"]) == 2
    assert "--per-query: 11 is not a whole number in 1..10" in capsys.readouterr().err
    assert vp(base + ["--model", "m"]) == 2
    assert "--base-url: required with --backend openai" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_example_queries_load():
    queries = load_queries(EXAMPLE_QUERIES)
    assert Counter(x.source for x in queries) == {"advice": 4, "chat": 4}
    assert all(x.title for x in queries if x.source == "advice") and not any(x.title for x in queries if x.source == "chat")


# ---------------------------------------------------------------- pure pieces


def test_parse_candidates():
    values = ("Power", "Self_Direction")
    ok = [{"value": "power", "response": "Take  charge."}, {"value": "Self-Direction", "response": "Choose."}]
    assert parse_candidates(json.dumps(ok), values) == ["Take charge.", "Choose."]
    assert parse_candidates("```json\n" + json.dumps(ok) + "\n```", values) == ["Take charge.", "Choose."]
    assert parse_candidates(json.dumps({"responses": ok[::-1]}), values) == ["Take charge.", "Choose."]
    bad = {
        "not JSON": ("Sure! Power: take charge.", "not valid JSON"),
        "missing": (json.dumps(ok[:1]), "no response for Self_Direction"),
        "unasked": (json.dumps(ok + [{"value": "Hedonism", "response": "Enjoy."}]), "'Hedonism', which was not asked for"),
        "twice": (json.dumps([ok[0], ok[0]]), "Power appears twice"),
        "empty": (json.dumps([ok[0], {"value": "Self_Direction", "response": " "}]), "Self_Direction is empty"),
        "scalar": ("42", "a JSON int, not a list"),
        "no text": (None, "empty"),
    }
    for text, reason in bad.values():
        with pytest.raises(MalformedAnswer, match=re.escape(reason)):
            parse_candidates(text, values)


def test_assign_values_spread_and_coverage():
    vals = instruments.PVQ_VALUES
    five = assign_values(10, 5)
    assert all(len(set(v)) == 5 for v in five)
    assert Counter(v for row in five for v in row) == dict.fromkeys(vals, 5)
    # N = 3: offsets floor(k * 10 / 3) = 0, 3, 6 from the rotating start 3i mod 10.
    three = assign_values(10, 3)
    assert three[0] == (vals[0], vals[3], vals[6]) and three[1] == (vals[3], vals[6], vals[9])
    assert Counter(v for row in three for v in row) == dict.fromkeys(vals, 3)
    assert assign_values(1, 10)[0] == vals


def test_portrait_ids_follow_the_release_convention():
    qs = [QueryIn(f"a{i}", "advice", "t", "x") for i in range(3)] + [QueryIn("c0", "chat", None, "x")]
    assert assign_portrait_ids(qs) == [1201, 1202, 1203, 3201]
    # Past x999 the second prefix takes over: 2 (advice), 4 (chat).
    assert assign_portrait_ids(qs, first=998) == [1998, 1999, 2998, 3998]


def test_groups_balanced_by_size_and_source():
    entries = [{"portrait_id": 1200 + i, "source": "advice"} for i in range(1, 6)]
    entries += [{"portrait_id": 3200 + i, "source": "chat"} for i in range(1, 4)]
    # Advice dealt to groups 0,1,0,1,0; chat continues at 1,0,1.
    assert make_groups(entries, 4) == [[1201, 1203, 1205, 3202], [1202, 1204, 3201, 3203]]
    assert make_groups(entries, 100) == [sorted(e["portrait_id"] for e in entries)]


def test_jaccard_matrix_against_scipy_and_by_hand():
    texts = ["the cat sat on the mat", "a cat sat on a mat", "dogs run fast", ""]
    sim = jaccard_matrix(texts)
    # By hand: {the,cat,sat,on,mat} vs {a,cat,sat,on,mat}: 4 shared of 6 words.
    assert sim[0, 1] == pytest.approx(4 / 6)
    vocab = sorted(set(words(" ".join(texts))))
    vec = [np.array([w in set(words(t)) for w in vocab]) for t in texts[:3]]
    for i in range(3):
        for j in range(3):
            assert sim[i, j] == pytest.approx(1 - scipy_jaccard(vec[i], vec[j]))
    assert sim[3, 3] == 0 and sim[0, 3] == 0


def test_check_candidates_by_hand():
    query = "Should I tell my boss that I am looking for another job"
    long_ok = " ".join(f"word{i}" for i in range(30))
    other = " ".join(f"term{i}" for i in range(30))
    third = " ".join(f"item{i}" for i in range(30))
    responses = [
        long_ok,
        "Should I tell my boss that I am looking for another job? " + "Maybe yes, think about it.",  # restates
        long_ok + " extra",                          # 30 of 31 words shared with option 1
        "Too short to rate.",
        " ".join(["long"] * 81),
        "I can't help but feel that " + other,     # not a refusal
        "As an AI, " + third,
    ]
    flags = check_candidates(query, responses, CheckSettings(min_words=20, max_words=80))
    assert flags[0] == []
    # Option 2: 17 words; its 16 distinct word pairs include the query's 11.
    assert flags[1] == ["too_short: 17 words < 20", f"restates_query: {11 / 16:.2f} of its word pairs are in the query"]
    assert flags[2] == [f"near_duplicate: of option 1 (jaccard {30 / 31:.2f})"]
    assert flags[3] == ["too_short: 4 words < 20"]
    assert flags[4] == ["too_long: 81 words > 80"]
    assert flags[5] == []
    assert flags[6] == ["refusal: 'as an ai'"]
    assert bigram_containment("one two three", "zero one two") == pytest.approx(1 / 2)
    assert refusal_phrase("I\u2019m sorry, but I cannot assist with that.") is not None
    assert refusal_phrase("You can't help everyone, but you can help her.") is None
