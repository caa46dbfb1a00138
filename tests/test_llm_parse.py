"""Answer parsing and prompt rendering for `vp run-llm`."""

from __future__ import annotations

import pytest

import instruments
from analysis.llm.bank import Item, parse_bank
from analysis.llm.parse import parse_answer
from analysis.llm.prompts import load_prompts, prompt_hash
from valueportrait.errors import InputError

LABELS = load_prompts().labels


@pytest.mark.parametrize(
    "text, expected",
    [
        # exact phrases, each value once
        ("very much like me", 6), ("like me", 5), ("somewhat like me", 4),
        ("a little like me", 3), ("not like me", 2), ("not like me at all", 1),
        # case, punctuation, spacing, markdown
        ("Not like me at all.", 1), ("NOT LIKE ME", 2), ("**Somewhat like me**", 4), ("  like   me!\n", 5),
        ('"A little like me"', 3), ("Very much like me.", 6), ("not-like-me", 2), ("Like me…", 5),
        # inside longer text: the longest phrase at its position wins
        ("Answer: not like me at all", 1), ("I would say it is not like me.", 2),
        ("My answer is: very much like me", 6), ("It's somewhat like me, I think.", 4),
        ("The response is a little like me", 3), ("Answer: like me", 5),
        ("Not like me at all. Not like me at all.", 1),  # the same phrase twice is fine
        # paraphrases we do not know: not guessed
        ("not at all like me", None), ("not very much like me", None), ("a little bit like me", None),
        ("very like me", None), ("much like me", None), ("isn't like me", None), ("Not quite like me", None),
        ("unlike me", None), ("likeme", None),
        # several different phrases: ambiguous (e.g. the option list echoed back)
        ("like me or not like me", None),
        ("very much like me\nlike me\nsomewhat like me\na little like me\nnot like me\nnot like me at all", None),
        # digits are not accepted: the prompts show none
        ("5", None), ("6 - very", None), ("1", None),
        # nothing useful
        ("", None), (None, None), ("I cannot share personal opinions.", None), ("like", None), ("me", None),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text, LABELS) == expected


def test_labels_come_from_the_similarity_scale():
    scale = instruments.load_scale("similarity")
    assert LABELS[0] == (6, scale.label(6)) == (6, "very much like me")
    assert LABELS[-1] == (1, scale.label(1)) == (1, "not like me at all")
    assert [v for v, _ in LABELS] == [6, 5, 4, 3, 2, 1]


BANK = [
    {"portrait_id": 1025, "content": {"title": "AITA for a thing?", "text": "Here is my story {with braces}."},
     "outputs": [{"id": 1, "content": "You were right to speak up.", "keyed": {"pvq": ["Benevolence"]}}]},
    {"portrait_id": "3063", "content": {"title": None, "text": "Should AI be allowed to lie?"},
     "outputs": [{"id": 2, "content": "Never: honesty first.", "keyed": {"pvq": ["Conformity"]}}]},
]


def _option_lines(text: str) -> list[str]:
    phrases = {p for _, p in LABELS}
    return [line for line in text.splitlines() if line in phrases]


def test_six_variants_both_orders_and_item_kinds():
    prompts = load_prompts()
    advice, chat = parse_bank(BANK)
    assert advice.portrait_id == "1025" and chat.portrait_id == "3063"
    assert prompts.variants == ["v1", "v1_reversed", "v2", "v2_reversed", "v3", "v3_reversed"]
    texts = {}
    for variant in prompts.variants:
        (message,) = prompts.messages(advice, variant)
        assert message["role"] == "user"
        text = texts[variant] = message["content"]
        lines = _option_lines(text)
        forward = ["very much like me", "like me", "somewhat like me", "a little like me", "not like me", "not like me at all"]
        assert lines == (forward[::-1] if variant.endswith("_reversed") else forward)
        assert "AITA for a thing?" in text and "Here is my story {with braces}." in text
        assert "You were right to speak up." in text
        assert not any(ch.isdigit() for line in lines for ch in line)
    assert len({texts[v] for v in ("v1", "v2", "v3")}) == 3  # three different wordings
    chat_text = prompts.messages(chat, "v1")[0]["content"]
    assert "Should AI be allowed to lie?" in chat_text and "Title" not in chat_text


def test_persona_prefixes_the_prompt_and_changes_the_hash():
    prompts = load_prompts()
    item = parse_bank(BANK)[0]
    plain = prompts.messages(item, "v2")
    persona = prompts.messages(item, "v2", "a 65-year-old conservative man")
    assert persona[0]["content"].startswith(prompts.persona.format(persona="a 65-year-old conservative man"))
    assert persona[0]["content"].endswith(plain[0]["content"])
    assert prompt_hash(plain) != prompt_hash(persona)
    assert prompt_hash(plain, {"seed": 0}) != prompt_hash(plain, {"seed": 1})
    assert prompt_hash(plain) == prompt_hash([dict(m) for m in plain])


def test_variants_file_replaces_wordings(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("wordings:\n  w1: |-\n    Rate this.\n    {item}\n    Options:\n    {options}\n")
    prompts = load_prompts(path)
    assert prompts.variants == ["w1", "w1_reversed"]
    item = parse_bank(BANK)[1]
    text = prompts.messages(item, "w1_reversed")[0]["content"]
    assert text.startswith("Rate this.\nMessage: Should AI")
    assert _option_lines(text)[0] == "not like me at all"


@pytest.mark.parametrize(
    "body, message",
    [
        ("wordings:\n  w1: 'Rate {item} {bogus}'\n", "unknown placeholder"),
        ("wordings:\n  w1: 'Rate {item'\n", "bad template"),
        ("wordings: {}\n", "wordings"),
        ("wordings:\n  w1_reversed: '{item} {options}'\n", "must be plain"),
        ("labels: [[1, 'no'], [2, 'yes']]\nwordings:\n  w1: '{item} {options}'\n", "highest first"),
        ("- just a list\n", "top level"),
    ],
)
def test_bad_variants_file_names_file_and_field(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(InputError) as err:
        load_prompts(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "bank, message",
    [
        ({"not": "a list"}, "expected a list"),
        ([{"portrait_id": None, "content": {"text": "x"}, "outputs": []}], "portrait_id"),
        ([{"portrait_id": 1, "content": {"title": None}, "outputs": []}], "content.text"),
        ([{"portrait_id": 1, "content": {"text": "x"}, "outputs": [{"id": "a", "content": "y"}]}], "option_id"),
        ([{"portrait_id": 1, "content": {"text": "x"}, "outputs": [{"id": 1, "content": "y", "keyed": {"big5": []}}]}], "family"),
        ([{"portrait_id": 1, "content": {"text": "x"},
           "outputs": [{"id": 1, "content": "y", "keyed": {"pvq": []}, "reversed": {"pvq": ["Power"]}}]}], "not listed in keyed"),
        ([{"portrait_id": 1, "content": {"text": "x"}, "outputs": [{"id": 1, "content": "y"}, {"id": 1, "content": "z"}]}], "twice"),
    ],
)
def test_bad_bank_is_an_input_error(bank, message):
    with pytest.raises(InputError, match=message):
        parse_bank(bank, "bank.json")


def test_item_kind_from_portrait_id():
    assert Item("1025", 1, "t", "x", "r").is_advice and Item("2001", 1, "t", "x", "r").is_advice
    assert not Item("3063", 1, None, "x", "r").is_advice and not Item("4001", 1, None, "x", "r").is_advice
