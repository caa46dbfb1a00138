"""The study definition: one YAML file that says what a collection study asks and of whom.

A study names its candidate items (a file in the release's tagged shape: ``[{portrait_id,
content: {title, text}, outputs: [{id, content}]}]``), splits their queries into groups (each
participant rates every item of one group), orders the blocks of pages, places the
attention checks, and sets the participants wanted per group, the texts, the completion
code and the time limits. Everything is validated on load; an error names the file and the
field. ``default_study.yaml`` beside this module is a complete example and what ``vp app``
runs when given no ``--study``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import instruments
from valueportrait.errors import InputError
from valueportrait.files import read_data_file

HERE = Path(__file__).resolve().parent
DEFAULT_STUDY = HERE / "default_study.yaml"

#: The blocks a researcher may order between the platform entry and the completion page.
BLOCKS = ("demographics", "pvq21", "bfi10", "items")
#: Which attention-check scale goes into which block.
BLOCK_OF_SCALE = {"pvq": "pvq21", "bfi": "bfi10", "similarity": "items"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GroupSpec(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,40}$")
    portraits: tuple[str, ...] = Field(min_length=1)
    target: int = Field(ge=1, le=100_000, description="participants wanted (completed)")

    @field_validator("portraits", mode="before")
    @classmethod
    def _as_strings(cls, value):
        # The release stores portrait ids as numbers; the database keys them as text.
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else value


class CheckPlacement(_Strict):
    id: str
    after: int = Field(ge=0, description="shown after this many questions of its block")


class Completion(_Strict):
    code: str = Field(pattern=r"^[A-Za-z0-9_\-]{4,40}$")
    # {code} is replaced by the code. Prolific's own return link by default.
    url: str | None = "https://app.prolific.com/submissions/complete?cc={code}"
    # A second code for those who failed at least `failed_checks_min` attention checks, so
    # their submissions can be told apart on the platform (Prolific's own rules decide what
    # may be done with them). None: everyone gets `code`.
    failed_checks_code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{4,40}$")
    failed_checks_min: int = Field(default=2, ge=1)
    # Prolific's "partial" code: given to someone whose time ran out after they had answered
    # at least `partial_min_share` of the study's questions, so the researcher can review and
    # pay for the part done. None: a timed-out participant is asked to return the study.
    partial_code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{4,40}$")
    partial_min_share: float = Field(default=0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _codes_differ(self):
        codes = {"code": self.code, "failed_checks_code": self.failed_checks_code, "partial_code": self.partial_code}
        seen: dict[str, str] = {}
        for name, code in codes.items():
            if code is None:
                continue
            if code in seen:
                raise ValueError(f"{name}: {code!r} is the same as {seen[code]}")
            seen[code] = name
        return self

    @field_validator("url")
    @classmethod
    def _http(cls, value):
        if value is not None and not re.match(r"^https?://", value):
            raise ValueError("must start with http:// or https://")
        return value


class TimeLimits(_Strict):
    # A started participant holds a place in a group while seen within this time. Someone
    # whose place lapsed (idle longer) may still come back and finish before max_minutes:
    # they are not turned away after doing part of the work, so a group can end above its
    # target; the admin page and the export count that overfill.
    active_minutes: float = Field(default=60, gt=0, allow_inf_nan=False)
    # After this long from the start, a participant can no longer finish.
    max_minutes: float = Field(default=120, gt=0, allow_inf_nan=False)
    # A warning on every page once fewer minutes than this are left (0: no warning).
    warn_minutes: float = Field(default=10, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self):
        if self.active_minutes > self.max_minutes:
            raise ValueError(f"active_minutes {self.active_minutes:g} is more than max_minutes {self.max_minutes:g}: "
                             "a place would outlast the time anyone has to finish (swapped?)")
        if self.warn_minutes >= self.max_minutes:
            raise ValueError(f"warn_minutes {self.warn_minutes:g} is not less than max_minutes {self.max_minutes:g}: "
                             "the warning would show from the first page")
        return self


class Ratings(_Strict):
    """How the item ratings are laid out."""

    # True: the responses to one query come together, the query shown first and read once;
    # queries in a random order per participant, responses shuffled within each.
    # False: all responses of the group in one random order, each with its query.
    by_query: bool = True
    # With by_query: each response on its own page (the query above it, folded), or all the
    # query's responses on one page, one scale each.
    layout: Literal["one_per_page", "side_by_side"] = "one_per_page"


class ScaleWording(_Strict):
    """A study's own question and labels for an answer scale (the values stay the instrument's)."""

    question: str | None = Field(default=None, min_length=1)
    labels: tuple[str, ...] | None = None

    @field_validator("labels")
    @classmethod
    def _non_empty(cls, labels):
        if labels is not None and any(not str(label).strip() for label in labels):
            raise ValueError("labels must not be empty")
        return labels


class ProlificReview(_Strict):
    """How `vp prolific review` decides (collection_app/prolific.py). Prolific allows rejecting
    for failed attention checks only under its attention-check policy (at least two failed
    checks in a study of five minutes or more), and for no data; never for speed or
    straight-lining alone, which the analysis excludes but pays."""

    reject_failed_checks: int = Field(default=2, ge=1, description="reject at this many failed attention checks")
    reject_no_data: bool = Field(default=True, description="reject a submission with no answer at all in the database")
    # What a rejected participant reads (Prolific asks for at least 100 characters).
    message_failed_checks: str | None = Field(default=None, min_length=100)
    message_no_data: str | None = Field(default=None, min_length=100)

    @field_validator("message_failed_checks")
    @classmethod
    def _placeholders(cls, value):
        try:
            value is None or value.format(failed=2, checks=3)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"may use only {{failed}} and {{checks}} in braces ({type(exc).__name__}: {exc})") from None
        return value


class ProlificSettings(_Strict):
    """The study on Prolific (`vp prolific create`); every field has a default or a command-line option."""

    name: str | None = Field(default=None, min_length=1, description="public title; default: the study's title")
    description: str | None = Field(default=None, min_length=1, description="what participants read before starting")
    reward: float | None = Field(default=None, gt=0, description="per participant, in the study currency (2.5 = 2.50)")
    minutes: int | None = Field(default=None, ge=1, description="estimated completion time")
    places: int | None = Field(default=None, ge=1, description="default: the sum of the groups' targets")
    devices: tuple[Literal["desktop", "tablet", "mobile"], ...] = Field(default=("desktop", "tablet", "mobile"),
                                                                        min_length=1)
    review: ProlificReview = ProlificReview()


class StudySpec(_Strict):
    study_id: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,60}$")
    # Waves of one study share a project (and each has its own study_id): a Prolific id that
    # took part in one wave is turned away from the others. Default: the study id.
    project: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-.]{1,60}$")
    title: str = Field(min_length=1)
    items_file: str
    groups: tuple[GroupSpec, ...] = Field(min_length=1)
    blocks: tuple[Literal[BLOCKS], ...] = BLOCKS  # type: ignore[valid-type]
    attention_checks: tuple[CheckPlacement, ...] = ()
    completion: Completion
    time_limits: TimeLimits = TimeLimits()
    ratings: Ratings = Ratings()
    # The study's own wording of the answer scales, per block (values stay 1..6 / 1..5).
    scales: dict[Literal["pvq", "bfi", "similarity"], ScaleWording] = {}
    texts: dict[str, str] = {}
    pvq_wording_file: str | None = None
    bfi_wording_file: str | None = None
    prolific: ProlificSettings | None = None  # optional: `vp prolific` settings (defaults when left out)

    @field_validator("blocks")
    @classmethod
    def _blocks_once(cls, blocks):
        if sorted(blocks) != sorted(BLOCKS):
            raise ValueError(f"must list each of {', '.join(BLOCKS)} exactly once, got {list(blocks)}")
        return blocks

    @model_validator(mode="after")
    def _groups_distinct(self):
        ids = [g.id for g in self.groups]
        if len(set(ids)) != len(ids):
            raise ValueError(f"groups: group ids repeat: {ids}")
        seen: dict[str, str] = {}
        for g in self.groups:
            for p in g.portraits:
                if p in seen:
                    raise ValueError(f"groups: portrait {p} is in both {seen[p]} and {g.id}")
                seen[p] = g.id
        return self


class ItemOutput(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: int = Field(ge=1)
    content: str = Field(min_length=1)
    value: str | None = None  # the value a response was written to express (our own items)


class ItemContent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    title: str | None = None
    text: str = Field(min_length=1)


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    portrait_id: str
    content: ItemContent
    outputs: tuple[ItemOutput, ...] = Field(min_length=1)

    @field_validator("portrait_id", mode="before")
    @classmethod
    def _as_string(cls, value):
        return str(value)


@dataclass(frozen=True)
class Item:
    """One candidate item: a query and one of its responses."""

    portrait_id: str
    option_id: int
    group_id: str
    title: str | None
    query_text: str
    response: str
    value: str | None = None

    @property
    def key(self) -> str:
        return f"{self.portrait_id}-{self.option_id}"


@dataclass(frozen=True)
class Study:
    """A loaded, validated study: the spec plus everything it refers to."""

    spec: StudySpec
    path: Path
    items: tuple[Item, ...]
    pvq: instruments.PVQ21
    bfi: instruments.BFI10
    checks: dict[str, instruments.AttentionCheck]
    texts: instruments.Texts
    scales: dict[str, instruments.Scale]

    @property
    def study_id(self) -> str:
        return self.spec.study_id

    @property
    def project(self) -> str:
        return self.spec.project or self.spec.study_id

    @cached_property
    def items_by_group(self) -> dict[str, tuple[Item, ...]]:
        return {g.id: tuple(i for i in self.items if i.group_id == g.id) for g in self.spec.groups}

    @cached_property
    def item_by_key(self) -> dict[str, Item]:
        return {i.key: i for i in self.items}

    @cached_property
    def queries(self) -> dict[str, Item]:
        """portrait id -> its first item (for the query's title and text)."""
        out: dict[str, Item] = {}
        for i in self.items:
            out.setdefault(i.portrait_id, i)
        return out

    def checks_in(self, block: str) -> list[tuple[int, str]]:
        """(after, check id) of the checks placed in a block, in order."""
        return sorted((c.after, c.id) for c in self.spec.attention_checks
                      if BLOCK_OF_SCALE[self.checks[c.id].scale] == block)

    def completion_url(self, code: str | None = None) -> str | None:
        """The link back to the platform for `code` (default: the study's completion code)."""
        url = self.spec.completion.url
        return url.replace("{code}", code or self.spec.completion.code) if url else None

    @cached_property
    def definition(self) -> dict:
        """Everything a participant of this study could read, as plain data: the settings, the
        item texts, the questionnaires' wording, the answer scales, the checks and the texts."""
        return {
            "spec": self.spec.model_dump(mode="json"),
            "items": [dict(i.__dict__) for i in self.items],
            "pvq21": self.pvq.model_dump(mode="json"),
            "bfi10": self.bfi.model_dump(mode="json"),
            "checks": {k: c.model_dump(mode="json") for k, c in sorted(self.checks.items())},
            "scales": {k: s.model_dump(mode="json") for k, s in sorted(self.scales.items())},
            "texts": self.texts.model_dump(mode="json"),
        }

    @cached_property
    def definition_json(self) -> str:
        return json.dumps(self.definition, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @cached_property
    def version(self) -> str:
        """The sha256 of :attr:`definition_json`: the address of this version of the study."""
        return hashlib.sha256(self.definition_json.encode("utf-8")).hexdigest()

    @property
    def fingerprint(self) -> str:
        """A short form of :attr:`version`, stored with the study for the audit trail."""
        return self.version[:16]


def _field_error(path: Path, exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    value = err.get("input")
    shown = value if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__
    msg = err["msg"].removeprefix("Value error, ")
    return InputError(f"{path}: {field}: {msg} (got {shown!r})")


def load_items(path: Path) -> tuple[Query, ...]:
    """Candidate items in the release's tagged shape (JSON or YAML list of queries)."""
    data = read_data_file(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of queries, got {type(data).__name__}")
    queries = []
    for n, entry in enumerate(data):
        try:
            queries.append(Query.model_validate(entry))
        except ValidationError as exc:
            raise _field_error(Path(f"{path}: [{n}]"), exc) from None
    ids = [q.portrait_id for q in queries]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"{path}: portrait_id: repeated ids {dup}")
    for q in queries:
        opts = [o.id for o in q.outputs]
        if len(set(opts)) != len(opts):
            raise InputError(f"{path}: portrait {q.portrait_id}: outputs.id: repeated ids {opts}")
    return tuple(queries)


def load_study(path: Path | str | None = None) -> Study:
    """Read and validate a study file; relative file names in it are relative to the file."""
    path = Path(path) if path else DEFAULT_STUDY
    data = read_data_file(path)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise _field_error(path, exc) from None

    def rel(name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else path.parent / p

    items_path = rel(spec.items_file)
    if not items_path.exists():
        raise InputError(f"{path}: items_file: {spec.items_file!r} does not exist (looked for {items_path})")
    queries = {q.portrait_id: q for q in load_items(items_path)}
    items = []
    for gi, group in enumerate(spec.groups):
        for pi, pid in enumerate(group.portraits):
            if pid not in queries:
                raise InputError(f"{path}: groups.{gi}.portraits.{pi}: portrait {pid!r} is not in {items_path.name}")
            q = queries[pid]
            items += [Item(pid, o.id, group.id, q.content.title, q.content.text, o.content, o.value) for o in q.outputs]

    scales = {}
    for name in ("pvq", "bfi", "similarity"):
        base, own = instruments.load_scale(name), spec.scales.get(name)
        if own is not None and own.labels is not None and len(own.labels) != len(base.labels):
            raise InputError(f"{path}: scales.{name}.labels: {len(own.labels)} labels for a scale "
                             f"{base.min}..{base.max} (it needs {len(base.labels)})")
        if own is not None:
            base = base.model_copy(update={k: v for k, v in own.model_dump().items() if v is not None})
        scales[name] = base
    all_checks = {c.id: c for c in instruments.load_attention_checks(scales=scales)}
    blocks_len = {"pvq21": 21, "bfi10": 10}
    group_sizes = {g.id: sum(len(queries[p].outputs) for p in g.portraits) for g in spec.groups}
    placed = [c.id for c in spec.attention_checks]
    for ci, placement in enumerate(spec.attention_checks):
        if placement.id not in all_checks:
            raise InputError(f"{path}: attention_checks.{ci}.id: unknown check {placement.id!r} "
                             f"(known: {', '.join(all_checks)})")
        if placed.count(placement.id) > 1:
            raise InputError(f"{path}: attention_checks.{ci}.id: check {placement.id!r} is placed twice")
        block = BLOCK_OF_SCALE[all_checks[placement.id].scale]
        limit = blocks_len.get(block, min(group_sizes.values()))
        if placement.after > limit:
            raise InputError(f"{path}: attention_checks.{ci}.after: {placement.after} is beyond the "
                             f"{limit} questions of block {block}")
    done = spec.completion
    if done.failed_checks_code is not None and done.failed_checks_min > len(spec.attention_checks):
        raise InputError(f"{path}: completion.failed_checks_min: {done.failed_checks_min} is more than the "
                         f"{len(spec.attention_checks)} attention checks placed: nobody would get failed_checks_code")
    if spec.prolific is not None:
        review = spec.prolific.review
        if review.reject_failed_checks > len(spec.attention_checks):
            raise InputError(f"{path}: prolific.review.reject_failed_checks: {review.reject_failed_checks} is more than "
                             f"the {len(spec.attention_checks)} attention checks placed: nobody could be rejected for them")
        if review.reject_failed_checks < 2 and (spec.prolific.minutes or 5) >= 5:
            raise InputError(f"{path}: prolific.review.reject_failed_checks: {review.reject_failed_checks}: Prolific's "
                             "attention-check policy allows rejecting for one failed check only in studies under 5 "
                             "minutes (set prolific.minutes below 5 if yours is that short)")
    for key in spec.texts:
        if key not in instruments.Texts.model_fields:
            raise InputError(f"{path}: texts.{key}: unknown text (known: {', '.join(instruments.Texts.model_fields)})")

    pvq = instruments.load_pvq21(rel(spec.pvq_wording_file)) if spec.pvq_wording_file else instruments.default_pvq21()
    bfi = instruments.load_bfi10(rel(spec.bfi_wording_file)) if spec.bfi_wording_file else instruments.default_bfi10()
    return Study(
        spec=spec, path=path, items=tuple(items), pvq=pvq, bfi=bfi,
        checks={c.id: all_checks[c.id] for c in spec.attention_checks},
        texts=instruments.load_texts(dict(spec.texts)),
        scales=scales,
    )
