"""The instruments' definitions: the models their YAML files are validated against, and the loaders.

Imported on first use through :mod:`instruments` (``from instruments import load_pvq21``
works as before): the labels and dimension names in ``instruments/__init__.py`` do not need
pydantic, and the report's processes import only them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from instruments import (BFI_TRAITS, DIMENSION_LABELS, FAMILIES, FAMILY_LABELS, FAMILY_OF, HERE, HIGHER_ORDER,  # noqa: F401
                         PVQ_VALUES, dimension_label)
from valueportrait.errors import InputError
from valueportrait.files import brief, read_data_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scale(_Strict):
    min: int
    max: int
    question: str
    labels: tuple[str, ...]

    @model_validator(mode="after")
    def _labels_cover_scale(self):
        if self.max <= self.min:
            raise ValueError(f"max {self.max} must be above min {self.min}")
        if len(self.labels) != self.max - self.min + 1:
            raise ValueError(f"labels: {len(self.labels)} labels for a scale {self.min}..{self.max}")
        return self

    @property
    def values(self) -> range:
        return range(self.min, self.max + 1)

    def label(self, value: int) -> str:
        return self.labels[value - self.min]


class PVQItem(_Strict):
    id: int = Field(ge=1, le=21)
    value: Literal[PVQ_VALUES]  # type: ignore[valid-type]
    text: str = Field(min_length=1)


class BFIItem(_Strict):
    id: int = Field(ge=1, le=10)
    trait: Literal[BFI_TRAITS]  # type: ignore[valid-type]
    reversed: bool
    text: str = Field(min_length=1)


class _Instrument(_Strict):
    name: str
    title: str
    instructions: str
    scale: Literal["pvq", "bfi"]

    @field_validator("items", check_fields=False)
    @classmethod
    def _ids_complete(cls, items):
        ids = [item.id for item in items]
        expected = list(range(1, len(items) + 1))
        if sorted(ids) != expected:
            raise ValueError(f"ids must be 1..{len(items)} once each, got {sorted(ids)}")
        return tuple(sorted(items, key=lambda item: item.id))


class PVQ21(_Instrument):
    items: tuple[PVQItem, ...] = Field(min_length=21, max_length=21)

    def key(self) -> dict[str, tuple[int, ...]]:
        """value -> item ids."""
        return {v: tuple(i.id for i in self.items if i.value == v) for v in PVQ_VALUES}


class BFI10(_Instrument):
    items: tuple[BFIItem, ...] = Field(min_length=10, max_length=10)

    def key(self) -> dict[str, tuple[tuple[int, bool], ...]]:
        """trait -> ((item id, reversed), ...)."""
        return {t: tuple((i.id, i.reversed) for i in self.items if i.trait == t) for t in BFI_TRAITS}


class AttentionCheck(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    scale: Literal["pvq", "bfi", "similarity"]
    text: str = Field(min_length=1)
    expected: int


class _Checks(_Strict):
    checks: tuple[AttentionCheck, ...]


class Texts(_Strict):
    """Every text a participant reads around the questions (``texts.yaml``; a study may replace any)."""

    consent: str
    debrief: str
    declined: str
    study_full: str
    heading_demographics: str
    heading_pvq21: str
    heading_bfi10: str
    heading_items: str
    demographics_note: str
    intro_pvq21: str
    intro_bfi10: str
    intro_items: str
    layout_one_per_page: str
    layout_side_by_side: str
    layout_shuffled: str
    example_heading: str
    example_query: str
    example_response: str
    example_explanation: str
    time_warning: str
    timed_out: str
    timed_out_partial: str
    earlier_wave: str
    connection_lost: str
    reload_needed: str
    revise_note: str


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    value = err.get("input")
    shown = value if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__
    return f"{path}: {field}: {err['msg']} (got {shown!r})"


def validate(model: type[BaseModel], data: object, path: Path):
    """Validate loaded data against a schema; an error names the file and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(_format_validation_error(path, exc)) from None


def _replace_wording(data: dict, wording_file: Path | None) -> dict:
    """Swap in a user-supplied wording ({id: text} for every id), e.g. the licensed original."""
    if wording_file is None:
        return data
    wording = read_data_file(wording_file)
    if not isinstance(wording, dict):
        raise InputError(f"{wording_file}: expected a mapping of item id to text, got {type(wording).__name__}")
    ids = {item["id"] for item in data["items"]}
    try:
        given = {int(k): v for k, v in wording.items()}
    except (TypeError, ValueError):
        bad = next(k for k in wording if not str(k).strip().isdigit())
        raise InputError(f"{wording_file}: item id {bad!r} is not a number") from None
    if set(given) != ids:
        missing, extra = sorted(ids - set(given)), sorted(set(given) - ids)
        raise InputError(f"{wording_file}: item ids must be {min(ids)}..{max(ids)}: missing {missing}, unknown {extra}")
    for item_id, text in given.items():
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{wording_file}: item {item_id}: text must be a non-empty string, got {brief(text)}")
    return {**data, "items": [{**item, "text": given[item["id"]].strip()} for item in data["items"]]}


def load_pvq21(wording_file: Path | str | None = None, path: Path = HERE / "pvq21.yaml") -> PVQ21:
    data = _replace_wording(read_data_file(path), Path(wording_file) if wording_file else None)
    return validate(PVQ21, data, Path(wording_file) if wording_file else path)


def load_bfi10(wording_file: Path | str | None = None, path: Path = HERE / "bfi10.yaml") -> BFI10:
    data = _replace_wording(read_data_file(path), Path(wording_file) if wording_file else None)
    return validate(BFI10, data, Path(wording_file) if wording_file else path)


@lru_cache(maxsize=None)
def load_scales(path: Path = HERE / "scales.yaml") -> dict[str, Scale]:
    data = read_data_file(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of scale name to scale")
    return {name: validate(Scale, spec, Path(f"{path}: {name}")) for name, spec in data.items()}


def load_scale(name: Literal["pvq", "bfi", "similarity"]) -> Scale:
    return load_scales()[name]


def load_attention_checks(path: Path = HERE / "attention_checks.yaml",
                          scales: dict[str, Scale] | None = None) -> tuple[AttentionCheck, ...]:
    """The instructed-response checks, ``{answer}`` in their text replaced by the label of the
    answer they ask for on `scales` (default: the shipped scales), so that a study that words
    its scale differently still asks for an answer that is there."""
    checks = validate(_Checks, read_data_file(path), path).checks
    scales = scales or load_scales()
    out = []
    for i, check in enumerate(checks):
        if check.expected not in scales[check.scale].values:
            raise InputError(f"{path}: checks.{i}.expected: {check.expected} is outside the {check.scale} scale")
        out.append(check.model_copy(update={"text": check.text.replace("{answer}", scales[check.scale].label(check.expected))}))
    return tuple(out)


def load_texts(overrides: dict | None = None, path: Path = HERE / "texts.yaml") -> Texts:
    data = read_data_file(path)
    return validate(Texts, {**data, **(overrides or {})}, path)


@lru_cache(maxsize=None)
def default_pvq21() -> PVQ21:
    return load_pvq21()


@lru_cache(maxsize=None)
def default_bfi10() -> BFI10:
    return load_bfi10()
