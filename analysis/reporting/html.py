"""HTML building blocks for the report: escaped text, tables, embedded figures, the page.

Everything the page needs is inside it: the CSS is inline and figures are ``data:`` URIs,
so the file opens offline and fetches nothing. Any text that comes from data (item texts,
model names, notes) goes through :func:`esc`; nothing from data is ever inserted as markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from instruments import DIMENSION_LABELS, FAMILY_LABELS, dimension_label

#: The one helper for drawing a dimension's name (``Self_Direction`` -> ``Self-Direction``).
label = dimension_label

#: Column names -> words for table headers; other names get their underscores as spaces.
#: A table's own ``headers`` win over these.
HEADER_WORDS: dict[str, str] = {
    "group_id": "group", "portrait_id": "query", "option_id": "response", "n_items": "items",
    "p_value": "p", "q_value": "q (BH)", "ci_low": "CI low", "ci_high": "CI high", "rho": "rho",
    "chi2": "chi²", "cfi": "CFI", "tli": "TLI", "rmsea": "RMSEA", "srmr": "SRMR", "kmo": "KMO",
    "kmo_item": "item KMO", "bartlett_chi2": "Bartlett chi²", "bartlett_df": "Bartlett df", "bartlett_p": "Bartlett p",
    "n_indicators": "indicators", "r_squared": "R²", "icc": "ICC", "icc_type": "ICC type",
    "spearman_brown": "Spearman-Brown", "alpha_ci_low": "alpha CI low", "alpha_ci_high": "alpha CI high",
    "eta_squared": "eta²", "kruskal_h": "Kruskal-Wallis H", "kruskal_p": "Kruskal-Wallis p",
    "kruskal_q": "Kruskal-Wallis q", "n_groups": "groups", "n_humans": "participants", "n_values": "values",
    "spearman_rho": "rank correlation", "spearman_p": "rank correlation p", "heldout_rho_mean": "held-out rho",
}  # fmt: skip


def header_words(column) -> str:
    """A column name as a table header in words (``n_items`` -> ``items``, ``order_bias_t`` -> ``order bias t``)."""
    text = str(column)
    return HEADER_WORDS.get(text, text.replace("_", " "))


#: Codes that some columns hold, in words.
CODE_WORDS: dict[str, dict[str, str]] = {
    "family": FAMILY_LABELS,
    "attribute": {"age_band": "age band"},
    "test": {"welch_t": "Welch's t", "anova": "one-way ANOVA"},
    "model": {"one_factor_keyed": "one factor: keyed items", "pvq_values": "PVQ-21: ten values",
              "pvq_higher": "PVQ-21: higher-order values"},
}


def cell_label(column, value) -> str | None:
    """Words for a cell that holds a code: a dimension name anywhere, a family or test code in its column."""
    if isinstance(value, str):
        words = CODE_WORDS.get(column, {}).get(value)
        if words is not None:
            return words
        if value in DIMENSION_LABELS:
            return DIMENSION_LABELS[value]
    return None


def esc(value) -> str:
    """Plain text -> HTML text (quotes too, so it is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_num(value, digits: int = 2) -> str:
    """A number for a table cell: fixed digits, '' for NaN, p-values in scientific form when tiny."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return ""
    if x.is_integer() and abs(x) < 1e15 and digits == 0:
        return f"{int(x):,}"
    return f"{x:.{digits}f}"


def fmt_p(value) -> str:
    if value is None or pd.isna(value):
        return ""
    x = float(value)
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def fmt_ci(low, high, digits: int = 2) -> str:
    if pd.isna(low) or pd.isna(high):
        return ""
    return f"[{float(low):.{digits}f}, {float(high):.{digits}f}]"


def diverging_bg(value, scale: float) -> str:
    """A light red/blue background for a signed value (|value| / scale -> intensity)."""
    if value is None or pd.isna(value) or scale <= 0:
        return ""
    t = max(-1.0, min(1.0, float(value) / scale))
    a = abs(t) * 0.55
    rgb = (33, 102, 172) if t > 0 else (178, 24, 43)
    return f"background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.2f})"


#: Tables with at least this many columns print in a smaller font (``table.dense``).
DENSE_COLUMNS = 11


def table(
    frame: pd.DataFrame,
    formats: dict[str, Callable] | None = None,
    headers: dict[str, str] | None = None,
    cell_style: dict[str, Callable] | None = None,
    caption: str | None = None,
    css_class: str = "",
) -> str:
    """A DataFrame as an HTML table; every cell escaped, numbers right-aligned.

    ``formats[col](value) -> str`` formats a column (default: 2 decimals for floats);
    ``cell_style[col](value) -> str`` gives an inline style for a cell. Headers are in words
    (``headers``, else :func:`header_words`); cells holding a dimension name or a family code
    show its label (:func:`cell_label`), so the page spells each value one way.
    """
    head, rows = _table_parts(frame, formats, headers, cell_style, caption, css_class)
    return head + "".join(rows) + _TABLE_END


_TABLE_END = "</tbody></table></div>"


def _table_parts(frame: pd.DataFrame, formats: dict[str, Callable] | None = None, headers: dict[str, str] | None = None,
                 cell_style: dict[str, Callable] | None = None, caption: str | None = None,
                 css_class: str = "") -> tuple[str, list[str]]:
    """(everything up to the first row, one HTML string per row) of :func:`table`."""
    formats = formats or {}
    headers = headers or {}
    cell_style = cell_style or {}
    cols = list(frame.columns)
    if len(cols) >= DENSE_COLUMNS:  # many columns: a smaller print font, so the table still fits A4
        css_class = f"{css_class} dense".strip()
    out = [f'<div class="table-wrap"><table class="{esc(css_class)}">']
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(headers.get(c, header_words(c)))}</th>" for c in cols)
               + "</tr></thead><tbody>")
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in cols}
    # Column by column (one format and one class per column), then row by row: the same cells, fewer lookups.
    columns = []
    for k, c in enumerate(cols):
        values = list(frame.iloc[:, k])  # Python scalars, as itertuples gives them
        if c in formats:
            texts = map(formats[c], values)
        elif numeric[c]:
            texts = map(fmt_num, values)
        else:
            texts = ("" if _isna(v) else cell_label(c, v) or str(v) for v in values)
        num = ' class="num"' if numeric[c] or c in formats else ""
        if c in cell_style:
            styles = map(cell_style[c], values)
            columns.append([f'<td{num} style="{esc(st)}">{esc(t)}</td>' if st else f"<td{num}>{esc(t)}</td>"
                            for t, st in zip(texts, styles)])
        else:
            columns.append([f"<td{num}>{esc(t)}</td>" for t in texts])
    rows = ["<tr>" + "".join(cells) + "</tr>" for cells in zip(*columns)]
    return "".join(out), rows


def sorted_views(frame: pd.DataFrame, views: list[tuple[str, list[str], list[bool]]], name: str, **table_args) -> str:
    """One table shown sorted several ways, chosen with radio buttons: sortable with no script.

    ``views`` are ``(label, columns to sort by, ascending flags)``; the first is shown first.
    Columns whose name starts with ``_`` can serve as sort keys and are not shown. Every
    view is a pre-sorted copy of the table; CSS shows the one whose button is checked (and
    prints it). ``name`` must be unique on the page; ``table_args`` go to :func:`table`.
    """
    if len(views) > MAX_VIEWS:
        raise ValueError(f"at most {MAX_VIEWS} views")
    out = ['<div class="views">', '<span class="views-label">Sort by:</span>']
    for k, (label, _, _) in enumerate(views):
        ident = esc(f"{name}-v{k}")
        out.append(f'<input type="radio" class="v{k}" id="{ident}" name="{esc(name)}"{" checked" if k == 0 else ""}>'
                   f'<label for="{ident}">{esc(label)}</label>')
    # Each row's HTML is made once; each view puts the rows in its own order.
    plain = frame.reset_index(drop=True)
    head, rows = _table_parts(plain[[c for c in plain.columns if not str(c).startswith("_")]], **table_args)
    for k, (_, by, ascending) in enumerate(views):
        order = plain.sort_values(by, ascending=ascending, kind="stable", na_position="last").index
        out.append(f'<div class="view v{k}">{head}{"".join(rows[i] for i in order)}{_TABLE_END}</div>')
    out.append("</div>")
    return "".join(out)


MAX_VIEWS = 6
#: The CSS behind :func:`sorted_views` (radio buttons and the pre-sorted copies of a table).
VIEWS_CSS = (
    ".views > input { position: absolute; opacity: 0; }"
    " .views > label { display: inline-block; border: 1px solid var(--line); border-radius: 4px; padding: 1px 8px;"
    " margin: 0 4px 6px 0; cursor: pointer; font-size: 0.88em; }"
    " .views > input:checked + label { background: var(--accent); color: #fff; border-color: var(--accent); }"
    " .views > input:focus-visible + label { outline: 2px solid var(--accent); }"
    " .views-label { color: var(--muted); font-size: 0.88em; margin-right: 6px; }"
    " .views > .view { display: none; }"
    + "".join(f" .views > input.v{k}:checked ~ .view.v{k} {{ display: block; }}" for k in range(MAX_VIEWS))
    + " @media print { .views > label, .views-label { display: none; } }"
)


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def figure(fig, alt: str, caption: str = "", fmt: str = "svg", width: str | None = None) -> str:
    """A figure as an ``<img>`` with a ``data:`` URI (SVG; PNG with ``fmt="png"``).

    ``fig`` is a matplotlib figure (closed afterwards) or a :class:`~analysis.reporting.drawing.Plot`:
    that one is drawn by the open :func:`~analysis.reporting.drawing.drawer`'s worker (a
    placeholder stands here until the page is filled), else on the spot. An ``<img>`` (not
    inline ``<svg>``) keeps the SVG's namespace declarations out of the page and lets a
    test check that every image loaded.
    """
    from analysis.reporting import drawing

    def wrap(mime: str, data: str) -> str:
        # The width caps the figure, not the image: the image keeps max-width 100% of it, so it
        # shrinks with a narrow window or the printed page.
        style = f' style="max-width:{esc(width)}"' if width else ""
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return f'<figure{style}><img src="data:{mime};base64,{data}" alt="{esc(alt)}">{cap}</figure>'

    if isinstance(fig, drawing.Plot):
        d = drawing.active()
        if d is not None:
            return d.submit(fig, fmt, wrap)
        fig = fig.draw()
    return wrap(*drawing.encode(fig, fmt))


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def alarm(text: str) -> str:
    """A warning nobody can miss (tables that may not be what they claim to be)."""
    return f'<p class="alarm" role="alert">{esc(text)}</p>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def details(summary: str, body_html: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body_html}</details>"


def sources(used: Iterable[tuple[str, bool]]) -> str:
    """'Read: a.csv, b.csv. Missing: c.csv.' for the top of a section."""
    used = list(used)
    have = [n for n, ok in used if ok]
    lack = [n for n, ok in used if not ok]
    parts = []
    if have:
        parts.append("Read: " + ", ".join(have) + ".")
    if lack:
        parts.append("Not found: " + ", ".join(lack) + ".")
    return f'<p class="sources">{esc(" ".join(parts))}</p>' if parts else ""


#: The printed page: A4 with the margins of the CSS ``@page`` rule below; tables must fit its width.
PAGE_MM = (210.0, 297.0)
PAGE_MARGINS_MM = (14.0, 12.0, 16.0, 12.0)  # top, right, bottom, left
CONTENT_WIDTH_MM = PAGE_MM[0] - PAGE_MARGINS_MM[1] - PAGE_MARGINS_MM[3]
CONTENT_HEIGHT_MM = PAGE_MM[1] - PAGE_MARGINS_MM[0] - PAGE_MARGINS_MM[2]

#: Background classes of heat-map cells: rho binned in steps of .1 from -.5 to .5 (beyond: the end bins).
HEAT_CLASSES: dict[str, str] = {
    f"{'n' if k < 0 else 'p'}{abs(k)}": (f"rgba(33,102,172,{min(abs(k), 5) * 0.11:.2f})" if k > 0
                                        else f"rgba(178,24,43,{min(abs(k), 5) * 0.11:.2f})")
    for k in range(-5, 6) if k != 0
}


#: Heat-map class names by rho bin (-5 .. 5), for :func:`heat_classes`.
_HEAT_NAMES = np.array([f"hn{k}" for k in range(5, 0, -1)] + [""] + [f"hp{k}" for k in range(1, 6)], dtype=object)


def heat_classes(values: np.ndarray) -> np.ndarray:
    """The heat-map class of every rho in an array (``hp3`` for .25 <= rho < .35; '' near zero or NaN)."""
    values = np.asarray(values, dtype=float)
    k = np.clip(np.round(np.where(np.isnan(values), 0.0, values) * 10), -5, 5).astype(int)
    return _HEAT_NAMES[k + 5]


CSS = """
:root { --fg:#1d2330; --muted:#5b6473; --line:#d9dde3; --bg:#ffffff; --soft:#f5f7fa; --accent:#2a5d9f; --warn:#8a4b00; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 60px; }
header.top { border-bottom: 2px solid var(--accent); margin-bottom: 18px; padding-bottom: 10px; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.35em; margin: 34px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); color: var(--accent); }
h3 { font-size: 1.08em; margin: 20px 0 6px; }
p { margin: 6px 0 10px; max-width: 80ch; }
.meta, .sources { color: var(--muted); font-size: 0.88em; }
.missing { background: #fff6e8; border-left: 4px solid #e0a040; padding: 8px 12px; color: var(--warn); max-width: none; }
.alarm { background: #fde8e8; border: 2px solid #b3261e; padding: 10px 14px; color: #8c1d18; font-weight: 600; max-width: none; }
.note { background: var(--soft); border-left: 4px solid var(--line); padding: 6px 12px; max-width: none; }
.keyfacts { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; padding: 0; list-style: none; }
.keyfacts li { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; }
.keyfacts b { font-size: 1.15em; }
nav.toc ol { columns: 2; margin: 6px 0; }
nav.toc a { color: var(--accent); text-decoration: none; }
.table-wrap { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 0.86em; }
caption { text-align: left; color: var(--muted); padding: 2px 0 4px; caption-side: top; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td:not([style]) { background: #fafbfc; }
figure { margin: 10px 0 16px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 0.86em; margin-top: 4px; max-width: 90ch; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 6px 16px; }
details { border: 1px solid var(--line); border-radius: 6px; padding: 4px 10px; margin: 6px 0; }
details > summary { cursor: pointer; font-weight: 600; }
.item { border-top: 1px dashed var(--line); padding: 6px 0; }
.item .q, .item .r { white-space: pre-wrap; overflow-wrap: anywhere; margin: 2px 0 4px; }
.item .q { color: var(--muted); }
.item .stats { font-size: 0.85em; color: var(--muted); }
.methods { background: var(--soft); border: 1px solid var(--line); padding: 12px 16px; border-radius: 6px; max-width: none; }
code { font-size: 0.92em; background: var(--soft); padding: 0 3px; border-radius: 3px; }
@media (max-width: 700px) { nav.toc ol { columns: 1; } main { padding: 12px; } }
/* heat-map tables: one coloured cell per dimension, headers written upwards */
table.heat { font-size: 0.8em; }
table.heat th.v { vertical-align: bottom; padding: 2px 1px; }
table.heat th.v span { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }
table.heat td { padding: 1px 3px; }
table.heat td.keyed { font-weight: 700; outline: 1.5px solid #1d2330; outline-offset: -2px; }
""" + "".join(f"table.heat td.h{k} {{ background: {c}; }}\n" for k, c in HEAT_CLASSES.items()) + """
.flag { color: var(--warn); font-weight: 600; }
table.lines td.num { white-space: pre-line; }
/* Print: A4, every table within the page width, collapsed sections open, colours kept. */
@page { size: A4; margin: """ + " ".join(f"{m:g}mm" for m in PAGE_MARGINS_MM) + """; }
@media print {
  body { font-size: 9pt; print-color-adjust: exact; -webkit-print-color-adjust: exact; }
  main { max-width: none; padding: 0; }
  nav.toc { display: none; }
  h2 { break-before: auto; break-after: avoid; }
  h3 { break-after: avoid; }
  figure, .item, .methods { break-inside: avoid; }
  figure img { max-height: 240mm; width: auto; max-width: 100%; }
  tr { break-inside: avoid; }
  thead { display: table-header-group; }
  th { position: static; }
  .table-wrap { overflow: visible; }
  table { font-size: 7.5pt; max-width: 100%; }
  th, td { padding: 1px 4px; }
  td { overflow-wrap: anywhere; }
  td:not(.num) { min-width: 3.5em; } /* text stays readable when a table is squeezed to the page */
  td:first-child { min-width: 5em; }
  table.heat, table.lines, table.dense { font-size: 6.5pt; }
  table.heat td { padding: 0 1px; }
  details { border: none; padding: 0; margin: 4px 0; }
  details::details-content { content-visibility: visible; display: block; }
  details > summary { list-style: none; }
  details > summary::-webkit-details-marker { display: none; }
  p { max-width: none; }
}
"""


def page(title: str, header_html: str, toc: list[tuple[str, str]], body_html: str) -> str:
    nav = "".join(f'<li><a href="#{esc(anchor)}">{esc(name)}</a></li>' for anchor, name in toc)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}{VIEWS_CSS}</style></head><body><main>"
        f'<header class="top">{header_html}</header>'
        f'<nav class="toc" aria-label="Contents"><b>Contents</b><ol>{nav}</ol></nav>'
        f"{body_html}</main></body></html>\n"
    )
