"""Read a model's free-text answer as one of the scale's phrases, or as nothing.

Rules (tested in ``tests/test_llm_parse.py``):

* Case, punctuation and spacing are ignored ("**Not like me.**" reads as "not like me").
* A phrase may sit inside longer text; at each position the longest phrase wins, so
  "not like me at all" is never read as "not like me" or "like me".
* A phrase directly preceded by a word that changes its meaning ("not", "very", "bit",
  "at all" ...) is a paraphrase we do not know, e.g. "not at all like me", "not very
  much like me": the answer is unparseable rather than guessed.
* Several different phrases in one answer (e.g. the option list echoed back) is
  ambiguous: unparseable. The same phrase repeated is fine.
* A bare digit is not accepted: the prompts show no numbers.

An unparseable answer returns ``None``; the caller keeps its raw text and counts it.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Words that, right before a known phrase, turn it into a phrase we do not know.
_MODIFIERS = frozenset(
    "not no never nor nothing isn isnt t dont doesnt all at very much quite bit little "
    "somewhat rather fairly extremely really so too more less most least slightly".split()
)


def normalise(text: str) -> str:
    """Lower case, letters and digits only, single spaces ("Isn't" -> "isn t")."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


@lru_cache(maxsize=16)
def _matcher(labels: tuple[tuple[int, str], ...]) -> tuple[re.Pattern, dict[str, int]]:
    values = {normalise(phrase): value for value, phrase in labels}
    # Longest alternative first: a regex alternation takes the first that matches.
    alternatives = sorted(values, key=len, reverse=True)
    pattern = re.compile(r"(?<![0-9a-z])(" + "|".join(re.escape(a) for a in alternatives) + r")(?![0-9a-z])")
    return pattern, values


def parse_answer(text: str | None, labels: tuple[tuple[int, str], ...]) -> int | None:
    """The value of the one scale phrase in ``text``, or ``None`` if there is none or it is unclear.

    Parameters
    ----------
    text : the model's answer.
    labels : ``((6, "very much like me"), ..., (1, "not like me at all"))``.

    Examples
    --------
    >>> L = ((6, "very much like me"), (5, "like me"), (4, "somewhat like me"),
    ...      (3, "a little like me"), (2, "not like me"), (1, "not like me at all"))
    >>> parse_answer("Not like me at all.", L), parse_answer("I'd say: like me", L)
    (1, 5)
    >>> parse_answer("not at all like me", L) is None, parse_answer("5", L) is None
    (True, True)
    """
    if not text:
        return None
    clean = normalise(text)
    pattern, values = _matcher(tuple(labels))
    found = set()
    previous_end = 0
    for match in pattern.finditer(clean):
        # Only words since the previous phrase can modify this one ("...at all. Not like me").
        before = clean[previous_end: match.start()].split()
        if before and before[-1] in _MODIFIERS:
            return None
        found.add(values[match.group(1)])
        previous_end = match.end()
    return found.pop() if len(found) == 1 else None
