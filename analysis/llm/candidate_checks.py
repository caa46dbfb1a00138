"""Quality checks on generated candidate responses, before they go into a study.

Each check returns, per candidate, either nothing or a short reason; a candidate with any
reason is *flagged*. The checks, for the responses to one query:

* **length**: ``too_short`` / ``too_long`` when the word count is outside
  ``[min_words, max_words]`` (the Value Portrait items averaged 35 words, 27..41 for
  80 % of them; the generator asks for 40..60).
* **near-duplicate**: token-set Jaccard similarity ``|A ∩ B| / |A ∪ B|`` of two
  responses' lower-cased word sets at or above ``dup_threshold``; the later response
  of the pair is flagged (the first is kept).
* **restates the query**: the share of the response's word pairs (adjacent lower-cased
  words, i.e. bigrams) that also occur in the query text, at or above
  ``restate_threshold``. Bigrams rather than single words, because a good reply shares
  the query's topic words but not its phrasing.
* **refusal**: a phrase typical of a declined answer ("I can't help", "as an AI", ...).

Similarities are computed for all pairs at once from a token incidence matrix
(intersections = ``B @ B.T``), not pair by pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

# Phrases of a declined or meta answer; apostrophes are normalised to ' before matching.
REFUSAL_PATTERNS: tuple[str, ...] = (
    # "I can't help but feel..." is an ordinary sentence, not a refusal.
    (r"\bi (?:can't|cannot|can not|won't|will not|am unable to|am not able to|'m unable to|'m not able to) "
     r"(?:help|assist|provide|answer|comply|do that|give|offer|share|write)\b(?! but\b)"),
    r"\bas an ai\b",
    r"\bas a language model\b",
    r"\bi'm (?:just )?an ai\b",
    r"\bi am (?:just )?an ai\b",
    r"\bi'm sorry,? but i\b",
    r"\bi apologi[sz]e,? but\b",
    r"\bi (?:don't|do not) have (?:personal )?(?:opinions|feelings|beliefs|values)\b",
)
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS))


@dataclass(frozen=True)
class CheckSettings:
    """The thresholds of :func:`check_candidates` (the command line's options)."""

    min_words: int = 20
    max_words: int = 80
    dup_threshold: float = 0.6
    restate_threshold: float = 0.5


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, with an inner apostrophe kept: ``don't``)."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def word_count(text: str) -> int:
    """Words as a reader counts them: runs of non-space characters."""
    return len(text.split())


def jaccard_matrix(texts: list[str]) -> np.ndarray:
    """Pairwise token-set Jaccard similarities ``|A ∩ B| / |A ∪ B|`` (1 on the diagonal).

    Two texts without any word get similarity 0 to each other (an empty union).
    """
    sets = [set(words(t)) for t in texts]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*sets)))} if sets else {}
    incidence = np.zeros((len(texts), len(vocab)))
    for row, s in enumerate(sets):
        incidence[row, [vocab[w] for w in s]] = 1.0
    inter = incidence @ incidence.T
    sizes = incidence.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.where(union > 0, inter / union, 0.0)
    return sim


def bigram_containment(response: str, query: str) -> float:
    """Share of the response's distinct word bigrams that also occur in the query (0 if it has none)."""
    r, q = words(response), words(query)
    rb = set(pairwise(r))
    if not rb:
        return 0.0
    return len(rb & set(pairwise(q))) / len(rb)


def refusal_phrase(text: str) -> str | None:
    """The first refusal-like phrase in ``text``, or None."""
    match = _REFUSAL.search(text.lower().replace("\u2019", "'"))
    return match.group(0) if match else None


def check_candidates(query_text: str, responses: list[str], settings: CheckSettings | None = None,
                     option_ids: list[int] | None = None) -> list[list[str]]:
    """Flags for each response to one query: a list of reasons, empty when the response passes.

    Parameters
    ----------
    query_text : the query (title and text) the responses answer.
    responses : the candidate responses, in option order.
    settings : thresholds (see :class:`CheckSettings`).
    option_ids : the options' ids, used to name the earlier twin of a near-duplicate
        (default 1..n).

    Returns
    -------
    One list of reason strings per response, e.g. ``["too_short: 12 words < 20",
    "near_duplicate: of option 2 (jaccard 0.71)"]``.
    """
    settings = settings or CheckSettings()
    ids = option_ids or list(range(1, len(responses) + 1))
    flags: list[list[str]] = [[] for _ in responses]
    counts = [word_count(r) for r in responses]
    sim = jaccard_matrix(responses)
    # Only the lower triangle: a response is compared with the ones before it.
    earlier = np.tril(sim, k=-1)
    for i, response in enumerate(responses):
        if counts[i] < settings.min_words:
            flags[i].append(f"too_short: {counts[i]} words < {settings.min_words}")
        elif counts[i] > settings.max_words:
            flags[i].append(f"too_long: {counts[i]} words > {settings.max_words}")
        if i and earlier[i].max() >= settings.dup_threshold:
            j = int(earlier[i].argmax())
            flags[i].append(f"near_duplicate: of option {ids[j]} (jaccard {earlier[i, j]:.2f})")
        share = bigram_containment(response, query_text)
        if share >= settings.restate_threshold:
            flags[i].append(f"restates_query: {share:.2f} of its word pairs are in the query")
        phrase = refusal_phrase(response)
        if phrase:
            flags[i].append(f"refusal: {phrase!r}")
    return flags


def flag_kind(reason: str) -> str:
    """``"too_short: 12 words < 20"`` -> ``"too_short"``."""
    return reason.split(":", 1)[0]
