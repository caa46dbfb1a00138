"""Instrument files: validated on load, errors name the file and the field."""

import pytest

import instruments as inst
from valueportrait.errors import InputError


def test_shipped_instruments_load():
    assert len(inst.load_pvq21().items) == 21
    assert [i.id for i in inst.load_bfi10().items] == list(range(1, 11))
    sim = inst.load_scale("similarity")
    assert sim.labels == ("not like me at all", "not like me", "a little like me", "somewhat like me", "like me", "very much like me")
    assert sim.label(6) == "very much like me" and list(sim.values) == [1, 2, 3, 4, 5, 6]
    assert inst.load_scale("bfi").max == 5
    checks = inst.load_attention_checks()
    assert all(c.expected in inst.load_scale(c.scale).values for c in checks)
    assert "18" in inst.load_texts().consent


def test_wording_file_replaces_ours(tmp_path):
    wording = tmp_path / "official.yaml"
    wording.write_text("\n".join(f'{i}: "Official portrait {i}"' for i in range(1, 22)))
    pvq = inst.load_pvq21(wording)
    assert pvq.items[6].text == "Official portrait 7"
    assert pvq.items[6].value == "Conformity"  # the key is ours, only the words change


def test_wording_file_with_missing_id(tmp_path):
    wording = tmp_path / "official.yaml"
    wording.write_text("\n".join(f'{i}: "text {i}"' for i in range(1, 10)))
    with pytest.raises(InputError, match=r"official.yaml: item ids must be 1..10: missing \[10\], unknown \[\]"):
        inst.load_bfi10(wording)


def test_bad_instrument_file_names_file_and_field(tmp_path):
    bad = tmp_path / "pvq21.yaml"
    text = (inst.HERE / "pvq21.yaml").read_text().replace("value: Power, ", "value: Powr, ", 1)
    bad.write_text(text)
    with pytest.raises(InputError) as err:
        inst.load_pvq21(path=bad)
    assert str(err.value).startswith(f"{bad}: items.1.value:") and "'Powr'" in str(err.value)


def test_attention_check_outside_scale(tmp_path):
    bad = tmp_path / "checks.yaml"
    bad.write_text("checks:\n  - {id: x, scale: bfi, text: 'choose 6', expected: 6}\n")
    with pytest.raises(InputError, match=r"checks.yaml: checks.0.expected: 6 is outside the bfi scale"):
        inst.load_attention_checks(bad)


def test_unreadable_yaml(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("consent: [unclosed\n")
    with pytest.raises(InputError, match=r"t.yaml: not valid YAML"):
        inst.load_texts(path=bad)
