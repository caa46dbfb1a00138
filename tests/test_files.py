"""The one reader of user YAML/JSON: aliases, duplicate keys, sizes, syntax errors, encodings.

Each refusal is checked against what the plain parsers do with the same bytes (PyYAML
expands the aliases, json and yaml keep the last of two equal keys), so the tests show
what would have gone wrong without the reader.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from valueportrait import files
from valueportrait.cli import main as vp
from valueportrait.errors import MAX_MESSAGE, InputError
from valueportrait.files import brief, parse_json, read_csv_records, read_data_file

# Nine levels of nine-fold aliases: 9**9 (387 million) strings once expanded, in 416 bytes.
BOMB = "\n".join(["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
                 + [f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefg", "bcdefgh")]
                 + ["wordings: [" + ",".join(["*h"] * 9) + "]"]) + "\n"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_the_bomb_is_a_bomb():
    """The plain safe loader builds the aliases as shared references; walking them is what explodes."""
    data = yaml.safe_load(BOMB)
    level = data["wordings"]
    size = 1
    while isinstance(level, list):
        size *= len(level)
        level = level[0]
    assert size == 9**9 and len(BOMB) < 600


def test_aliases_are_refused_at_once(tmp_path):
    path = tmp_path / "variants.yaml"
    path.write_text(BOMB)
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"variants.yaml: not valid YAML: line 2 column \d+: an alias \(\*a\) is not accepted"):
        read_data_file(path)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("command", [
    ["run-llm", "--backend", "simulated", "--model", "m", "--item-bank", "{bank}", "--profile", "{profile}",
     "--variants", "{bomb}", "--out", "{out}"],
    ["generate-items", "--queries", "{queries}", "--backend", "simulated", "--prompts", "{bomb}", "--out", "{out}/c.json"],
])
def test_bombed_files_stop_commands_in_one_line(tmp_path, capsys, command):
    from valueportrait import PROJECT_ROOT

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    profile = tmp_path / "profile.json"
    profile.write_text('{"Benevolence": 1.0}')
    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps([{"portrait_id": "1001", "content": {"title": "t", "text": "q"},
                                 "outputs": [{"id": 1, "content": "r", "keyed": {"pvq": ["Benevolence"]}}]}]))
    values = {"bomb": bomb, "profile": profile, "bank": bank, "out": tmp_path / "out",
              "queries": PROJECT_ROOT / "instruments/examples/queries.csv"}
    start = time.perf_counter()
    assert vp([part.format(**values) for part in command]) == 2
    assert time.perf_counter() - start < 5
    assert "an alias (*a) is not accepted" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_app_study_with_a_bombed_wording_file_is_refused(tmp_path):
    from collection_app.study import DEFAULT_STUDY, load_study

    spec = yaml.safe_load(DEFAULT_STUDY.read_text())
    spec["items_file"] = str(DEFAULT_STUDY.parent / spec["items_file"])
    spec["pvq_wording_file"] = "wording.yaml"
    (tmp_path / "wording.yaml").write_text(BOMB)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    with pytest.raises(InputError, match="wording.yaml: not valid YAML: .*alias"):
        load_study(study)
    assert time.perf_counter() - start < 5


def test_a_study_file_with_a_duplicated_study_id_is_refused(tmp_path):
    from collection_app.study import DEFAULT_STUDY, load_study

    text = DEFAULT_STUDY.read_text()
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("study_id:"))
    assert yaml.safe_load(text + "study_id: other\n")["study_id"] == "other"  # plain YAML: the last one wins
    (tmp_path / "study.yaml").write_text(text + "study_id: other\n")
    last = len(text.splitlines()) + 1
    with pytest.raises(InputError, match=rf"study.yaml: study_id: the key 'study_id' appears twice \(lines {first} and {last}\)"):
        load_study(tmp_path / "study.yaml")


def test_duplicate_keys_name_their_path_and_lines(tmp_path):
    nested = "completion:\n  code: ABC\n  url: x\n  code: DEF\n"
    assert yaml.safe_load(nested)["completion"]["code"] == "DEF"  # what the plain loader does
    with pytest.raises(InputError, match=r"s.yaml: completion.code: the key 'code' appears twice \(lines 2 and 4\)"):
        files.parse_yaml(nested, "s.yaml")
    text = '{"P1": {"pvq": {"Power": 1.0,\n  "Power": 2.0}},\n "P2": {}}'
    assert json.loads(text)["P1"]["pvq"]["Power"] == 2.0
    with pytest.raises(InputError, match=r"v.json: P1.pvq.Power: the key 'Power' appears twice \(lines 1 and 2\)"):
        parse_json(text, "v.json")
    with pytest.raises(InputError, match=r'x.json: \[1\]\["a b"\]: the key \'a b\' appears twice'):
        parse_json('[{}, {"a b": 1, "a b": 2}]', "x.json")
    # Equal keys in different objects, or a key equal to a value, are fine.
    assert parse_json('[{"a": 1}, {"a": {"a": "a"}}]', "x") == [{"a": 1}, {"a": {"a": "a"}}]


def test_syntax_errors_keep_line_and_column(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("study_id: s\ntitle: t\ngroups:\n  - id: g1\n    portraits: [1001, 1002\n  - id: g2\n")
    with pytest.raises(InputError, match=r"^\S*study.yaml: not valid YAML: line \d+ column \d+: "):
        read_data_file(path)
    with pytest.raises(InputError, match=r"b.json: not valid JSON .*: line 2 column 10: Expecting .,. delimiter"):
        parse_json('{"a": 1,\n "b": [1 2]}', "b.json")


def test_size_cap_and_depth(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 5000 + "\n")
    monkeypatch.setattr(files, "MAX_YAML_BYTES", 4096)
    with pytest.raises(InputError, match=r"big.yaml: 0.0 MB is more than the 0 MB accepted for a YAML file"):
        read_data_file(path)
    with pytest.raises(InputError, match="nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000, "deep.json")


def test_encodings(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text("a: 1\n", encoding="utf-16")
    with pytest.raises(InputError, match="prompts.yaml: UTF-16 text: save it as UTF-8"):
        read_data_file(path)
    path.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(InputError, match=r"prompts.yaml: not UTF-8 text \(byte 6\)"):
        read_data_file(path)
    path.write_text("a: 1\n", encoding="utf-8-sig")  # a BOM is fine
    assert read_data_file(path) == {"a": 1}
    with pytest.raises(InputError, match="is a folder"):
        read_data_file(tmp_path)


def test_values_in_messages_are_brief():
    assert brief("x" * 10_000, 20).endswith("… (10,000 characters)") and len(brief("x" * 10_000, 20)) < 45
    assert brief(list(range(10**6))) == "a list of 1000000 entries"
    assert len(str(InputError("f: " + "y" * 10**7))) <= MAX_MESSAGE
    assert "\n" not in str(InputError("a\nb"))


def test_csv_rows_of_the_wrong_length_name_their_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('id,a,b\n1,2,3\n\n2,"multi\nline",4\n3,5\n')
    with pytest.raises(InputError, match=r"a.csv: line 6: 2 fields where the header has 3 \(is the file cut off\?\)"):
        read_csv_records(path)
    path.write_text("id,a,b\n1,2,3\n2,3,4,5\n3,4,5\n")
    with pytest.raises(InputError, match=r"a.csv: line 3: 4 fields where the header has 3$"):
        read_csv_records(path)
    path.write_text('id,a,b\n1,2,3\n2,"multi\nline",4\n')
    assert read_csv_records(path) == (["id", "a", "b"], [(2, ["1", "2", "3"]), (3, ["2", "multi\nline", "4"])])
