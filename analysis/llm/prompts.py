"""Prompt variants for rating items: three wordings, each with the options in both orders.

Templates live in ``prompts.yaml`` beside this module (a study may pass its own file, see
:func:`load_prompts`); the six answer phrases come from the instruments' similarity scale
(``instruments.load_scale("similarity")``), the scale participants answered on. Variant
``vK`` lists the phrases from the highest value down ("very much like me" first);
``vK_reversed`` lists them bottom-up, so an option-order bias shows as a difference
between the two (reported by ``vp score-llm``).
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


import instruments
from analysis.llm.bank import Item
from valueportrait.errors import InputError
from valueportrait.files import brief, read_data_file

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "prompts.yaml"
REVERSED_SUFFIX = "_reversed"


@dataclass(frozen=True)
class PromptSet:
    """The templates of one study.

    Attributes
    ----------
    labels : tuple of (value, phrase), highest value first.
    item_advice, item_chat : templates with ``{title}``, ``{text}``, ``{response}``.
    persona : template with ``{persona}``, put before the prompt when a persona is given.
    wordings : {name: template with ``{item}`` and ``{options}``}.
    source : the file the wordings came from.
    """

    labels: tuple[tuple[int, str], ...]
    item_advice: str
    item_chat: str
    persona: str
    wordings: dict[str, str]
    source: str

    @property
    def variants(self) -> list[str]:
        """``[v1, v1_reversed, v2, v2_reversed, ...]``, the release's variant names."""
        return [name + suffix for name in self.wordings for suffix in ("", REVERSED_SUFFIX)]

    def options(self, variant: str) -> list[str]:
        phrases = [phrase for _, phrase in self.labels]
        return phrases[::-1] if variant.endswith(REVERSED_SUFFIX) else phrases

    def render_item(self, item: Item) -> str:
        if item.is_advice:
            return self.item_advice.format(title=item.title or "", text=item.text, response=item.response)
        return self.item_chat.format(text=item.text, response=item.response)

    def messages(self, item: Item, variant: str, persona: str | None = None) -> list[dict[str, str]]:
        """The chat messages that ask one item under one variant (one user message)."""
        base = variant[: -len(REVERSED_SUFFIX)] if variant.endswith(REVERSED_SUFFIX) else variant
        if base not in self.wordings:
            raise KeyError(variant)
        text = self.wordings[base].format(item=self.render_item(item), options="\n".join(self.options(variant)))
        if persona:
            text = self.persona.format(persona=persona) + "\n\n" + text
        return [{"role": "user", "content": text}]


def prompt_hash(messages: list[dict[str, str]], settings: dict | None = None) -> str:
    """A short stable hash of a request: its messages and the settings that shape the answer.

    Any change to a template, an item text, the persona or (e.g.) the sampling seed
    changes the hash, so the answer cache never serves an answer to a different question.
    """
    blob = json.dumps({"messages": messages, "settings": settings or {}}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def _check_template(text, fields: set[str], where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: expected a non-empty text")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise InputError(f"{where}: bad template ({exc}); write a literal brace as {{{{ or }}}}") from None
    unknown = used - fields
    if unknown:
        raise InputError(f"{where}: unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    return text


def _scale_labels() -> tuple[tuple[int, str], ...]:
    scale = instruments.load_scale("similarity")
    return tuple((v, scale.label(v)) for v in reversed(scale.values))


def _parse_labels(raw, where: str) -> tuple[tuple[int, str], ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise InputError(f"{where}: expected a list of [value, phrase] pairs, highest value first")
    out = []
    for i, pair in enumerate(raw):
        if (
            not isinstance(pair, list) or len(pair) != 2 or isinstance(pair[0], bool)
            or not isinstance(pair[0], int) or not isinstance(pair[1], str) or not pair[1].strip()
        ):
            raise InputError(f"{where}[{i}]: {brief(pair)} is not a [value, phrase] pair")
        out.append((pair[0], pair[1].strip()))
    values = [v for v, _ in out]
    if values != sorted(values, reverse=True) or len(set(values)) != len(values):
        raise InputError(f"{where}: values {values} must be distinct and listed highest first")
    return tuple(out)


def _read_yaml(path: Path) -> dict:
    data = read_data_file(path, "yaml")
    if not isinstance(data, dict):
        raise InputError(f"{path}: top level: expected a mapping with a `wordings` section")
    return data


@lru_cache(maxsize=8)
def load_prompts(path: str | Path | None = None) -> PromptSet:
    """Load the default templates, or a study's own file laid out like ``prompts.yaml``.

    A study file must give ``wordings``; ``labels``, ``item`` and ``persona`` it leaves
    out are taken from the defaults (labels from the instruments' similarity scale).
    """
    default = _read_yaml(DEFAULT_PROMPTS)
    path = Path(path) if path else DEFAULT_PROMPTS
    data = _read_yaml(path) if path != DEFAULT_PROMPTS else default
    wordings = data.get("wordings")
    if not isinstance(wordings, dict) or not wordings:
        raise InputError(f"{path}: wordings: expected a mapping of variant name to template")
    checked = {}
    for name, text in wordings.items():
        name = str(name)
        if name.endswith(REVERSED_SUFFIX) or not name.replace("_", "").replace("-", "").isalnum():
            raise InputError(f"{path}: wordings: name {name!r} must be plain letters/digits and not end in {REVERSED_SUFFIX}")
        checked[name] = _check_template(text, {"item", "options"}, f"{path}: wordings.{name}")
    item = data.get("item", default["item"])
    if not isinstance(item, dict):
        raise InputError(f"{path}: item: expected a mapping with `advice` and `chat`")
    advice = _check_template(item.get("advice"), {"title", "text", "response"}, f"{path}: item.advice")
    chat = _check_template(item.get("chat"), {"text", "response"}, f"{path}: item.chat")
    persona = _check_template(data.get("persona", default["persona"]), {"persona"}, f"{path}: persona")
    labels = _parse_labels(data["labels"], f"{path}: labels") if "labels" in data else _scale_labels()
    return PromptSet(labels, advice, chat, persona, checked, str(path))
