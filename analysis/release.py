"""Read a folder laid out like the public Value Portrait release into the study database.

Reads the item ratings (``data/prolific/survey/main/survey.json``), the participants'
published value and trait scores (``data/prolific/value/main/value.json``), the item texts
(``data/query-response-tagged/query-response-tagged.json``, with or without the authors'
correlation fields) and, when present, the LLM answers under
``lm_evaluation/average_outputs/*_averaged_results.json``.

The whole import is one transaction: any bad value stops it before anything is stored,
with a one-line message naming the file, the JSON path and the value, e.g.
``survey.json: [3]["1901"][2].data[17]: rating 7 is outside 1..6``. Importing the same
release again leaves the database exactly as it was (rows are upserted, and rows of the
study that the release no longer holds are removed).

Mapping: the i-th group of survey.json becomes group ``g{i+1:02d}``; every participant of
value.json becomes a participant; every (participant, group) pair with ratings becomes a
participation with status ``completed`` (the release has no times, checks or
demographics); published scores go to the ``scores`` table (families ``pvq``,
``higher_pvq``, ``bfi``); LLM answers to ``llm_answers``, one row per prompt variant, with
the model named after the file (``{model}_averaged_results.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import operator
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import instruments as inst
from valueportrait import DEFAULT_DB
from valueportrait.errors import InputError
from valueportrait.files import brief, decode, parse_json
from valueportrait.storage import KEYS, StudyDB, now, open_db

SURVEY = Path("data/prolific/survey/main/survey.json")
VALUES = Path("data/prolific/value/main/value.json")
TAGGED = Path("data/query-response-tagged/query-response-tagged.json")
LLM_DIR = Path("lm_evaluation/average_outputs")
LLM_SUFFIX = "_averaged_results.json"
RATING_RANGE = (1, 6)

#: Tables the import owns for its study, in the order they are written (foreign keys first).
TABLES = ("studies", "item_groups", "items", "participants", "participations", "scores", "ratings", "llm_answers")


@dataclass
class Release:
    """The validated content of a release folder, as rows for the database."""

    groups: list[dict] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)
    participants: list[dict] = field(default_factory=list)
    participations: list[dict] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    ratings: list[dict] = field(default_factory=list)
    llm_answers: list[dict] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    short_variants: dict[str, tuple[int, int]] = field(default_factory=dict)  # model -> (items short of variants, most variants)
    multi_group: dict[str, list[str]] = field(default_factory=dict)  # participant -> groups rated
    unrated: list[str] = field(default_factory=list)                 # participants with scores but no ratings
    untagged_unrated: list[str] = field(default_factory=list)        # items with texts nobody rated
    files: dict[str, str] = field(default_factory=dict)              # relative path -> sha256


# -- reading and validating ------------------------------------------------------------------
def _key(k) -> str:
    return json.dumps(k) if isinstance(k, str) else str(k)


def _read_json(root: Path, rel: Path, release: Release):
    path = root / rel
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{rel}: missing from the release folder {root}") from None
    except IsADirectoryError:
        raise InputError(f"{rel}: is a folder in {root}; a JSON file is needed") from None
    except OSError as exc:
        raise InputError(f"{rel}: cannot read: {exc.strerror}") from None
    release.files[str(rel)] = hashlib.sha256(raw).hexdigest()
    # One reader for every JSON a user gives: an object that repeats a key is refused
    # (the last copy would silently win, dropping ratings), naming its path and lines.
    return parse_json(decode(raw, rel), rel)


def _expect(cond: bool, rel, path: str, message: str) -> None:
    if not cond:
        raise InputError(f"{rel}: {path}: {message}")


def _field(obj: dict, name: str, rel, path: str):
    _expect(isinstance(obj, dict), rel, path, f"expected an object, got {type(obj).__name__}")
    _expect(name in obj, rel, path, f"missing field {name!r}")
    return obj[name]


def _as_int(value, rel, path: str, what: str) -> int:
    if type(value) is int:  # the common case, before any message is formatted
        return value
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    _expect(ok, rel, path, f"{what} {brief(value)} is not a whole number")
    return int(value)


def _as_number(value, rel, path: str, what: str) -> float:
    if (type(value) is float and math.isfinite(value)) or type(value) is int:  # the common case, no message formatted
        return float(value)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _expect(ok, rel, path, f"{what} {brief(value)} is not a finite number")
    return float(value)


def _portrait_id(value, rel, path: str) -> str:
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip() != "")
    _expect(ok, rel, path, f"portrait_id {brief(value)} is not a string or integer id")
    return str(value).strip()


def _read_values(data, rel, study_id: str, created: str, release: Release) -> set[str]:
    _expect(isinstance(data, dict), rel, "(top level)", f"expected an object of participant_id -> scores, got {type(data).__name__}")
    for pid, record in data.items():
        where = f"[{_key(pid)}]"
        _expect(pid.strip() != "", rel, where, "empty participant id")
        for family, dims in inst.FAMILIES.items():
            block = _field(record, family, rel, where)
            _expect(isinstance(block, dict), rel, f"{where}.{family}", f"expected an object of dimension -> score, got {type(block).__name__}")
            unknown = sorted(set(block) - set(dims))
            _expect(not unknown, rel, f"{where}.{family}", f"unknown dimension {brief(unknown[0])}" if unknown else "")
            for dim in dims:
                score = _as_number(_field(block, dim, rel, f"{where}.{family}"), rel, f"{where}.{family}.{dim}", "score")
                release.scores.append(dict(study_id=study_id, participant_id=pid, family=family, dimension=dim, score=score))
        release.participants.append(dict(study_id=study_id, participant_id=pid, created_at=created))
    return set(data)


def _read_texts(data, rel) -> dict[tuple[str, int], dict]:
    _expect(isinstance(data, list), rel, "(top level)", f"expected a list of queries, got {type(data).__name__}")
    texts: dict[tuple[str, int], dict] = {}
    for q, query in enumerate(data):
        where = f"[{q}]"
        pid = _portrait_id(_field(query, "portrait_id", rel, where), rel, f"{where}.portrait_id")
        content = _field(query, "content", rel, where)
        text = _field(content, "text", rel, f"{where}.content")
        _expect(isinstance(text, str) and text.strip() != "", rel, f"{where}.content.text", f"{brief(text)} is not a non-empty string")
        title = content.get("title") if isinstance(content, dict) else None
        _expect(title is None or isinstance(title, str), rel, f"{where}.content.title", f"{brief(title)} is not a string or null")
        outputs = _field(query, "outputs", rel, where)
        _expect(isinstance(outputs, list), rel, f"{where}.outputs", f"expected a list, got {type(outputs).__name__}")
        for o, out in enumerate(outputs):
            o_where = f"{where}.outputs[{o}]"
            oid = _as_int(_field(out, "id", rel, o_where), rel, f"{o_where}.id", "option id")
            response = _field(out, "content", rel, o_where)
            _expect(isinstance(response, str) and response.strip() != "", rel, f"{o_where}.content", f"{brief(response)} is not a non-empty string")
            _expect((pid, oid) not in texts, rel, o_where, f"item {pid}/{oid} appears twice")
            # The authors' public file carries their correlations: keep them for comparison.
            extra = {k: v for k, v in out.items() if k not in ("id", "content")}
            source = "advice" if pid[:1] in "12" else "chat" if pid[:1] in "34" else ("advice" if title else "chat")
            texts[(pid, oid)] = dict(portrait_id=pid, option_id=oid, source=source, title=title, query_text=text,
                                     response=response, meta_json=json.dumps({"published": extra}, sort_keys=True) if extra else None)
    return texts


def _rating_pair(pair, rel, r_where: str, known: set[str], seen: set, pid: str, oid: int) -> tuple[int, str]:
    """A ``[rating, participant_id]`` pair checked, or an error naming what is wrong with it."""
    _expect(isinstance(pair, list) and len(pair) == 2, rel, r_where, f"{brief(pair)} is not a [rating, participant_id] pair")
    rating, person = pair
    _expect(not isinstance(rating, str), rel, r_where, f"rating {brief(rating)} is not a whole number")
    rating = _as_int(rating, rel, r_where, "rating")
    _expect(RATING_RANGE[0] <= rating <= RATING_RANGE[1], rel, r_where, f"rating {rating} is outside {RATING_RANGE[0]}..{RATING_RANGE[1]}")
    _expect(isinstance(person, str) and person.strip() != "", rel, r_where, f"participant id {brief(person)} is not a non-empty string")
    _expect(person in known, rel, r_where, f"participant {brief(person)} is not in {VALUES}")
    _expect((person, pid, oid) not in seen, rel, r_where, f"participant {brief(person)} rated item {pid}/{oid} twice")
    return rating, person


def _read_survey(data, rel, study_id: str, known: set[str], texts: dict, release: Release) -> None:
    _expect(isinstance(data, list), rel, "(top level)", f"expected a list of participant groups, got {type(data).__name__}")
    group_of_item: dict[tuple[str, int], str] = {}
    seen: set[tuple[str, str, int]] = set()
    groups_of: dict[str, list[str]] = defaultdict(list)
    for g, group in enumerate(data):
        gid = f"g{g + 1:02d}"
        _expect(isinstance(group, dict), rel, f"[{g}]", f"expected an object of portrait_id -> options, got {type(group).__name__}")
        release.groups.append(dict(study_id=study_id, group_id=gid, position=g + 1, target_n=None))
        raters: set[str] = set()
        for portrait, options in group.items():
            where = f"[{g}][{_key(portrait)}]"
            pid = _portrait_id(portrait, rel, where)
            _expect(isinstance(options, list), rel, where, f"expected a list of options, got {type(options).__name__}")
            for k, option in enumerate(options):
                o_where = f"{where}[{k}]"
                oid = _as_int(_field(option, "option_id", rel, o_where), rel, f"{o_where}.option_id", "option_id")
                item = (pid, oid)
                _expect(item in texts, rel, f"{o_where}.option_id", f"item {pid}/{oid} is rated but has no text in {TAGGED}")
                _expect(item not in group_of_item, rel, o_where,
                        f"item {pid}/{oid} appears again (first in group {group_of_item.get(item)})")
                group_of_item[item] = gid
                rows = _field(option, "data", rel, o_where)
                _expect(isinstance(rows, list), rel, f"{o_where}.data", f"expected a list of [rating, participant_id], got {type(rows).__name__}")
                for j, pair in enumerate(rows):
                    # A well-formed pair passes this test without formatting any message (24k
                    # pairs in the release); anything else goes through the named checks.
                    if (type(pair) is list and len(pair) == 2 and type(pair[0]) is int
                            and RATING_RANGE[0] <= pair[0] <= RATING_RANGE[1] and type(pair[1]) is str
                            and pair[1] in known and (pair[1], pid, oid) not in seen):
                        rating, person = pair
                    else:
                        rating, person = _rating_pair(pair, rel, f"{o_where}.data[{j}]", known, seen, pid, oid)
                    seen.add((person, pid, oid))
                    raters.add(person)
                    release.ratings.append(dict(study_id=study_id, participant_id=person, portrait_id=pid, option_id=oid,
                                                group_id=gid, rating=rating, position=None, seconds=None, answered_at=None))
        for person in sorted(raters):
            groups_of[person].append(gid)
            release.participations.append(dict(study_id=study_id, participant_id=person, group_id=gid, status="completed"))
    for item, gid in group_of_item.items():
        release.items.append(dict(study_id=study_id, group_id=gid, **texts[item]))
    release.items.sort(key=lambda r: (r["portrait_id"], r["option_id"]))
    release.multi_group = {p: gs for p, gs in sorted(groups_of.items()) if len(gs) > 1}
    release.unrated = sorted(known - set(groups_of))
    release.untagged_unrated = [f"{p}/{o}" for p, o in sorted(set(texts) - set(group_of_item))]


def _read_llm(root: Path, study_id: str, items: set[tuple[str, int]], release: Release) -> None:
    folder = root / LLM_DIR
    if not folder.is_dir():
        return
    for path in sorted(folder.glob(f"*{LLM_SUFFIX}")):
        rel = path.relative_to(root)
        model = path.name[: -len(LLM_SUFFIX)]
        data = _read_json(root, rel, release)
        _expect(isinstance(data, list), rel, "(top level)", f"expected a list of answers, got {type(data).__name__}")
        seen: set[tuple[str, int]] = set()
        for i, entry in enumerate(data):
            where = f"[{i}]"
            pid = _portrait_id(_field(entry, "portrait_id", rel, where), rel, f"{where}.portrait_id")
            oid = _as_int(_field(entry, "option_id", rel, where), rel, f"{where}.option_id", "option_id")
            _expect((pid, oid) in items, rel, where, f"item {pid}/{oid} is not a rated item of this release")
            _expect((pid, oid) not in seen, rel, where, f"item {pid}/{oid} answered twice")
            seen.add((pid, oid))
            variants = _field(entry, "version_responses", rel, where)
            _expect(isinstance(variants, dict) and variants, rel, f"{where}.version_responses", "expected an object of variant -> answer")
            for variant, answer in variants.items():
                v_where = f"{where}.version_responses.{variant}"
                value = None if answer is None else _as_number(answer, rel, v_where, "answer")
                # The same range `vp score-llm` accepts: an answer off the rating scale is a broken file.
                if value is not None and not RATING_RANGE[0] <= value <= RATING_RANGE[1]:
                    _expect(False, rel, v_where, f"answer {value:g} is outside {RATING_RANGE[0]}..{RATING_RANGE[1]}")
                release.llm_answers.append(dict(study_id=study_id, model=model, portrait_id=pid, option_id=oid,
                                                variant=variant, answer=value))
        release.models.append(model)
        sizes = [len(entry["version_responses"]) for entry in data]
        short = sum(size < max(sizes) for size in sizes) if sizes else 0
        if short:
            release.short_variants[model] = (short, max(sizes))


def read_release(root: Path, study_id: str = "release", created: str | None = None) -> Release:
    """Read and validate a release folder into database rows (nothing is written).

    Raises
    ------
    InputError
        naming the file (relative to `root`), the JSON path and the bad value.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected a release checkout holding {SURVEY})")
    release = Release()
    created = created or now()
    survey = _read_json(root, SURVEY, release)
    values = _read_json(root, VALUES, release)
    tagged = _read_json(root, TAGGED, release)
    known = _read_values(values, VALUES, study_id, created, release)
    texts = _read_texts(tagged, TAGGED)
    _read_survey(survey, SURVEY, study_id, known, texts, release)
    _read_llm(root, study_id, {(r["portrait_id"], r["option_id"]) for r in release.items}, release)
    return release


# -- writing ----------------------------------------------------------------------------------
def _stale_keys(db: StudyDB, table: str, study_id: str, rows: list[dict]) -> list[tuple]:
    """Keys of the study's rows of `table` that are not among `rows` (none on a first import)."""
    key = KEYS[table]
    cursor = db.conn.cursor()
    cursor.row_factory = None  # plain tuples: comparable with the wanted keys as they come
    existing = cursor.execute(f"SELECT {', '.join(key)} FROM {table} WHERE study_id = ?", (study_id,)).fetchall()
    if not existing:
        return []
    get = operator.itemgetter(*key)
    wanted = {get(r) if len(key) > 1 else (get(r),) for r in rows}
    return [r for r in existing if r not in wanted]


def import_release(root: Path, db: StudyDB, study_id: str = "release") -> Release:
    """Validate a release folder and store it as study `study_id`, in one transaction.

    Re-importing the same folder is a no-op: the study's creation time is kept, rows are
    upserted with the same values, and rows not in the release are removed.
    """
    root = Path(root).resolve()
    existing = db.query("SELECT source, created_at FROM studies WHERE study_id = ?", (study_id,))
    if existing and existing[0]["source"] != "release":
        raise InputError(f"{db.path}: study_id: {study_id!r} already holds {existing[0]['source']} data; choose another --study-id")
    created = existing[0]["created_at"] if existing else now()
    release = read_release(root, study_id, created)
    config = {"path": str(root), "files": release.files, "models": release.models}
    study = dict(study_id=study_id, title=f"Value Portrait release ({root.name})", source="release",
                 config_json=json.dumps(config, sort_keys=True), created_at=created)
    rows = {"studies": [study], "item_groups": release.groups, "items": release.items,
            "participants": release.participants, "participations": release.participations,
            "scores": release.scores, "ratings": release.ratings, "llm_answers": release.llm_answers}
    with db.transaction():
        # Upserting adds no stale row, so they are found before (a first import reads nothing
        # back); deleted after, children before parents, once parents are upserted first.
        stale = {table: _stale_keys(db, table, study_id, rows[table]) for table in TABLES}
        for table in TABLES:
            db.upsert(table, rows[table])
        for table in reversed(TABLES):
            if stale[table]:
                db.conn.executemany(f"DELETE FROM {table} WHERE " + " AND ".join(f"{k} = ?" for k in KEYS[table]),
                                    stale[table])
    return release


def summary(release: Release, study_id: str, db_path) -> list[str]:
    """What was imported and what looks odd, as lines for the terminal."""
    n_people = len({r["participant_id"] for r in release.participations})
    lines = [
        f"imported study {study_id!r} into {db_path}:",
        f"  {len(release.groups)} groups, {len(release.items)} items "
        f"({len({r['portrait_id'] for r in release.items})} queries), {len(release.participants)} participants "
        f"({n_people} with ratings, {len(release.participations)} participations), {len(release.ratings)} ratings, "
        f"{len(release.scores)} published scores",
        f"  LLM answers: {len(release.llm_answers)} ({', '.join(release.models) or 'no models'})",
    ]
    for model, (short, most) in release.short_variants.items():
        lines.append(f"  note: {model} answered fewer than {most} prompt variants for {short} items")
    for person, groups in release.multi_group.items():
        lines.append(f"  note: participant {person} rated {len(groups)} groups ({', '.join(groups)}) but has a single score "
                     f"record; `vp analyze` counts only the first participation ({groups[0]}) by default")
    if release.unrated:
        lines.append(f"  note: {len(release.unrated)} participants have scores but no ratings: {', '.join(release.unrated)}")
    if release.untagged_unrated:
        lines.append(f"  note: {len(release.untagged_unrated)} items have texts but no ratings and were not imported: "
                     f"{', '.join(release.untagged_unrated[:10])}{' ...' if len(release.untagged_unrated) > 10 else ''}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="the release folder (holding data/prolific/...)")
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="the study database")
    parser.add_argument("--study-id", default="release", help="the study id to store the release under")


def run(args) -> int:
    start = time.perf_counter()
    db_path = Path(args.db)
    created = not db_path.exists()
    try:
        with open_db(db_path) as db:
            release = import_release(args.path, db, args.study_id)
    except BaseException:
        if created:  # a failed import leaves no database behind, not even an empty one
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        raise
    for line in summary(release, args.study_id, args.db):
        print(line)
    print(f"  ({time.perf_counter() - start:.2f} s)")
    return 0
