"""The texts that go with an exported bank: the Hugging Face dataset card and each format's README.

The card states what a user of the dataset must know to read its figures: how the items
were validated (raters, rule, correlation), that ``rho`` is the figure the items were
selected on (and so optimistic), what held-out raters and chance alone give beside it,
and the method's citation. Figures come from the analysis tables beside the bank
(``manifest.json``, ``replication_shrinkage.csv``, ``chance.csv``); one that is missing is
said to be missing, not left out silently.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import instruments

CITATION = """@inproceedings{han-etal-2025-value,
  title = "Value Portrait: Assessing Language Models' Values through Psychometrically and Ecologically Valid Items",
  author = "Han, Jongwook and Choi, Dongmin and Song, Woojung and Lee, Eun-Ju and Jo, Yohan",
  booktitle = "Proceedings of the 63rd Annual Meeting of the Association for Computational Linguistics (Volume 1: Long Papers)",
  year = "2025",
  address = "Vienna, Austria",
  publisher = "Association for Computational Linguistics",
  pages = "17119--17159",
  doi = "10.18653/v1/2025.acl-long.838"
}"""


def hf_features(datasets):
    """The dataset's column types (explicit, so an all-null column keeps its type)."""
    V, L = datasets.Value, datasets.List
    key = {"family": V("string"), "dimension": V("string"), "direction": V("string"), "sign": V("int8"),
           "rho": V("float64"), "ci_low": V("float64"), "ci_high": V("float64"), "p_value": V("float64"),
           "q_value": V("float64"), "n": V("int64"), "heldout_rho": V("float64"), "replication_rate": V("float64"),
           "times_selected": V("int64")}
    return datasets.Features({
        "id": V("string"), "portrait_id": V("string"), "option_id": V("int64"), "variant": V("string"),
        "wording": V("string"), "option_order": V("string"), "title": V("string"), "query": V("string"),
        "response": V("string"), "persona": V("string"), "prompt": V("string"),
        "messages": L({"role": V("string"), "content": V("string")}),
        "options": L(V("string")), "option_values": L(V("int64")), "keys": L(key),
    })


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "n>1M"


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _keyed_table(rows: list[dict]) -> str:
    """Per dimension: items keyed, of them reversed, mean selection rho, mean held-out rho."""
    seen, per_dim = set(), {}
    for row in rows:
        for key in row["keys"]:
            tag = (row["portrait_id"], row["option_id"], key["family"], key["dimension"])
            if tag in seen:
                continue
            seen.add(tag)
            per_dim.setdefault((key["family"], key["dimension"]), []).append(key)
    order = [(f, d) for f, dims in instruments.FAMILIES.items() for d in dims if (f, d) in per_dim]
    order += sorted(set(per_dim) - set(order))
    lines = ["| family | dimension | items keyed | reversed | mean rho (all raters, selecting) | mean split-half held-out rho |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for fam, dim in order:
        keys = per_dim[(fam, dim)]
        rho = [k["rho"] for k in keys if k["rho"] is not None]
        held = [k["heldout_rho"] for k in keys if k["heldout_rho"] is not None]
        lines.append(f"| {fam} | {dim} | {len(keys)} | {sum(k['sign'] < 0 for k in keys)} | "
                     f"{_fmt(sum(rho) / len(rho) if rho else None)} | {_fmt(sum(held) / len(held) if held else None)} |")
    return "\n".join(lines)


def null_key_probability(n, threshold: float, alpha: float, keying: str = "pos"):
    """Chance that a pair with no relation is keyed: P(rho >= threshold and p < alpha) under independence.

    Uses the t approximation of the null distribution of a correlation over ``n`` raters
    (the one scipy's ``spearmanr`` p-value uses): ``t = r sqrt((n - 2) / (1 - r^2))`` with
    ``n - 2`` degrees of freedom. A pair is keyed when ``rho >= max(threshold, r_alpha)``,
    ``r_alpha`` the smallest rho with a two-sided ``p < alpha``; keying ``abs`` keys both tails.
    Ties and the dependence between pairs are ignored (the permutation baseline of
    ``chance.csv`` has neither approximation). Vectorised over ``n``.
    """
    n = np.asarray(n, dtype=float)
    df = n - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        t_alpha = stats.t.isf(alpha / 2, df)
        r_alpha = t_alpha / np.sqrt(df + t_alpha**2)
        r0 = np.maximum(threshold, r_alpha)
        t0 = r0 * np.sqrt(df / (1 - r0**2))
        p = stats.t.sf(t0, df) * (2 if keying == "abs" else 1)
    return np.where(n > 3, p, np.nan)


def _analytic_chance(processed: Path, manifest: dict | None) -> str:
    corr = _read_csv(processed / "correlations.csv")
    settings = (manifest or {}).get("settings", {})
    if corr is None or not {"family", "rho", "p_value", "n"} <= set(corr.columns) or "threshold" not in settings:
        return ""
    threshold, alpha, keying = settings["threshold"], settings.get("alpha", 0.05), settings.get("keying", "pos")
    rho = corr["rho"].abs() if keying == "abs" else corr["rho"]
    corr = corr.assign(keyed=(rho >= threshold) & (corr["p_value"] < alpha),
                       chance=null_key_probability(corr["n"], threshold, alpha, keying))
    lines = ["| family | pairs tested | keyed | expected by chance (analytic) | share of keys chance alone would give |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for fam, group in corr.groupby("family", sort=False):
        keyed, expected = int(group["keyed"].sum()), float(group["chance"].sum())
        lines.append(f"| {fam} | {len(group)} | {keyed} | {expected:.1f} | "
                     f"{_fmt(min(1.0, expected / keyed) if keyed else None, 2)} |")
    return ("An analytic stand-in, from the t approximation of a correlation's null distribution at each "
            "pair's number of raters (it ignores ties and the dependence between pairs, which the permutation "
            "baseline does not): how many pairs the rule would key if no item related to any dimension.\n\n"
            + "\n".join(lines))


def _chance_section(processed: Path, manifest: dict | None = None) -> str:
    chance = _read_csv(processed / "chance.csv")
    if chance is None:
        analytic = _analytic_chance(processed, manifest)
        return ("No permutation baseline was found beside the bank (`chance.csv`, written by `vp analyze`)."
                + ("\n\n" + analytic if analytic else
                   " Without `correlations.csv` and the manifest either, this card cannot say how many keys "
                   "chance alone would give; treat single keys with caution."))
    observed = [c for c in chance.columns if "observed" in c]
    expected = [c for c in chance.columns if "expected" in c]
    shown = [c for c in ("family", "dimension", "pairs") if c in chance.columns] + observed + expected
    shown += [c for c in chance.columns if c not in shown and ("false" in c or "share" in c)]
    shown += [c for c in ("perm_p", "note") if c in chance.columns and c not in shown]
    lines = ["| " + " | ".join(shown) + " |", "| " + " | ".join("---" for _ in shown) + " |"]
    for row in chance[shown].to_dict("records"):
        cells = ["" if isinstance(v, float) and math.isnan(v) else _fmt(v, 3 if c == "perm_p" else 2)
                 if isinstance(v, float) else str(v).replace("|", "/").replace("\n", " ") for c, v in row.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return ("Beside each family and dimension (`all`: the family's total): the keyed pairs observed, and those "
            "expected by chance alone when the raters' scores are permuted within each rating group, with the "
            "range of the permutations and the share of the observed keys chance alone would give "
            "(`chance.csv`):\n\n" + "\n".join(lines))


def _shrinkage_section(processed: Path) -> str:
    table = _read_csv(processed / "replication_shrinkage.csv")
    if table is None or not {"family", "dimension", "selected_rho_mean", "heldout_rho_mean"} <= set(table.columns):
        return ("No split-half replication was found beside the bank (`replication_shrinkage.csv`): the rho "
                "values here come only from the raters who selected the items.")
    lines = ["| family | dimension | selections | rho where selected | rho on the other half | replication rate |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for row in table.itertuples(index=False):
        lines.append(f"| {row.family} | {row.dimension} | {getattr(row, 'n_selections', 'n/a')} | "
                     f"{_fmt(row.selected_rho_mean)} | {_fmt(row.heldout_rho_mean)} | "
                     f"{_fmt(getattr(row, 'replication_rate', None))} |")
    return ("The raters were split in half many times; every pair the rule selected on one half was checked on "
            "the other half, whose raters took no part in that selection (`replication.csv`, summarised in "
            "`replication_shrinkage.csv`). Over all pairs, not only this bank's, this is how well a selection by "
            "the rule replicates in new raters (at half the sample):\n\n" + "\n".join(lines))


def _validation_text(manifest: dict | None) -> str:
    if not manifest:
        return ("The analysis manifest (`manifest.json`) was not found beside the bank, so the raters and "
                "settings behind these items cannot be stated here.")
    settings = manifest.get("settings", {})
    counts = manifest.get("counts", {})
    keyed = counts.get("keyed", {})
    per_family = "; ".join(f"{fam}: {v.get('keyed_pairs')} of {v.get('pairs')} pairs keyed ({v.get('keyed_items')} items)"
                           for fam, v in keyed.items() if isinstance(v, dict))
    rule = (f"rho >= {settings.get('threshold')} and p < {settings.get('alpha')}" if settings.get("keying") != "abs"
            else f"|rho| >= {settings.get('threshold')} and p < {settings.get('alpha')} (negative items reversed)")
    level = settings.get("ci_level")
    interval = (f"a {level * 100:g} % interval" if isinstance(level, (int, float)) else "an interval") + (
        f" ({settings['ci_method']})" if settings.get("ci_method") else "")
    return (
        f"Raters answered the PVQ-21 (ten Schwartz values, centred on each person's mean) and the BFI-10 "
        f"(five traits), then rated how similar each response was to their own thoughts on a six-point scale. "
        f"{counts.get('included_participants', 'n/a')} raters passed quality control (participations "
        f"excluded for attention checks, straight-lining, speeding or duplicates: "
        f"{counts.get('excluded_participations', 'n/a')}), in {counts.get('groups', 'n/a')} rating groups covering "
        f"{counts.get('items', 'n/a')} candidate items. For every item and dimension, Spearman's rho between "
        f"the item's ratings and the raters' scores was computed over the raters who rated it, with a two-sided "
        f"p-value, Benjamini-Hochberg q within each family, and {interval}. "
        f"An item is keyed to a dimension when {rule}. "
        f"{per_family}. Study `{manifest.get('study_id', 'n/a')}` ({manifest.get('study_source', 'n/a')}), "
        f"valueportrait {manifest.get('version', 'n/a')}, input hash `{manifest.get('input_sha256', 'n/a')}`."
    )


def dataset_card(rows: list[dict], context: dict) -> str:
    """The README.md of the Hugging Face export: YAML metadata, then the sections a user needs."""
    manifest = context.get("analysis_manifest")
    processed = Path(context["processed_dir"])
    n = len(rows)
    simulated = (context.get("simulated") or (manifest or {}).get("study_source") == "simulation")
    header = "\n".join([
        "---",
        "pretty_name: Value Portrait item bank (valueportrait export)",
        f"license: {context['license']}",
        "language:",
        "- en",
        "task_categories:",
        "- multiple-choice",
        "- text-generation",
        "tags:",
        "- psychometrics",
        "- values",
        "- schwartz-values",
        "- big-five",
        "- likert",
        "- llm-evaluation",
        "size_categories:",
        f"- {_size_category(n)}",
        "---",
    ])
    warning = ("\n> **This bank comes from a simulated study** (placeholder texts, simulated raters). It shows the "
               "format; do not use it to evaluate models.\n" if simulated else "")
    notes = "".join(f"\n- {note}" for note in context.get("notes", []))
    variants = ", ".join(f"`{v}`" for v in context["variants"])
    phrases = "; ".join(f"{v} = \"{p}\"" for v, p in context["labels"])
    gen = context["generation"]
    return f"""{header}

# Value Portrait item bank

Query-response items whose ratings by human raters were shown to go with the raters' own
values (PVQ-21) or personality traits (BFI-10), following the method of the Value Portrait
study (Han et al., ACL 2025). A language model rates each item ("how similar is this
response to your own thoughts?"); its value profile is read off its ratings of the items
keyed to each value.
{warning}
{context['items']} items from {context['queries']} queries, each under {len(context['variants'])}
prompt variants: {n} rows, split `test`. Exported by valueportrait {context['tool_version']}
(`vp export-bank --format hf`) from an item bank with SHA-256 `{context['item_bank_sha256']}`.

## Using it

```python
from datasets import load_dataset
bank = load_dataset("parquet", data_dir="THIS_FOLDER")["test"]   # or load_dataset("user/repo") once uploaded
```

Send each row's `prompt` as the only (user) message, at temperature {gen['temperature']} with at most
{gen['max_tokens']} tokens, and read the answer as one of the `options` (case and punctuation
ignored; an answer with no option, or several, is left out rather than guessed). An item's
rating is the mean over its parsed variants. A dimension's score is the mean rating of the
items keyed to it minus the mean rating of all items keyed to any dimension of its family
(each item counted once). `vp run-llm` and `vp score-llm` do exactly this; so do the
Inspect and lm-evaluation-harness exports of the same bank.

## Fields

- `id`: `portrait_id/option_id/variant`. `portrait_id`: the query; `option_id`: the response; together one item.
- `variant`: {variants}. `wording` is the variant without `_reversed`; `option_order` is
  `highest_first` or `lowest_first` (the `_reversed` variants list the options bottom-up, so an
  option-order bias shows as a difference between the two).
- `title`, `query`, `response`: the item's texts, as plain text. `persona`: the persona the prompts were written for, if any.
- `prompt`: the exact text sent; `messages`: the same as chat messages.
- `options`: the answer phrases in the order the prompt lists them; `option_values`: their scale values ({phrases}).
- `keys`: one entry per dimension the item is keyed to: `family` (`pvq`, `higher_pvq`, `bfi`),
  `dimension`, `direction` (`positive`, or `reversed` for a negative correlation, kept only with keying
  `abs`), `sign`, and its validation statistics: `rho` (Spearman, on the raters who selected the item),
  `ci_low`/`ci_high`, `p_value`, `q_value` (BH within the family), `n` (raters), and from split-half
  replication: `times_selected` (random halves of the raters that keyed the pair on their own),
  `heldout_rho` (mean rho on the other half in those splits) and `replication_rate` (share of those
  selections that the other half keyed too). Null means the analysis table that gives it was not
  available. Note: the bank was selected on all raters, both halves included, so for a bank item even
  `heldout_rho` is not free of selection; the replication table below (over all pairs) is the figure
  for how selections replicate.

## How the items were validated

{_validation_text(manifest)}

### Keyed items per dimension

{_keyed_table(rows)}

### The selection rule and what chance alone gives

{_chance_section(processed, manifest)}

### Held-out replication

{_shrinkage_section(processed)}

## Known limitations

- `rho` is the correlation the items were selected on, measured on the same raters: it is biased
  upward (winner's curse). No figure here comes from raters wholly independent of the bank's
  selection: the split-half replication above shows how much a selection shrinks in new raters, and
  only a new sample of raters (e.g. a confirmation wave, `vp analyze --design two-stage`) checks these
  items themselves.
- Each item was rated by one group of a few dozen raters; a single key carries a wide interval (see
  `ci_low`, `ci_high`), and some keys are expected to be chance findings (see the chance baseline).
- The raters were crowdworkers answering in English; the values profile of a model is relative to
  what these raters' ratings pick up, not an absolute measure.
- Items are real queries and responses from the internet: texts may be offensive or wrong. Show them as plain text.
- Models differ in how consistently they answer across the six variants and in option-order bias;
  report both beside a profile (`vp score-llm` writes them to `llm_consistency.csv`).
- The prompt wordings are valueportrait's own; profiles from other wordings are not directly comparable.
{notes}

## Citation

The validation method is that of the Value Portrait study; please cite it:

```bibtex
{CITATION}
```
"""


def framework_readme(fmt: str, context: dict) -> str:
    """A short README for the inspect, lm-eval and csv exports: what is here and the commands to run."""
    head = (f"# Value Portrait item bank: {fmt} export\n\n"
            f"{context['items']} items x {len(context['variants'])} prompt variants = {context['rows']} questions, "
            f"exported by valueportrait {context['tool_version']} from an item bank with SHA-256 "
            f"`{context['item_bank_sha256']}`. The prompts are those `vp run-llm` sends, word for word; "
            "answers are read by valueportrait's parser (`vp_parse.py` is a copy of `analysis/llm/parse.py`) "
            "and scored as `vp score-llm` does.\n\n")
    body = {
        "inspect": (
            "```bash\npip install inspect-ai\ninspect eval task.py --model openai/gpt-4o-mini\n"
            "inspect eval task.py --model openai/gpt-4o-mini -T keying=abs   # also reversed keys\n"
            "vp score-llm --item-bank item_bank.json --responses logs/   # the profile and consistency from the log\n```\n\n"
            "The task's metric `value_profile` gives the centred mean per `family.dimension`. An answer that is "
            "no scale phrase scores NaN and is left out (Inspect counts it under `unscored_samples`)."),
        "lm-eval": (
            "```bash\npip install lm-eval\n"
            "lm_eval --include_path THIS_FOLDER --tasks valueportrait --model local-chat-completions \\\n"
            "    --model_args model=MODEL,base_url=http://localhost:8000/v1/chat/completions --apply_chat_template\n```\n\n"
            "The task generates (`generate_until`, greedy, no stop sequence) and reads each answer with "
            "valueportrait's parser as the filter, rather than comparing the log-likelihoods of the six options: "
            "that is the measurement `vp run-llm` makes, so a profile from the harness is the same profile, and "
            "it works with chat APIs that give no log-likelihoods. Metrics: `answered` and one centred mean per "
            "`family.dimension` (positive keys)."),
        "csv": (
            "`valueportrait.csv` has one row per item, prompt variant and keyed dimension: `question_id` names "
            "the question (send each once), `prompt` is its exact text, `options`/`option_values` the phrases in "
            "the order shown and their values (`|`-separated), then the key (`family, dimension, direction`) and "
            "its validation statistics (`rho, ci_low, ci_high, p_value, q_value, n, heldout_rho, replication_rate, "
            "times_selected`). Text cells that a spreadsheet would read as a formula (starting with = + - @) "
            "begin with an apostrophe."),
    }[fmt]
    return head + body + "\n"
