"""What the report reads: the processed folder's files, and the study database when there is one.

Every accessor returns None (never raises) when its source is absent, so each section can
say plainly what is missing. Files are read once.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import group_bias as gb
from valueportrait.errors import InputError
from valueportrait.files import read_data_file
from valueportrait.outdir import unverifiable, verify

# Where a file may sit, relative to the processed folder (score-llm's default is processed/llm/;
# vp demo writes recovery.json beside processed/).
LOCATIONS = {"llm_profiles.csv": ("llm_profiles.csv", "llm/llm_profiles.csv"),
             "llm_consistency.csv": ("llm_consistency.csv", "llm/llm_consistency.csv"),
             "personas.json": ("personas.json", "llm/personas.json"),
             "recovery.json": ("recovery.json", "../recovery.json")}  # fmt: skip
#: The contracted tables of `vp analyze`: present without a manifest.json, nothing says which run wrote them.
ANALYSIS_TABLES = ("quality.csv", "correlations.csv", "selection.csv", "item_bank.json")
STR_COLUMNS = {"participant_id": str, "group_id": str, "portrait_id": str, "scope": str, "model": str}


class Inputs:
    """The processed folder (and optional database) a report is built from."""

    def __init__(self, processed: Path, db: Path | None = None, demographics_csv: Path | None = None):
        self.processed = Path(processed)
        self.demographics_csv = demographics_csv
        self.notes: list[str] = []
        self._frames: dict[str, pd.DataFrame | None] = {}
        self.db = Path(db) if db else None
        if self.db is None:
            # The manifest names the database the analysis read; use it when it is still there.
            named = (self.manifest or {}).get("database")
            if named and Path(named).is_file():
                self.db = Path(named)
                self.db_from_manifest = True
        if self.db is not None and not self.db.is_file():
            self.notes.append(f"database {self.db} not found: sections that need it say so")
            self.db = None

    db_from_manifest = False

    def path(self, name: str) -> Path | None:
        for rel in LOCATIONS.get(name, (name,)):
            p = self.processed / rel
            if p.is_file():
                return p
        return None

    def has(self, name: str) -> bool:
        return self.path(name) is not None

    def csv(self, name: str) -> pd.DataFrame | None:
        if name not in self._frames:
            p = self.path(name)
            frame = None
            if p is not None:
                try:
                    frame = pd.read_csv(p, dtype={k: v for k, v in STR_COLUMNS.items()}, keep_default_na=True)
                except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
                    self.notes.append(f"{p}: could not be read ({exc}); left out")
            self._frames[name] = frame
        return self._frames[name]

    def json(self, name: str):
        p = self.path(name)
        if p is None:
            return None
        try:
            return read_data_file(p, "json")
        except InputError as exc:
            self.notes.append(f"could not be read ({exc}); left out")
            return None

    @cached_property
    def manifest(self) -> dict | None:
        m = self.json("manifest.json")
        return m if isinstance(m, dict) else None

    @cached_property
    def table_problems(self) -> list[str]:
        """Where the folder's tables are not the ones its manifest.json describes.

        Every table listed must have the sha256 recorded when `vp analyze` wrote it (so also
        its row count: a table cut off or written by another run is caught), and the keyed
        pairs of selection.csv must meet the rule the manifest's settings name.
        """
        m = self.manifest
        if m is None:
            present = [n for n in ANALYSIS_TABLES if self.has(n)]
            if present and self.has("manifest.json"):
                return ["manifest.json cannot be read, so nothing says which run wrote " + ", ".join(present)]
            return []
        problems = verify(self.processed, m)
        return problems + self._selection_problems(m)

    @cached_property
    def table_warnings(self) -> list[str]:
        """Why the tables cannot be checked at all: no manifest beside them, or one without checksums."""
        present = [n for n in ANALYSIS_TABLES if self.has(n)]
        if not self.has("manifest.json"):
            return [f"no manifest.json beside {', '.join(present)}: nothing says which run wrote them or with which "
                    "settings, so they cannot be checked"] if present else []
        reason = unverifiable(self.manifest) if self.manifest is not None else None
        return [reason] if reason else []

    def _selection_problems(self, m: dict) -> list[str]:
        settings = m.get("settings") or {}
        threshold, alpha, keying = settings.get("threshold"), settings.get("alpha"), settings.get("keying", "pos")
        sel = self.csv("selection.csv") if self.has("selection.csv") else None
        if sel is None or not isinstance(threshold, (int, float)) or not isinstance(alpha, (int, float)) \
                or not {"rho", "p_value"} <= set(sel.columns):
            return []
        rho = pd.to_numeric(sel["rho"], errors="coerce")
        strength = rho.abs() if keying == "abs" else rho
        bad = ~((strength >= threshold - 1e-9) & (pd.to_numeric(sel["p_value"], errors="coerce") < alpha))
        if not bad.any():
            return []
        rule = f"{'|rho|' if keying == 'abs' else 'rho'} >= {threshold:g} and p < {alpha:g}"
        return [f"selection.csv: {int(bad.sum()):,} of its {len(sel):,} keyed pairs do not meet the rule manifest.json "
                f"records ({rule}): the settings and the table come from different runs"]

    @cached_property
    def recovery(self) -> dict | None:
        """`vp demo`'s recovery.json (in the processed folder or the one above it), for a simulated study only."""
        if (self.manifest or {}).get("study_source") != "simulation":
            return None
        data = self.json("recovery.json")
        return data if isinstance(data, dict) else None

    @cached_property
    def item_bank(self) -> list | None:
        b = self.json("item_bank.json")
        return b if isinstance(b, list) else None

    @cached_property
    def study(self):
        """The analysis' view of the database (analysis.dataset.Study), or None."""
        if self.db is None:
            return None
        from analysis.dataset import load_study
        from valueportrait.storage import open_db

        try:
            with open_db(self.db, readonly=True) as con:
                # Not the ratings: the report shows the analysis' tables, never its own estimates.
                return load_study(con, (self.manifest or {}).get("study_id"), with_ratings=False)
        except Exception as exc:  # a report should still be made from the files alone
            self.notes.append(f"database {self.db}: could not be read ({exc})")
            return None

    def rated(self) -> set[str] | None:
        """Who rated any item in the study (the study is loaded without its ratings), or None."""
        if self.study is None:
            return None
        from valueportrait.storage import open_db

        try:
            with open_db(self.db, readonly=True) as con:
                rows = con.query("SELECT DISTINCT participant_id FROM ratings WHERE study_id = ?",
                                 (self.study.study_id,))
        except Exception as exc:  # noqa: BLE001 (said in the report, as for the study)
            self.notes.append(f"database {self.db}: could not be read ({exc})")
            return None
        return {str(r[0]) for r in rows}

    @cached_property
    def included(self) -> set[str] | None:
        q = self.csv("quality.csv")
        if q is None or "included" not in q.columns:
            return None
        inc = q["included"].astype(str).str.lower().isin(["true", "1", "yes"])
        return set(q.loc[inc, "participant_id"].astype(str))

    @cached_property
    def scores(self) -> pd.DataFrame | None:
        """Included participants' scores: wide, columns MultiIndex (family, dimension)."""
        frame = None
        p = self.path("scores.csv")
        if p is not None:
            raw = pd.read_csv(p, dtype={"participant_id": str})
            if {"participant_id", "family", "dimension", "score"} <= set(raw.columns):
                frame = raw.pivot_table(index="participant_id", columns=["family", "dimension"], values="score")
        if frame is None and self.study is not None and not self.study.scores.empty:
            frame = self.study.scores.copy()
        if frame is None:
            return None
        frame.index = frame.index.astype(str)
        if self.included is not None:
            frame = frame[frame.index.isin(self.included)]
        frame = frame.dropna(how="all")
        return frame if len(frame) else None

    @cached_property
    def score_source(self) -> str:
        if self.has("scores.csv"):
            return "scores.csv"
        if self.study is not None:
            return f"the database ({self.study.score_source})"
        return ""

    @cached_property
    def demographics(self) -> pd.DataFrame | None:
        try:
            demo = gb.load_demographics(self.processed, self.db, self.demographics_csv)
        except Exception as exc:
            self.notes.append(f"demographics could not be read: {exc}")
            return None
        return demo if gb.has_demographics(demo) else None

    @cached_property
    def timings(self) -> tuple[np.ndarray, str] | None:
        """Seconds per completed participation and where they came from."""
        if self.study is not None:
            parts = self.study.participations
            sec = parts.loc[parts["status"] == "completed", "seconds"].dropna().to_numpy(float)
            if len(sec):
                return sec, "the database: completion minus start time of completed participations"
        for name in ("participants.csv", "demographics.csv"):
            p = self.path(name)
            if p is None:
                continue
            try:
                demo = gb.read_demographics_csv(p)
            except Exception:
                continue
            sec = demo["time_taken"].dropna().to_numpy(float)
            if len(sec):
                return sec, f"{name} (time taken)"
        if self.demographics_csv:
            demo = gb.read_demographics_csv(self.demographics_csv)
            sec = demo["time_taken"].dropna().to_numpy(float)
            if len(sec):
                return sec, f"{Path(self.demographics_csv).name} (time taken)"
        return None
