"""Numeric options are checked when the command line is read, with their range in one line.

Walks every command's parser: a numeric option whose type is plain int/float (which take
nan, inf and any sign) fails the test, so a new command or option cannot slip through.
"""

from __future__ import annotations

import argparse
import math

import pytest

from valueportrait import options as opt
from valueportrait.cli import COMMANDS, _command_parser, main


def _actions():
    """(command, action) for every option of every command, sub-commands (vp prolific create, ...) included."""
    todo = [(name, _command_parser(name)[0]) for name in sorted(COMMANDS)]
    while todo:
        name, parser = todo.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
            elif action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction,
                                                                    argparse._StoreFalseAction, argparse._VersionAction)):
                yield name, action


def test_no_numeric_option_takes_a_bare_int_or_float():
    bare = [f"vp {name} {action.option_strings[-1]}" for name, action in _actions() if action.type in (int, float)]
    assert not bare, f"numeric options without a range: {bare} (use valueportrait.options)"


def test_every_numeric_default_is_in_its_own_range():
    checked = 0
    for name, action in _actions():
        if isinstance(action.type, opt.NumberType) and action.default is not None:
            assert action.type(str(action.default)) == action.default, (name, action.option_strings)
            checked += 1
    assert checked >= 40


@pytest.mark.parametrize("argv, message", [
    (["analyze", "--threshold", "nan"], "argument --threshold: nan is not a number in [0, 1)"),
    (["analyze", "--threshold", "5"], "argument --threshold: 5 is not a number in [0, 1)"),
    (["analyze", "--alpha", "0"], "argument --alpha: 0 is not a number in (0, 1)"),
    (["analyze", "--bootstrap", "-1"], "argument --bootstrap: -1 is not a whole number >= 0"),
    (["analyze", "--splits", "2.5"], "argument --splits: 2.5 is not a whole number >= 1"),
    (["analyze", "--speeder-fraction", "inf"], "argument --speeder-fraction: inf is not a number in [0, 1]"),
    (["demo", "--seed", "-1"], "argument --seed: -1 is not a whole number in 0..4294967295"),
    (["demo", "--alpha", "2"], "argument --alpha: 2 is not a number in (0, 1)"),
    (["run-llm", "--model", "m", "--item-bank", "b.json", "--timeout", "nan"], "argument --timeout: nan is not a number in (0, 604800]"),
    (["run-llm", "--model", "", "--item-bank", "b.json"], "argument --model: '': an empty model name is not allowed"),
    (["run-llm", "--model", "m", "--item-bank", "b.json", "--concurrency", "0"], "argument --concurrency: 0 is not a whole number >= 1"),
    (["power", "--rho", "0"], "argument --rho: 0 is not a number in (-1, 1), not 0"),
    (["power", "--power", "1"], "argument --power: 1 is not a number in (0, 1)"),
    (["app", "--port", "70000"], "argument --port: 70000 is not a whole number in 1..65535"),
    (["bots", "--url", "http://x", "--n", "0"], "argument --n: 0 is not a whole number >= 1"),
    (["generate-items", "--queries", "q.csv", "--dup-threshold", "0"], "argument --dup-threshold: 0 is not a number in (0, 1]"),
])
def test_bad_values_stop_before_anything_happens(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"vp {argv[0]}: error: {message} (see vp {argv[0]} --help)\n"
    assert list(tmp_path.iterdir()) == []  # nothing written: not even demo's study.db


def test_demo_with_a_bad_alpha_writes_nothing(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--alpha", "2"]) == 2
    assert not (tmp_path / "demo").exists()


def test_tiny_rho_gives_the_closed_form_figure(capsys):
    """rho = 1e-5: n = ((z_.975 + z_.8) / atanh(rho))^2 + 3, Cohen's closed form (it leaves out the far tail,
    about 1e-6 of power here), to 1e-5 relative (brentq's bracket used to fail)."""
    from scipy.stats import norm

    assert main(["power", "--rho", "1e-5"]) == 0
    out = capsys.readouterr().out
    expected = ((norm.ppf(0.975) + norm.ppf(0.8)) / math.atanh(1e-5)) ** 2 + 3
    got = float(out.split(": ")[-1].split(" ->")[0])
    assert got == pytest.approx(expected, rel=1e-5)
    assert main(["power", "--rho", "1e-9"]) == 0
    assert "more than 1e+15" in capsys.readouterr().out


def test_number_type_messages():
    assert opt.count(1).describe() == "a whole number >= 1"
    assert opt.probability().describe() == "a number in (0, 1)"
    assert opt.NumberType().describe() == "a finite number"
    with pytest.raises(argparse.ArgumentTypeError, match="'a b' is not a whole number"):
        opt.count()("a b")
