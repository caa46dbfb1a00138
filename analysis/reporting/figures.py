"""The report's figures (matplotlib, Agg backend). Each function returns a Figure; few and small.

Values are drawn around the circle in Schwartz's order (``instruments.PVQ_VALUES``), so
neighbouring values sit side by side in every radar chart and heat map.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker
import matplotlib.transforms

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from instruments import dimension_label  # noqa: E402

plt.rcParams.update({
    "svg.fonttype": "none",     # text stays text: smaller files, crisp at any zoom
    "svg.hashsalt": "valueportrait",  # stable ids, so the same data gives the same file
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
})  # fmt: skip

FAMILY_COLOURS = {"pvq": "#2a5d9f", "higher_pvq": "#7b4fa0", "bfi": "#2f8f5b"}
SERIES = ["#2a5d9f", "#c0392b", "#2f8f5b", "#8e5ea2", "#d98c1f", "#3a9ca6", "#7f7f7f", "#b5651d"]


#: Axis label for a dimension (``Self_Direction`` -> ``Self-Direction``): the report's one label helper.
short = dimension_label


def _grid(width: float, height: float, ncols: int, nrows: int, *, cell: tuple[float, float],
          margins: tuple[float, float, float, float], gaps: tuple[float, float]) -> dict:
    """``gridspec_kw`` placing ``ncols`` x ``nrows`` axes of ``cell`` (w, h) inches in a ``width`` x ``height`` figure.

    ``margins`` (left, right, bottom, top) and ``gaps`` (between columns, between rows) in
    inches. Cheaper than tight_layout, which measures every text to place the axes; the
    page's figures are cropped to what is drawn when saved (``bbox_inches="tight"``), so
    a margin that is too wide costs nothing and a label beyond the figure is not cut.
    """
    left, right, bottom, top = margins
    return {"left": left / width, "right": 1 - right / width, "bottom": bottom / height, "top": 1 - top / height,
            "wspace": gaps[0] / cell[0], "hspace": gaps[1] / cell[1]}


def bar_groups(counts: pd.DataFrame):
    """Stacked horizontal bars: included and excluded participations per group."""
    fig, ax = plt.subplots(figsize=(5.6, 0.2 * len(counts) + 0.9))
    y = np.arange(len(counts))
    ax.barh(y, counts["included"], color="#2a5d9f", label="included")
    ax.barh(y, counts["excluded"], left=counts["included"], color="#e0a040", label="excluded")
    ax.set_yticks(y, counts["group_id"].astype(str))
    ax.invert_yaxis()
    ax.set_xlabel("participations")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, frameon=False, fontsize=8)
    return fig


def histogram(values: np.ndarray, xlabel: str, bins: int = 30):
    fig, ax = plt.subplots(figsize=(6.2, 2.4))
    ax.hist(values, bins=bins, color="#2a5d9f", alpha=0.85)
    med = float(np.median(values))
    ax.axvline(med, color="#c0392b", lw=1)
    ax.text(med, ax.get_ylim()[1] * 0.95, f" median {med:.1f}", color="#c0392b", va="top", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("participations")
    return fig


def profile_with_ci(frame: pd.DataFrame, xlabel: str = "mean centred score (95% CI)"):
    """Dots with horizontal CI bars, one row per dimension (``dimension, mean, ci_low, ci_high, family``)."""
    fig, ax = plt.subplots(figsize=(6.2, 0.26 * len(frame) + 0.8))
    y = np.arange(len(frame))
    colours = [FAMILY_COLOURS.get(f, "#333") for f in frame.get("family", ["pvq"] * len(frame))]
    ax.errorbar(frame["mean"], y, xerr=[frame["mean"] - frame["ci_low"], frame["ci_high"] - frame["mean"]],
                fmt="none", ecolor="#888", elinewidth=1, capsize=2)
    ax.scatter(frame["mean"], y, c=colours, s=22, zorder=3)
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_yticks(y, [short(d) for d in frame["dimension"]])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    return fig


def correlation_heatmap(matrix: pd.DataFrame, title: str = ""):
    """A small annotated correlation matrix (the ten values in circle order)."""
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    im = ax.imshow(matrix.to_numpy(float), cmap="RdBu", vmin=-1, vmax=1)
    labels = [short(c) for c in matrix.columns]
    ax.set_xticks(range(n), labels, rotation=60, ha="right")
    ax.set_yticks(range(n), labels)
    for i in range(n):
        for j in range(n):
            v = matrix.iat[i, j]
            if i != j and np.isfinite(v):
                ax.text(j, i, f"{v:.2f}".replace("0.", "."), ha="center", va="center", fontsize=6.5,
                        color="white" if abs(v) > 0.5 else "#222")
    ax.spines[:].set_visible(False)
    fig.colorbar(im, ax=ax, shrink=0.8, label="correlation")
    if title:
        ax.set_title(title)
    return fig


def rho_boxplots(corr: pd.DataFrame, order: list[tuple[str, str]], threshold: float):
    """Distribution of rho per dimension (box: quartiles, whiskers: 5th-95th percentile)."""
    data = [corr.loc[(corr["family"] == f) & (corr["dimension"] == d), "rho"].dropna().to_numpy() for f, d in order]
    fig, ax = plt.subplots(figsize=(7.6, 3.3))
    bp = ax.boxplot(data, whis=(5, 95), showfliers=False, patch_artist=True, widths=0.6,
                    medianprops={"color": "#222"})
    for patch, (f, _) in zip(bp["boxes"], order):
        patch.set_facecolor(FAMILY_COLOURS.get(f, "#999"))
        patch.set_alpha(0.55)
    maxima = [x.max() if len(x) else np.nan for x in data]
    ax.scatter(np.arange(1, len(order) + 1), maxima, marker="^", s=14, color="#222", zorder=3, label="largest rho")
    ax.axhline(threshold, color="#c0392b", lw=1, ls="--", label=f"threshold {threshold:g}")
    ax.axhline(0, color="#888", lw=0.6)
    ax.set_xticks(np.arange(1, len(order) + 1), [short(d) for _, d in order], rotation=60, ha="right")
    ax.set_ylabel("Spearman's rho (item rating vs score)")
    ax.legend(frameon=False, fontsize=7.5, loc="lower right")
    return fig


def selected_heatmap(matrix: pd.DataFrame, keyed: np.ndarray, row_labels: list[str],
                     blocks: list[tuple[str, int, int]] | None = None):
    """Keyed items (rows) x dimensions (columns): rho; keyed cells marked.

    For SVG: the cells and the marks are embedded as images (rasterised; a bank of any size
    costs the same bytes), the labels stay text (crisp, and cheaper to draw than in a PNG).

    Up to 60 rows are labelled with their item ids; beyond that, ``blocks`` (label, first
    row, last row + 1) name each group of rows on the y axis and separate them with lines
    (the report lists every block's items with their ids in tables beside the figure).
    """
    n_rows, n_cols = matrix.shape
    height = min(max(2.5, 0.05 * n_rows + 1.2), 9.0)
    fig, ax = plt.subplots(figsize=(7.2, height))
    lim = max(0.5, float(np.nanmax(np.abs(matrix.to_numpy(float)))) if n_rows else 0.5)
    im = ax.imshow(matrix.to_numpy(float), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    rr, cc = np.nonzero(keyed)
    ax.scatter(cc, rr, s=3 if n_rows > 150 else 8, c="black", marker="s", linewidths=0, rasterized=True)
    ax.set_xticks(range(n_cols), [short(c) for c in matrix.columns], rotation=60, ha="right")
    if n_rows <= 60:
        ax.set_yticks(range(n_rows), row_labels, fontsize=6)
    elif blocks:
        ax.set_yticks([(a + b - 1) / 2 for _, a, b in blocks], [f"{name} ({b - a})" for name, a, b in blocks],
                      fontsize=6.5)
        for _, a, _ in blocks[1:]:
            ax.axhline(a - 0.5, color="#222", lw=0.5)
        ax.set_ylabel(f"{n_rows} keyed items, grouped by their strongest keyed dimension (items per group)")
    else:
        ax.set_yticks([])
        ax.set_ylabel(f"{n_rows} keyed items (grouped by their strongest keyed dimension)")
    fig.colorbar(im, ax=ax, shrink=0.5, label="rho", pad=0.02)
    ax.spines[:].set_visible(False)
    return fig


def _ring_ticks(lim: float) -> np.ndarray:
    """Two or three round ring values inside +-lim (e.g. -0.5, 0, 0.5), for a labelled radar scale."""
    step = 10 ** np.floor(np.log10(lim))
    for mult in (5, 2, 1):
        if mult * step < lim:
            step = mult * step
            break
    k = np.arange(-np.floor(lim / step), np.floor(lim / step) + 1) * step
    return k[np.abs(k) < lim + 1e-12]


def _radar_axes(ax, values: list[str], lim: float):
    angles = np.linspace(0, 2 * np.pi, len(values), endpoint=False)
    ax.set_theta_offset(np.pi / 2)
    ax.set_theta_direction(-1)
    ax.set_xticks(angles, [short(v) for v in values], fontsize=7)
    ax.set_ylim(-lim, lim)
    rings = _ring_ticks(lim)
    ax.set_yticks(rings, [f"{r:.2g}" if r else "0" for r in rings], fontsize=6, color="#555")
    ax.set_rlabel_position(90 - 18)  # between the first two values, clear of the polygons' labels
    ring = np.linspace(0, 2 * np.pi, 200)
    ax.plot(ring, np.zeros_like(ring), color="#222", lw=1.1, ls="--", zorder=1)  # the zero ring
    ax.grid(color="#ddd", lw=0.6)
    return angles


def radar_grid(profiles: dict[str, pd.Series], values: list[str], ncols: int = 3, lim: float | None = None,
               overlay: dict[str, dict[str, pd.Series]] | None = None, legend_each: bool = False):
    """One radar per key: the centred profile (polygon) against the zero ring, values in circle order.

    ``overlay[key] = {label: profile}`` draws several profiles on one radar (humans vs model).
    """
    keys = list(profiles) if overlay is None else list(overlay)
    series_all = ([profiles[k] for k in keys] if overlay is None
                  else [s for k in keys for s in overlay[k].values()])
    if lim is None:
        finite = [np.nanmax(np.abs(s.reindex(values).to_numpy(float))) for s in series_all]
        lim = max([x for x in finite if np.isfinite(x)] + [0.1]) * 1.1
    ncols = max(1, min(ncols, len(keys)))
    nrows = int(np.ceil(len(keys) / ncols))
    # A fixed grid (in inches) instead of tight_layout, which costs a third of the figure's time:
    # each radar 2.1 in square, room around it for the value names, the title and a legend below.
    below = 0.85 if legend_each else 0.4
    width, height = 3.1 * ncols, (2.1 + 0.65 + below) * nrows
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), subplot_kw={"projection": "polar"},
                             squeeze=False, gridspec_kw=_grid(width, height, ncols, nrows, cell=(2.1, 2.1),
                                                              margins=(0.5, 0.5, below, 0.65), gaps=(1.0, below + 0.65)))
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        angles = _radar_axes(ax, values, lim)
        closed = np.append(angles, angles[0])
        layers = {key: profiles[key]} if overlay is None else overlay[key]
        for i, (label, s) in enumerate(layers.items()):
            r = s.reindex(values).to_numpy(float)
            r = np.append(r, r[0])
            ax.plot(closed, r, color=SERIES[i % len(SERIES)], lw=1.6, label=label)
            ax.fill(closed, r, color=SERIES[i % len(SERIES)], alpha=0.12)
        ax.set_title(short(key) if overlay is None else str(key), fontsize=8.5, pad=14)
        if overlay is not None and legend_each:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=6.5, frameon=False, ncols=2)
        elif overlay is not None and ax is axes.flat[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(-0.25, 1.22), fontsize=7, frameon=False)
    return fig


def profile_dots(frame: pd.DataFrame, values: list[str], flagged: set[str] | frozenset = frozenset()):
    """Models (rows) x values (one panel each, in circle order): centred score with its interval.

    ``frame``: ``model, dimension, centered_mean, ci_low, ci_high`` (one row per model and
    value). Models in ``flagged`` (low consistency) are drawn hollow and grey and marked
    with a dagger. Every panel shares one x scale, so a dot's distance from 0 compares
    across values and models.
    """
    models = list(dict.fromkeys(frame["model"]))
    n = len(models)
    frame = frame.assign(**{c: np.nan for c in ("ci_low", "ci_high") if c not in frame.columns})  # no intervals: dots only
    wide = {c: frame.pivot_table(index="model", columns="dimension", values=c).reindex(index=models, columns=values)
            if frame[c].notna().any() else pd.DataFrame(np.nan, index=models, columns=values)
            for c in ("centered_mean", "ci_low", "ci_high")}
    finite = np.concatenate([w.to_numpy(float).ravel() for w in wide.values()])
    finite = finite[np.isfinite(finite)]
    lim = max(float(np.abs(finite).max()) if len(finite) else 0.5, 0.1) * 1.08
    # One axes holding the ten panels side by side (panel j centred at centre[j], 12 % of a
    # panel's width between panels): the same picture as ten shared-y subplots at a third of
    # the cost, most of which was making and laying out ten axes.
    width = 2 * lim
    centre = np.arange(len(values)) * width * 1.12 + lim
    fig, ax = plt.subplots(figsize=(7.3, 0.2 * n + 1.25))
    fig.subplots_adjust(left=0.125, right=0.9)  # the frame ten subplots had
    y = np.arange(n)
    low = np.array([m in flagged for m in models])
    k = len(values)
    mean = np.stack([wide["centered_mean"][v].to_numpy(float) + c for v, c in zip(values, centre)])  # panels x models
    lo = np.stack([wide["ci_low"][v].to_numpy(float) + c for v, c in zip(values, centre)])
    hi = np.stack([wide["ci_high"][v].to_numpy(float) + c for v, c in zip(values, centre)])
    rows = np.broadcast_to(y, mean.shape)
    flag = np.broadcast_to(low, mean.shape)
    has = np.isfinite(lo) & np.isfinite(hi)
    ax.hlines(np.repeat(y, k), np.tile(centre - lim, n), np.tile(centre + lim, n), color="#eee", lw=0.6,
              zorder=0)  # the grid, panel by panel
    ax.vlines(centre, -0.5, n - 0.5, color="#999", lw=0.7, zorder=1)
    for sel, colour in ((~flag, "#2a5d9f"), (flag, "#999999")):
        pick = sel & has
        ax.hlines(rows[pick], lo[pick], hi[pick], color=colour, lw=1.1, zorder=2)
    ax.scatter(mean[~flag], rows[~flag], s=14, color="#2a5d9f", zorder=3)
    ax.scatter(mean[flag], rows[flag], s=14, facecolors="white", edgecolors="#777", linewidths=1, zorder=3)
    ax.set_xlim(centre[0] - lim, centre[-1] + lim)
    ax.set_ylim(n - 0.5, -0.5)
    ax.spines["bottom"].set_visible(False)
    ax.hlines(np.full(k, n - 0.5), centre - lim, centre + lim, color="black", lw=matplotlib.rcParams["axes.linewidth"],
              clip_on=False, zorder=2.5)  # each panel's own baseline
    t = float(f"{lim / 2:.1g}")
    ax.set_xticks((centre[:, None] + [-t, 0, t]).ravel(), [f"{-t:.2g}", "0", f"{t:.2g}"] * k)
    ax.tick_params(axis="x", labelsize=6)
    title = matplotlib.transforms.offset_copy(ax.get_xaxis_transform(), fig=fig, y=matplotlib.rcParams["axes.titlepad"],
                                              units="points")
    for value, c in zip(values, centre):
        ax.text(c - lim, 1.0, short(value), fontsize=7, rotation=30, ha="left", va="bottom", transform=title)
    ax.set_yticks(y, [f"{m} \u2020" if m in flagged else m for m in models], fontsize=7)
    fig.supxlabel("centred score: mean answer on the value's keyed items minus the mean over all keyed items",
                  fontsize=7, y=0.0, va="top")
    return fig


def gap_scatter(gaps: pd.DataFrame, summary: pd.DataFrame, tolerance: float | None = None):
    """Per model: persona gap against human gap for every value and pair of groups, y = x and the fitted slope.

    Uses the standardised gaps (``human_gap_std``, ``llm_gap_std``) and ``slope_std`` when
    the tables have them (one scale), else the raw ones. With a ``tolerance`` the band of
    near-zero gaps around each axis is shaded.
    """
    std = {"human_gap_std", "llm_gap_std"} <= set(gaps.columns) and gaps["human_gap_std"].notna().any()
    hx, ly, slope_col = ("human_gap_std", "llm_gap_std", "slope_std") if std else ("human_gap", "llm_gap", "slope")
    models = sorted(gaps["model"].unique())
    ncols = min(3, len(models))
    nrows = int(np.ceil(len(models) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    colours = {"exaggerates": "#c0392b", "reverses": "#8e5ea2", "attenuates": "#2a5d9f", "near zero": "#9a9a9a"}
    for ax, model in zip(axes.flat, models):
        g = gaps[gaps["model"] == model]
        lim = max(float(np.nanmax(np.abs(g[[hx, ly]].to_numpy(float)))), 0.05) * 1.1
        if tolerance:
            ax.axvspan(-tolerance, tolerance, color="#f0f0f0", zorder=0, lw=0)
            ax.axhspan(-tolerance, tolerance, color="#f0f0f0", zorder=0, lw=0)
        for label, part in g.groupby("label"):
            ax.scatter(part[hx], part[ly], s=12, color=colours.get(label, "#555"), label=label, alpha=0.8, zorder=3)
        xs = np.array([-lim, lim])
        ax.plot(xs, xs, color="#888", lw=0.8, ls="--")
        s = summary[(summary["model"] == model) & (summary["attribute"] == "all")].get(slope_col, pd.Series(dtype=float))
        if len(s) and np.isfinite(s.iloc[0]):
            ax.plot(xs, s.iloc[0] * xs, color="#222", lw=1.2, label=f"slope {s.iloc[0]:.2f}")
        ax.axhline(0, color="#ccc", lw=0.6)
        ax.axvline(0, color="#ccc", lw=0.6)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("human gap (A - B)" + (", standardised" if std else ""))
        ax.set_ylabel("persona gap" + (", standardised" if std else ""))
        ax.set_title(model, fontsize=8.5)
        ax.legend(fontsize=6.5, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def replicate_precision(per_replicate: pd.DataFrame, study: dict[str, float]):
    """Precision of each rater replicate (dots) and of the study itself (diamond), per rule.

    ``per_replicate``: columns ``selection_precision, fdr_selection_precision``;
    ``study``: the same two keys for the analysed study.
    """
    rules = [("selection_precision", "study rule"), ("fdr_selection_precision", "rule + BH FDR")]
    fig, ax = plt.subplots(figsize=(6.2, 1.5))
    rng = np.random.default_rng(0)  # a little vertical jitter, the same every time
    for y, (col, label) in enumerate(rules):
        x = per_replicate[col].dropna().to_numpy(float)
        ax.scatter(x, y + rng.uniform(-0.12, 0.12, len(x)), s=16, color="#2a5d9f", alpha=0.7,
                   label="fresh raters" if y == 0 else None)
        if study.get(col) is not None and np.isfinite(study[col]):
            ax.scatter([study[col]], [y], marker="D", s=40, color="#c0392b", label="this study" if y == 0 else None)
    ax.set_yticks(range(len(rules)), [label for _, label in rules])
    ax.set_ylim(-0.6, len(rules) - 0.4)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("precision: share of keyed pairs with population rho >= 0.1")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, frameon=False, fontsize=8)
    return fig


def design_funnel(stages: list[tuple[str, int]]):
    """The two-stage funnel: items at each stage, as horizontal bars."""
    fig, ax = plt.subplots(figsize=(6.2, 0.42 * len(stages) + 0.7))
    y = np.arange(len(stages))
    counts = [c for _, c in stages]
    ax.barh(y, counts, color=[SERIES[0], SERIES[4], SERIES[2]][: len(stages)] + [SERIES[6]] * max(0, len(stages) - 3))
    top = max(counts) if counts else 1
    for yi, c in zip(y, counts):
        ax.text(c + top * 0.01, yi, f"{c:,}", va="center", fontsize=8)
    ax.set_yticks(y, [label for label, _ in stages])
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.12)
    ax.set_xlabel("items")
    return fig


def null_band_histograms(dist: pd.DataFrame, panels: list[tuple[str, str]], xlabel: str, *,
                         threshold: float | None = None, log: bool = False, level: str = "95%"):
    """Observed histograms (bars) against what chance gives (mean line and range band), one panel each.

    ``dist``: rows ``family, bin_low, bin_high, observed, expected_mean, expected_low, expected_high``
    (``chance_distributions.csv`` for one statistic); ``panels``: ``(family, title)``.
    """
    width = 3.4 * len(panels) + 0.6
    # Fixed margins (in inches) instead of tight_layout: room for the y labels, the titles, and
    # the x label with the legend below it.
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.0), squeeze=False,
                             gridspec_kw=_grid(width, 3.0, len(panels), 1, cell=(2.95, 1.83),
                                               margins=(0.65, 0.15, 0.85, 0.32), gaps=(0.5, 0)))
    for ax, (family, title) in zip(axes[0], panels):
        d = dist[dist["family"] == family].sort_values("bin_low")
        left, right = d["bin_low"].to_numpy(float), d["bin_high"].to_numpy(float)
        edges = np.append(left, right[-1])
        if np.allclose(right[:-1], left[1:]):  # contiguous bins: one filled outline, not a patch per bin
            ax.stairs(d["observed"].to_numpy(float), edges, fill=True, color="#2a5d9f", alpha=0.55, label="observed",
                      linewidth=0)
        else:
            ax.bar(left, d["observed"], width=right - left, align="edge", color="#2a5d9f", alpha=0.55,
                   label="observed", linewidth=0)
        step = lambda v: np.append(v, v[-1])  # noqa: E731 (a value per bin, drawn as steps)
        ax.fill_between(edges, step(d["expected_low"].to_numpy(float)), step(d["expected_high"].to_numpy(float)),
                        step="post", color="#888", alpha=0.35, linewidth=0, label=f"chance, {level} range")
        ax.step(edges, step(d["expected_mean"].to_numpy(float)), where="post", color="#333", lw=1,
                label="chance, mean")
        if threshold is not None:
            ax.axvline(threshold, color="#c0392b", lw=1, ls="--", label=f"threshold {threshold:g}")
        if log:
            ax.set_yscale("symlog", linthresh=1)
            ax.set_ylim(bottom=0)
            # Plain numbers (1, 10, 100), not 10^k: the default labels need matplotlib's
            # mathtext parser, whose first use costs a third of a second.
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(title, fontsize=8.5)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel("pairs (log scale)" if log else "items")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=len(labels), frameon=False, fontsize=7.5)
    return fig
