"""Load one study from the database into analysis-ready frames.

Every analysis step reads a :class:`Study`, never the database: the app's data, a
simulated study and an imported release all arrive in the same shape.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

import instruments as inst
from analysis.scoring import BFI_COLUMNS, PVQ_COLUMNS, score_instruments
from valueportrait.storage import KEYS, StudyDB

#: Tables whose rows the analysis uses, for the input hash (columns with no bearing on the
#: results, like the time a participant row was created, are left out).
HASHED_TABLES: dict[str, tuple[str, ...] | None] = {
    "item_groups": None,
    "items": None,
    "participants": ("participant_id", "age", "gender", "education", "politics", "country", "demographics_json"),
    "participations": ("participant_id", "group_id", "status", "test_mode", "started_at", "completed_at"),
    "instrument_answers": ("participant_id", "instrument", "item_id", "answer"),
    "scores": None,
    "ratings": ("participant_id", "portrait_id", "option_id", "group_id", "rating"),
    "attention_checks": ("participant_id", "check_id", "expected", "answer", "passed"),
}

DIMENSIONS: tuple[tuple[str, str], ...] = tuple((fam, d) for fam, dims in inst.FAMILIES.items() for d in dims)


@dataclass
class Study:
    """One study, analysis-ready.

    Attributes
    ----------
    groups : DataFrame ``group_id, position, target_n`` in study order.
    items : DataFrame ``portrait_id, option_id, group_id, source, title, query_text, response, meta``
        (``meta`` is the decoded ``meta_json``, a dict).
    ratings : long DataFrame ``participant_id, group_id, portrait_id, option_id, rating, position, seconds``.
    participations : DataFrame ``participant_id, group_id, group_position, status, started_at, completed_at,
        seconds`` (``seconds`` = completed_at - started_at, NaN when either is missing).
    participants : DataFrame of demographics, one row per participant.
    attention : DataFrame ``participant_id, check_id, expected, answer, passed``.
    raw_answers : wide DataFrame ``pvq1..pvq21, bfi1..bfi10`` indexed by participant_id (NaN = not answered);
        empty when the study has no raw answers (the release).
    scores : wide DataFrame indexed by participant_id, columns a MultiIndex ``(family, dimension)``
        over all 19 dimensions.
    score_source : str, where the scores came from.
    """

    study_id: str
    source: str
    groups: pd.DataFrame
    items: pd.DataFrame
    ratings: pd.DataFrame
    participations: pd.DataFrame
    participants: pd.DataFrame
    attention: pd.DataFrame
    raw_answers: pd.DataFrame
    scores: pd.DataFrame
    score_source: str
    notes: list[str] = field(default_factory=list)

    def group_items(self, group_id: str) -> pd.DataFrame:
        return self.items[self.items["group_id"] == group_id]

    @cached_property
    def _people(self) -> pd.Index:
        """Every participant id that has ratings or scores (sorted): the code space of :meth:`participant_codes`."""
        ids = np.concatenate([self.ratings["participant_id"].to_numpy(object), self.scores.index.to_numpy(object)])
        return pd.Index(np.unique(ids.astype(str)), dtype="str")

    @cached_property
    def _score_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(row of ``scores`` per participant code, -1 for none; the scores as a float array)."""
        rows = np.full(len(self._people) + 1, -1)  # the extra last entry answers code -1
        rows[self._people.get_indexer(self.scores.index)] = np.arange(len(self.scores))
        return rows, self.scores.to_numpy(float)

    @cached_property
    def _group_codes(self) -> dict[str, tuple]:
        """Per group: item columns, and the ratings as (participant codes, item positions, values) arrays.

        (The columns' levels are kept as arrays too: ``item_levels``.)
        """
        empty = pd.MultiIndex.from_arrays([[], []], names=["portrait_id", "option_id"])
        out = {}
        for gid, items in self.items.groupby("group_id", sort=False):
            columns = pd.MultiIndex.from_arrays([items["portrait_id"].to_numpy(), items["option_id"].to_numpy()],
                                                names=["portrait_id", "option_id"])
            out[gid] = (columns, None)
        for gid, r in self.ratings.groupby("group_id", sort=False):
            columns = out.get(gid, (empty, None))[0]
            position = columns.get_indexer(pd.MultiIndex.from_arrays([r["portrait_id"].to_numpy(), r["option_id"].to_numpy()]))
            codes = self._people.get_indexer(r["participant_id"].astype("str"))
            out[gid] = (columns, (codes, position, r["rating"].to_numpy(float)))
        return out

    @cached_property
    def item_levels(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per group: (portrait ids, option ids) of its item columns, as arrays in column order."""
        return {gid: (columns.get_level_values(0).to_numpy(object), columns.get_level_values(1).to_numpy())
                for gid, (columns, _) in self._group_codes.items()}

    def participant_codes(self, participants) -> np.ndarray:
        """Integer codes of participant ids for :meth:`group_arrays` (-1: no ratings or scores in this study)."""
        if not isinstance(participants, (pd.Series, pd.Index)):
            participants = pd.Index(list(participants), dtype=self._people.dtype)
        return self._people.get_indexer(participants)

    def group_arrays(self, group_id: str, codes: np.ndarray) -> tuple[pd.MultiIndex, np.ndarray, np.ndarray]:
        """(item columns, participants x items ratings, participants x dimensions scores) of one group, as floats.

        Rows follow `codes` (:meth:`participant_codes`, without repeats); NaN = not rated,
        no scores. The analysis' inner loops (correlations, bootstrap) use these arrays and
        build no frame per group.
        """
        codes = np.asarray(codes, dtype=np.int64)
        score_rows, score_values = self._score_rows
        at = score_rows[codes]
        scores = np.full((len(codes), score_values.shape[1]), np.nan)
        scores[at >= 0] = score_values[at[at >= 0]]
        columns, ratings = self._group_codes.get(group_id, (None, None))
        if columns is None:
            columns = pd.MultiIndex.from_arrays([[], []], names=["portrait_id", "option_id"])
        matrix = np.full((len(codes), len(columns)), np.nan)
        if ratings is not None:
            pid_codes, position, values = ratings
            row_of = np.full(len(self._people) + 1, -1)
            known = codes >= 0
            row_of[codes[known]] = np.flatnonzero(known)
            row = row_of[pid_codes]
            keep = (row >= 0) & (position >= 0)
            matrix[row[keep], position[keep]] = values[keep]
        return columns, matrix, scores

    def rating_matrix(self, group_id: str, participants=None) -> pd.DataFrame:
        """Participants x items (columns ``(portrait_id, option_id)`` in item order) of one group; NaN = not rated.

        Rows are `participants` in the order given (default: everyone who rated in the group, sorted).
        """
        if participants is None:
            _, ratings = self._group_codes.get(group_id, (None, None))
            people = [] if ratings is None else sorted(self._people[np.unique(ratings[0])])
        else:
            people = list(dict.fromkeys(participants))
        columns, matrix, _ = self.group_arrays(group_id, self.participant_codes(people))
        return pd.DataFrame(matrix, index=pd.Index(people, name="participant_id"), columns=columns)


def _instrument_wide(answers: pd.DataFrame) -> pd.DataFrame:
    columns = PVQ_COLUMNS + BFI_COLUMNS
    if answers.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="participant_id"), dtype=float)
    prefix = answers["instrument"].map({"pvq21": "pvq", "bfi10": "bfi"})
    answers = answers.assign(column=prefix + answers["item_id"].astype(str))
    wide = answers.pivot(index="participant_id", columns="column", values="answer").astype(float)
    return wide.reindex(columns=columns)


def _scores(raw: pd.DataFrame, published: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """All 19 dimensions per participant: computed from raw answers where they exist, else the published scores."""
    columns = pd.MultiIndex.from_tuples(DIMENSIONS, names=["family", "dimension"])
    parts, sources = [], []
    if not published.empty:
        pub = published.pivot_table(index="participant_id", columns=["family", "dimension"], values="score", aggfunc="first")
        parts.append(pub.reindex(columns=columns))
        sources.append("published scores")
    if not raw.empty:
        computed, _ = score_instruments(raw)
        computed.columns = pd.MultiIndex.from_tuples([(inst.FAMILY_OF[c], c) for c in computed.columns])
        computed = computed.reindex(columns=columns)
        # Raw answers win over published scores for the same participant.
        parts = [computed] + [p.drop(index=computed.index, errors="ignore") for p in parts]
        sources.insert(0, "raw PVQ-21/BFI-10 answers")
    if not parts:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="participant_id"), dtype=float), "none"
    scores = pd.concat(parts).sort_index()
    scores.index.name = "participant_id"
    return scores, " + ".join(sources)


def _seconds_between(start: pd.Series, end: pd.Series) -> pd.Series:
    a = pd.to_datetime(start, utc=True, errors="coerce", format="ISO8601")
    b = pd.to_datetime(end, utc=True, errors="coerce", format="ISO8601")
    return (b - a).dt.total_seconds()


def load_study(db: StudyDB, study_id: str | None = None, *, include_tests: bool = False,
               with_ratings: bool = True) -> Study:
    """Read study `study_id` (or the only study) from `db`.

    Test-mode participations (the app's runs without a Prolific id: pilots, the researcher's
    own clicks) and everything their participants answered are left out, with a note, unless
    `include_tests`. With ``with_ratings=False`` the ratings, the largest table, are not read
    (``Study.ratings`` is then empty, with its columns): for a reader that needs the rest
    only, as the report does.
    """
    study_id = db.resolve_study(study_id)
    source = db.query("SELECT source FROM studies WHERE study_id = ?", (study_id,))[0][0]
    groups = db.frame("SELECT group_id, position, target_n FROM item_groups WHERE study_id = ? ORDER BY position, group_id",
                      (study_id,))
    items = db.frame(
        "SELECT i.portrait_id, i.option_id, i.group_id, i.source, i.title, i.query_text, i.response, i.meta_json "
        "FROM items i JOIN item_groups g USING (study_id, group_id) WHERE i.study_id = ? "
        "ORDER BY g.position, i.portrait_id, i.option_id", (study_id,))
    # A NULL meta_json arrives as None or, in a column that also holds text, as NaN.
    items["meta"] = [json.loads(m) if isinstance(m, str) and m else {} for m in items.pop("meta_json")]
    items["option_id"] = items["option_id"].astype(int)
    ratings = db.frame("SELECT participant_id, group_id, portrait_id, option_id, rating, position, seconds FROM ratings "
                       f"WHERE study_id = ? {'' if with_ratings else 'AND 0 '}ORDER BY participant_id, portrait_id, option_id",
                       (study_id,))
    participations = db.frame(
        "SELECT p.participant_id, p.group_id, g.position AS group_position, p.status, p.test_mode, p.started_at, p.completed_at "
        "FROM participations p JOIN item_groups g USING (study_id, group_id) WHERE p.study_id = ? "
        "ORDER BY g.position, p.participant_id", (study_id,))
    participations["seconds"] = _seconds_between(participations["started_at"], participations["completed_at"])
    participants = db.frame("SELECT participant_id, age, gender, education, politics, country, demographics_json "
                            "FROM participants WHERE study_id = ? ORDER BY participant_id", (study_id,))
    attention = db.frame("SELECT participant_id, check_id, expected, answer, passed FROM attention_checks "
                         "WHERE study_id = ? ORDER BY participant_id, check_id", (study_id,))
    raw = _instrument_wide(db.frame("SELECT participant_id, instrument, item_id, answer FROM instrument_answers "
                                    "WHERE study_id = ?", (study_id,)))
    published = db.frame("SELECT participant_id, family, dimension, score FROM scores WHERE study_id = ?", (study_id,))
    notes = []
    tests = participations["test_mode"].fillna(0).astype(int) == 1
    if tests.any() and not include_tests:
        gone = set(participations.loc[tests, "participant_id"]) - set(participations.loc[~tests, "participant_id"])
        participations = participations[~tests].reset_index(drop=True)
        ratings, participants, attention = (f[~f["participant_id"].isin(gone)].reset_index(drop=True)
                                            for f in (ratings, participants, attention))
        raw = raw.drop(index=list(gone), errors="ignore")
        published = published[~published["participant_id"].isin(gone)]
        notes.append(f"{int(tests.sum())} test-mode participations (no Prolific id) left out")
    scores, score_source = _scores(raw, published)
    if raw.empty:
        notes.append("no raw PVQ-21/BFI-10 answers: scores are the published ones")
    return Study(study_id, source, groups, items, ratings, participations, participants, attention, raw, scores,
                 score_source, notes)


def input_hash(db: StudyDB, study_id: str) -> str:
    """sha256 of a canonical dump of the study's rows the analysis uses.

    Rows are sorted by key and written as JSON without the study id, so the hash depends
    on the data only: not on row order, file layout, the study's name or when it was stored.
    """
    digest = hashlib.sha256()
    for table, columns in HASHED_TABLES.items():
        key = [k for k in KEYS[table] if k != "study_id"]
        cols = list(columns) if columns else [c for c in db.frame(f"SELECT * FROM {table} LIMIT 0").columns if c != "study_id"]
        rows = db.query(f"SELECT {', '.join(cols)} FROM {table} WHERE study_id = ? ORDER BY {', '.join(key)}", (study_id,))
        digest.update(json.dumps([table, cols], separators=(",", ":")).encode())
        digest.update(json_lines(rows).encode())
    return digest.hexdigest()


def json_lines(rows) -> str:
    """Each row as ``json.dumps(list(row), separators=(",", ":"), default=str)`` plus a newline, joined.

    The same text, built faster: a flat list's JSON is its values' JSON joined by commas in
    brackets, and each distinct value of a column (ids, ratings repeat thousands of times)
    is encoded once. Values are told apart by type as well (1, 1.0 and True encode
    differently but are equal as keys).
    """
    encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
    columns = list(zip(*rows))
    encoded = []
    for column in columns:
        cache = {}
        out = []
        for value in column:
            key = (type(value), value)
            text = cache.get(key)
            if text is None:
                text = cache[key] = encode(value)
            out.append(text)
        encoded.append(out)
    return "".join(["[" + ",".join(parts) + "]\n" for parts in zip(*encoded)])


def complete_pvq(study: Study) -> pd.Series:
    """Per participant with raw answers, whether all 21 PVQ and 10 BFI answers are there."""
    if study.raw_answers.empty:
        return pd.Series(dtype=bool)
    return study.raw_answers.notna().all(axis=1)


__all__ = ["Study", "load_study", "input_hash", "DIMENSIONS", "complete_pvq"]


def participants_without_ratings(study: Study, rated: set[str] | None = None) -> list[str]:
    """People with questionnaire scores or answers who rated no item (the release has ten).

    They are in no participation, so quality control never sees them; the methods name them.
    ``rated``: who rated anything, when ``study`` was loaded without its ratings.
    """
    scored = set(study.scores.dropna(how="all").index.astype(str)) | set(study.raw_answers.index.astype(str))
    return sorted(scored - (set(study.ratings["participant_id"].astype(str)) if rated is None else rated))
