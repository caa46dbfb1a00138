"""Write the validation report: one self-contained HTML file from an analysis' output folder.

Sections: participants, instruments, (for a two-stage study) the design and its funnel,
item-value correlations, selected items, (for a simulated study with `vp demo`'s
recovery.json) the known truth, factor analyses, LLM profiles, group bias, methods. Each section reads the files it needs from
the processed folder (``vp analyze``, ``vp score-llm``) and, with ``--db`` or the database
named in ``manifest.json``, the study database (scores, demographics, times); what is
missing is said in the report. Figures are embedded (SVG, large heat maps rasterised inside), CSS
is inline: the file fetches nothing and opens offline. Item texts are shown as plain text.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


from valueportrait import DEFAULT_PROCESSED, DEFAULT_REPORTS, __version__
from valueportrait.atomic import write_text_atomic
from valueportrait.errors import InputError

#: (anchor, heading, section function name in analysis.reporting.sections), in the issue's order.
#: A section function that returns None does not apply to this study (no heading, no entry
#: in the contents): the known-truth section exists only for `vp demo`'s simulated studies.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("participants", "Participants", "participants"),
    ("instruments", "Instruments", "instruments_section"),
    ("design", "Two-stage design", "design_section"),
    ("correlations", "Item-value correlations", "correlations_section"),
    ("selected-items", "Selected items", "selected_items"),
    ("known-truth", "Known truth (simulated study)", "truth_section"),
    ("factor-analyses", "Factor analyses", "factor_analyses"),
    ("llm-profiles", "LLM profiles", "llm_section"),
    ("group-bias", "Group bias", "group_bias_section"),
    ("methods", "Methods", "methods"),
)
DEFAULT_OUT = DEFAULT_REPORTS / "validation_report.html"
#: Sections built before the others: their figures take the longest to draw (radar charts,
#: models x values, paired radars and gap scatters by group, the keyed-items heat map and the
#: rho histograms against chance).
FIGURES_FIRST = ("llm_section", "group_bias_section", "correlations_section")


def build_report(processed: str | Path, db: str | Path | None = None, demographics_csv: str | Path | None = None,
                 title: str = "Validation report", *, allow_mismatch: bool = False) -> str:
    """The report's HTML for the analysis in `processed` (and the study database `db`, if given).

    Refuses (InputError) a folder whose tables are not the ones its manifest.json
    describes (another run's, edited or cut off), unless `allow_mismatch`: then every
    problem is shown at the top of the report.
    """
    from analysis.reporting.drawing import drawer
    from analysis.reporting.html import missing
    from analysis.reporting.inputs import Inputs

    processed = Path(processed)
    if not processed.is_dir():
        raise InputError(f"{processed}: --processed: not a folder (run vp analyze --out {processed} first)")
    inp = Inputs(processed, Path(db) if db else None, Path(demographics_csv) if demographics_csv else None)
    problems = inp.table_problems
    if problems and not allow_mismatch:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{processed}: {problems[0]}{more}. The report would show numbers that do not belong "
                         f"together: run `vp analyze --out {processed}` again (or pass --allow-mismatch to see the "
                         "report with this warning on top)")
    with drawer() as figures:  # the figures are drawn in a worker while the tables are built
        page_html = _page(inp, title, problems)
        return figures.fill(page_html, missing) if figures is not None else page_html


def _page(inp, title: str, problems: list[str]) -> str:
    from analysis.reporting import sections
    from analysis.reporting.html import alarm, esc, missing, page

    body, toc = [], []
    contents = {}
    # Built in an order of their own, the page keeps SECTIONS' order: the sections with the
    # costliest figures first, so that the drawing workers start on those (the longest jobs
    # first leave the two workers the least to wait for one another at the end).
    for fn in sorted((fn for _, _, fn in SECTIONS), key=lambda f: f not in FIGURES_FIRST):
        try:
            contents[fn] = getattr(sections, fn)(inp)
        except Exception as exc:  # one broken table must not cost the reader the whole report
            contents[fn] = missing(f"This section could not be built: {type(exc).__name__}: {exc}")
    for anchor, heading, fn in SECTIONS:
        content = contents[fn]
        if content is None:
            continue
        body.append(f'<section id="{anchor}"><h2>{esc(heading)}</h2>{content}</section>')
        toc.append((anchor, heading))
    header = _header(inp, title)
    if inp.notes:
        body.insert(0, "".join(missing(n) for n in dict.fromkeys(inp.notes)))
    for warning in inp.table_warnings:
        body.insert(0, alarm(warning + "."))
    if problems:
        body.insert(0, "".join(alarm("The tables of this folder are not the ones its manifest.json describes: " + p)
                               for p in problems))
    return page(title, header, toc, "".join(body))


def _header(inp, title: str) -> str:
    from analysis.reporting.html import esc

    m = inp.manifest or {}
    counts = m.get("counts", {}) or {}
    facts = []
    for label, value in (("participants included", counts.get("included_participants")),
                         ("groups", counts.get("groups")), ("items rated", counts.get("items")),
                         ("items in the bank", (counts.get("item_bank") or {}).get("items"))):
        if value is not None:
            facts.append(f"<li><b>{esc(f'{value:,}' if isinstance(value, int) else value)}</b> {esc(label)}</li>")
    prof = inp.csv("llm_profiles.csv")
    if prof is not None:
        plain = [x for x in prof["model"].unique() if "__persona-" not in str(x)]
        facts.append(f"<li><b>{len(plain)}</b> {'LLM' if len(plain) == 1 else 'LLMs'} profiled</li>")
    study = m.get("study_id")
    source = m.get("study_source")
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = [f"study {study}" + (f" ({source})" if source else "") if study else "",
            f"analysis folder {inp.processed}", f"database {inp.db}" if inp.db else "no database",
            f"made {made} by valueportrait {__version__}"]
    return (f"<h1>{esc(title)}</h1><p class=\"meta\">{esc(' · '.join(x for x in meta if x))}</p>"
            + (f'<ul class="keyfacts">{"".join(facts)}</ul>' if facts else ""))


def write_report(processed: str | Path, out: str | Path, db: str | Path | None = None,
                 demographics_csv: str | Path | None = None, *, allow_mismatch: bool = False) -> Path:
    """Build the report and write it atomically to `out`; returns the path."""
    return write_text_atomic(out, build_report(processed, db, demographics_csv, allow_mismatch=allow_mismatch))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processed", type=Path, default=DEFAULT_PROCESSED, help="the folder vp analyze wrote")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the HTML file to write")
    parser.add_argument("--db", type=Path, default=None,
                        help="the study database, for scores, demographics and times (default: the one named in "
                             "manifest.json, if it exists)")
    parser.add_argument("--demographics", type=Path, default=None,
                        help="a demographics CSV (e.g. Prolific's export), merged on participant id")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="build the report even when the tables are not the ones manifest.json describes "
                             "(each problem is shown at its top)")


def run(args) -> int:
    if args.db is not None and not Path(args.db).is_file():
        raise InputError(f"{args.db}: --db: no such database file")
    if args.demographics is not None and not Path(args.demographics).is_file():
        raise InputError(f"{args.demographics}: --demographics: no such file")
    if Path(args.out).is_dir():  # before the minutes of work, not after
        raise InputError(f"{args.out}: is a folder; give a file name for the report (e.g. {Path(args.out) / 'report.html'})")
    start = time.perf_counter()
    from analysis.reporting import drawing

    drawing.start_early()  # the figure workers import matplotlib while this process reads the tables
    try:
        path = write_report(args.processed, args.out, args.db, args.demographics, allow_mismatch=args.allow_mismatch)
    finally:
        drawing.stop_early()
    from analysis.reporting.inputs import Inputs

    checked = Inputs(args.processed)
    for problem in checked.table_warnings + (checked.table_problems if args.allow_mismatch else []):
        print(f"vp report: warning: {problem}", file=sys.stderr)
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0
