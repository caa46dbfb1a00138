"""Numeric command-line options, checked when the command line is read.

Every numeric option of every command takes its ``type=`` from here, so a value outside
its meaning (``--threshold nan``, ``--alpha 2``, ``--seed -1``, ``--timeout nan``) stops
the command at once, before anything is read or written, with one line that gives the
valid range::

    vp analyze: error: argument --threshold: 'nan' is not a number in [0, 1) (see vp analyze --help)

``tests/test_options.py`` walks every command's options and fails on a numeric option
that does not use these types.
"""

from __future__ import annotations

import argparse
import math

#: Seeds are handed to numpy, whose legacy generators take 0..2**32 - 1.
SEED_MAX = 2**32 - 1


def _shown(text: str) -> str:
    """The value as typed; quoted when it is empty or holds spaces."""
    return text if text and not any(c.isspace() for c in text) and len(text) <= 40 else repr(text[:40])


class NumberType:
    """An argparse ``type=`` that reads a number and checks it lies in a range.

    Parameters
    ----------
    low, high : bounds (None: unbounded on that side).
    integer : whole numbers only.
    low_open, high_open : exclude the bound itself.
    not_zero : also refuse 0 (e.g. a correlation to detect).
    """

    def __init__(self, low=None, high=None, *, integer: bool = False, low_open: bool = False,
                 high_open: bool = False, not_zero: bool = False):
        self.low, self.high, self.integer = low, high, integer
        self.low_open, self.high_open, self.not_zero = low_open, high_open, not_zero
        self.__name__ = "whole number" if integer else "number"  # argparse names the type in some messages

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        low, high = self.low, self.high
        if low is not None and high is not None:
            if self.integer and not self.low_open and not self.high_open:
                text = f"{kind} in {low}..{high}"
            else:
                text = f"{kind} in {'(' if self.low_open else '['}{low:g}, {high:g}{')' if self.high_open else ']'}"
        elif low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {low:g}"
        elif high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {high:g}"
        else:
            text = f"a finite {kind.removeprefix('a ')}"
        return text + (", not 0" if self.not_zero else "")

    def __call__(self, text: str):
        try:
            value = int(text, 10) if self.integer else float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not {self.describe()}") from None
        ok = math.isfinite(value)
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if ok and self.not_zero:
            ok = value != 0
        if not ok:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not {self.describe()}")
        return value

    def __repr__(self) -> str:
        return f"NumberType({self.describe()})"


def probability() -> NumberType:
    """A level or a power: strictly between 0 and 1."""
    return NumberType(0, 1, low_open=True, high_open=True)


def correlation_threshold() -> NumberType:
    """A keying threshold on rho (or |rho|): 0 up to, not including, 1."""
    return NumberType(0, 1, high_open=True)


def count(minimum: int = 0, maximum: int | None = None) -> NumberType:
    """A whole number of things (resamples, workers, retries, tokens)."""
    return NumberType(minimum, maximum, integer=True)


def seed() -> NumberType:
    """A random seed."""
    return NumberType(0, SEED_MAX, integer=True)


def seconds(maximum: float = 7 * 24 * 3600.0, *, allow_zero: bool = False) -> NumberType:
    """A duration in seconds (finite; 0 only where it means "no wait")."""
    return NumberType(0, maximum, low_open=not allow_zero)


def port() -> NumberType:
    return NumberType(1, 65535, integer=True)


def fraction(*, low_open: bool = False) -> NumberType:
    """A share: 0..1."""
    return NumberType(0, 1, low_open=low_open)


def non_negative() -> NumberType:
    """A finite number >= 0 (an SD, a noise level)."""
    return NumberType(0)


def non_empty(what: str = "value"):
    """An argparse ``type=`` for text that must not be blank (a model name, an id)."""
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{text!r}: an empty {what} is not allowed")
        return text

    check.__name__ = what
    return check
