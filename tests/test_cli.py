"""The vp command: every contracted subcommand is there and has a --help."""

import subprocess
import sys

import pytest

from valueportrait.cli import COMMANDS, main

CONTRACT = ["demo", "app", "bots", "import-release", "analyze", "score-instruments", "cfa", "power",
            "run-llm", "score-llm", "report"]


def test_contracted_commands_registered():
    assert set(CONTRACT) <= set(COMMANDS)


def test_top_level_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "valueportrait.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in CONTRACT:
        assert f"  {name} " in out


def test_unknown_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert f"usage: vp {name}" in capsys.readouterr().out
