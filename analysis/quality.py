"""Quality control: which participations count in the analysis, and why the others do not.

One row per participation (a participant in a group). Each rule below can be switched off
and has its threshold as an option; a participation is excluded when it breaks any rule
that is on, and ``reasons`` lists every rule it broke.

``duplicate``
    A participant who took part in more than one group. With the default policy ``first``,
    the first participation (earliest ``started_at``; without times, the lowest group
    position) counts and the later ones are flagged; with ``exclude-all`` every
    participation of such a participant is flagged.
``attention``
    The participant failed more than ``max_failed_checks`` (default 0) attention checks.
``straightlining``
    The same answer across a whole block: all of the participation's item ratings (when it
    has at least ``min_block`` of them), or all 21 PVQ-21 answers.
``speeder``
    Completion time (``completed_at - started_at``) of a completed participation far below
    its group's (groups differ in length, so times are compared within a group):
    (a) more than ``speeder_sd`` (3) standard deviations below the group's mean time, the
    rule crowdworker platforms accept; and (b) below ``speeder_fraction`` (0.3) times the
    group's median time, which still works when the group is small or the times skewed.
    Either criterion flags; 0 switches a criterion off. Mean, SD and median are taken over
    the group's completed participations with both times.
``incomplete``
    Status other than ``completed``, fewer ratings than the group has items, or (when the
    study has raw instrument answers) a missing PVQ-21/BFI-10 answer or no scores at all.

Data without times or attention checks (the public release) cannot break those rules: the
summary says the rule was not applicable rather than that everyone passed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from valueportrait import options as opt

from analysis.scoring import PVQ_COLUMNS

RULES = ("duplicate", "attention", "straightlining", "speeder", "incomplete")
QUALITY_COLUMNS = ["participant_id", "group_id", "included", "reasons"]


@dataclass(frozen=True)
class QualityOptions:
    """Which rules run and their thresholds (see the module docstring)."""

    rules: tuple[str, ...] = RULES
    duplicate_policy: str = "first"       # 'first' or 'exclude-all'
    max_failed_checks: int = 0
    min_block: int = 3
    speeder_sd: float = 3.0
    speeder_fraction: float = 0.3

    def __post_init__(self):
        unknown = set(self.rules) - set(RULES)
        if unknown:
            raise ValueError(f"unknown quality rules {sorted(unknown)}; choose from {RULES}")
        if self.duplicate_policy not in ("first", "exclude-all"):
            raise ValueError(f"duplicate_policy must be 'first' or 'exclude-all', got {self.duplicate_policy!r}")


@dataclass
class QualityResult:
    table: pd.DataFrame                     # quality.csv
    summary: dict = field(default_factory=dict)

    @property
    def included(self) -> pd.DataFrame:
        # Computed each time: the two-stage design marks more participations excluded
        # after quality control (the confirmation wave's raters who screened).
        return self.table.loc[self.table["included"], ["participant_id", "group_id"]]


def _duplicate(parts: pd.DataFrame, policy: str) -> pd.Series:
    counts = parts.groupby("participant_id")["group_id"].transform("size")
    multi = counts > 1
    if policy == "exclude-all":
        return multi
    started = pd.to_datetime(parts["started_at"], utc=True, errors="coerce", format="ISO8601")
    order = parts.assign(_t=started).sort_values(["participant_id", "_t", "group_position"], na_position="last")
    first = ~order.duplicated("participant_id")
    return multi & ~first.reindex(parts.index)


def _attention(parts: pd.DataFrame, attention: pd.DataFrame, max_failed: int) -> pd.Series:
    failed = (attention["passed"] == 0).groupby(attention["participant_id"]).sum()
    return parts["participant_id"].map(failed).fillna(0) > max_failed


def _straightlining(parts: pd.DataFrame, ratings: pd.DataFrame, raw: pd.DataFrame, min_block: int) -> pd.Series:
    stats = ratings.groupby(["participant_id", "group_id"])["rating"].agg(["nunique", "size"])
    key = pd.MultiIndex.from_frame(parts[["participant_id", "group_id"]])
    stats = stats.reindex(key)
    items_flat = ((stats["nunique"] == 1) & (stats["size"] >= min_block)).to_numpy()
    pvq_flat = np.zeros(len(parts), dtype=bool)
    if not raw.empty:
        pvq = raw[PVQ_COLUMNS]
        flat = pvq.notna().all(axis=1) & (pvq.nunique(axis=1) == 1)
        pvq_flat = parts["participant_id"].map(flat).fillna(False).astype(bool).to_numpy()
    return pd.Series(items_flat | pvq_flat, index=parts.index)


def _speeder(parts: pd.DataFrame, sd: float, fraction: float) -> pd.Series:
    timed = parts["seconds"].where(parts["status"] == "completed")
    by_group = timed.groupby(parts["group_id"])
    mean, std, median = by_group.transform("mean"), by_group.transform("std"), by_group.transform("median")
    flag = pd.Series(False, index=parts.index)
    if sd > 0:
        flag |= (timed < mean - sd * std).fillna(False)
    if fraction > 0:
        flag |= (timed < fraction * median).fillna(False)
    return flag


def _incomplete(parts: pd.DataFrame, items: pd.DataFrame, ratings: pd.DataFrame, raw: pd.DataFrame,
                scores: pd.DataFrame) -> pd.Series:
    n_items = items.groupby("group_id").size()
    n_rated = ratings.groupby(["participant_id", "group_id"]).size()
    key = pd.MultiIndex.from_frame(parts[["participant_id", "group_id"]])
    rated = n_rated.reindex(key).fillna(0).to_numpy()
    flag = (parts["status"] != "completed").to_numpy() | (rated < parts["group_id"].map(n_items).fillna(0).to_numpy())
    if not raw.empty:
        complete = raw.notna().all(axis=1)
        flag |= ~parts["participant_id"].map(complete).fillna(False).astype(bool).to_numpy()
    has_scores = scores.notna().any(axis=1)
    flag |= ~parts["participant_id"].map(has_scores).fillna(False).astype(bool).to_numpy()
    return pd.Series(flag, index=parts.index)


def quality_control(study, options: QualityOptions = QualityOptions()) -> QualityResult:
    """Apply the quality rules to every participation of `study` (an ``analysis.dataset.Study``).

    Returns
    -------
    QualityResult: ``table`` has the columns of ``quality.csv`` (``participant_id, group_id,
    included, reasons``, reasons ``;``-separated in rule order, empty when included);
    ``summary`` holds, per rule, whether it was on, whether the data allowed it, how many
    participations it flagged and how many it alone excluded, and notes for the report.
    """
    parts = study.participations.reset_index(drop=True)
    has_times = bool(parts["seconds"].notna().any())
    has_checks = not study.attention.empty
    applicable = {
        "duplicate": (True, ""),
        "attention": (has_checks, "" if has_checks else "the data has no attention checks"),
        "straightlining": (True, "" if not study.raw_answers.empty else "item ratings only: the data has no raw PVQ-21 answers"),
        "speeder": (has_times, "" if has_times else "the data has no start/completion times"),
        "incomplete": (True, ""),
    }
    flags: dict[str, pd.Series] = {}
    for rule in options.rules:
        if not applicable[rule][0]:
            continue
        if rule == "duplicate":
            flags[rule] = _duplicate(parts, options.duplicate_policy)
        elif rule == "attention":
            flags[rule] = _attention(parts, study.attention, options.max_failed_checks)
        elif rule == "straightlining":
            flags[rule] = _straightlining(parts, study.ratings, study.raw_answers, options.min_block)
        elif rule == "speeder":
            flags[rule] = _speeder(parts, options.speeder_sd, options.speeder_fraction)
        elif rule == "incomplete":
            flags[rule] = _incomplete(parts, study.items, study.ratings, study.raw_answers, study.scores)
    broken = pd.DataFrame({rule: flags[rule].astype(bool) for rule in RULES if rule in flags}, index=parts.index)
    reasons = broken.apply(lambda row: ";".join(row.index[row]), axis=1) if not broken.empty and len(parts) \
        else pd.Series("", index=parts.index, dtype=object)
    table = pd.DataFrame({
        "participant_id": parts["participant_id"],
        "group_id": parts["group_id"],
        "included": ~broken.any(axis=1) if not broken.empty else True,
        "reasons": reasons,
    })
    table["included"] = table["included"].astype(bool)
    rules = {}
    for rule in RULES:
        on = rule in options.rules
        ok, why = applicable[rule]
        entry = {"on": on, "applicable": ok}
        if on and ok:
            entry["flagged"] = int(broken[rule].sum())
            entry["only_reason"] = int((broken[rule] & (broken.sum(axis=1) == 1)).sum())
            entry["flagged_ids"] = [f"{p}/{g}" for p, g in parts.loc[broken[rule], ["participant_id", "group_id"]].itertuples(index=False)]
            if why:
                entry["note"] = why
        elif on:
            entry["note"] = f"not applicable: {why}"
        else:
            entry["note"] = "switched off"
        rules[rule] = entry
    summary = {
        "participations": int(len(table)),
        "participants": int(table["participant_id"].nunique()),
        "included_participations": int(table["included"].sum()),
        "excluded_participations": int((~table["included"]).sum()),
        "rules": rules,
        "options": {"rules": list(options.rules), "duplicate_policy": options.duplicate_policy,
                    "max_failed_checks": options.max_failed_checks, "min_block": options.min_block,
                    "speeder_sd": options.speeder_sd, "speeder_fraction": options.speeder_fraction},
    }
    return QualityResult(table.reset_index(drop=True), summary)


def summary_lines(summary: dict) -> list[str]:
    """The quality summary as lines for the terminal."""
    lines = [f"quality control: {summary['included_participations']} of {summary['participations']} participations "
             f"included ({summary['excluded_participations']} excluded)"]
    for rule, entry in summary["rules"].items():
        if "flagged" in entry:
            text = f"  {rule}: flagged {entry['flagged']} ({entry['only_reason']} for this reason alone)"
            if entry["flagged"] and len(entry["flagged_ids"]) <= 5:
                text += f": {', '.join(entry['flagged_ids'])}"
            if entry.get("note"):
                text += f" [{entry['note']}]"
        else:
            text = f"  {rule}: {entry['note']}"
        lines.append(text)
    return lines


# -- command-line options (shared by `vp analyze`) --------------------------------------------
def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quality control")
    for rule in RULES:
        group.add_argument(f"--no-{rule}", dest=f"no_{rule}", action="store_true",
                           help=f"switch the {rule} rule off")
    group.add_argument("--duplicate-policy", choices=("first", "exclude-all"), default="first",
                       help="a participant in several groups: count the first participation, or none")
    group.add_argument("--max-failed-checks", type=opt.count(0), default=0, help="attention checks a participant may fail")
    group.add_argument("--min-block", type=opt.count(1), default=3,
                       help="fewest item ratings for the all-equal (straight-lining) rule to apply")
    group.add_argument("--speeder-sd", type=opt.non_negative(), default=3.0,
                       help="flag times more than this many SD below the group mean (0: off)")
    group.add_argument("--speeder-fraction", type=opt.fraction(), default=0.3,
                       help="flag times below this fraction of the group median (0: off)")


def options_from_args(args) -> QualityOptions:
    return QualityOptions(
        rules=tuple(rule for rule in RULES if not getattr(args, f"no_{rule}", False)),
        duplicate_policy=args.duplicate_policy,
        max_failed_checks=args.max_failed_checks,
        min_block=args.min_block,
        speeder_sd=args.speeder_sd,
        speeder_fraction=args.speeder_fraction,
    )
