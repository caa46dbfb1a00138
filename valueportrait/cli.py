"""The `vp` command.

Each subcommand lives in the module that does its work; that module defines
``add_arguments(parser)`` and ``run(args) -> int | None``. Only the module of the
command being run is imported, so `vp --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from valueportrait import __version__
from valueportrait.errors import InputError

# name -> (module, one-line help). Contracts in ../shared/DESIGN.md: keep the names.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("analysis.demo", "simulate a study, analyse it, build the item bank, score a simulated LLM, write the report"),
    "app": ("collection_app.launch", "run the Streamlit collection app"),
    "bots": ("collection_app.bots", "simulated participants that take the study through the running app"),
    "import-release": ("analysis.release", "read a folder laid out like the public Value Portrait release into the database"),
    "analyze": ("analysis.pipeline", "quality control, correlations, selection, reliability, factor analyses"),
    "score-instruments": ("analysis.scoring", "PVQ-21 / BFI-10 raw answers to value and trait scores"),
    "cfa": ("analysis.cfa", "a confirmatory factor analysis in lavaan-style syntax, with fit indices"),
    "efa": ("analysis.efa", "an exploratory factor analysis with parallel analysis, as psych's fa and fa.parallel"),
    "power": ("analysis.power", "raters needed to detect a correlation"),
    "run-llm": ("analysis.llm.runner", "ask an OpenAI-compatible endpoint to rate every item under every prompt variant"),
    "score-llm": ("analysis.llm.profile", "an LLM's value profile from its answers"),
    "report": ("analysis.report", "the validation report (self-contained HTML)"),
    "generate-items": ("analysis.llm.generate", "candidate items: value-diverse responses to real queries"),
    "plan-wave": ("analysis.design", "the confirmation wave of a two-stage study, planned from its screening wave"),
    "prolific": ("collection_app.prolific", "Prolific from the command line: create, sync, review, bonus"),
    "export-bank": ("analysis.llm.export", "the validated bank for Hugging Face datasets, Inspect, lm-evaluation-harness or CSV"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vp",
        description="valueportrait: build and run psychometrically validated benchmarks of LLM values.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items())
        + "\n\nRun `vp COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"valueportrait {__version__}")
    parser.add_argument("command", nargs="?", help="one of the commands below")
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, but not the uninformative ones (None, False) of required or flag options."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.required:
            return action.help
        return super()._get_help_string(action)


def _command_parser(name: str):
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"vp {name}",
        description=(module.__doc__ or help_).strip().split("\n\n")[0],
        formatter_class=_HelpFormatter,
    )
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        top = _top_parser()
        if argv and not argv[0].startswith("-"):
            top.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        top.parse_args(argv)
        top.print_help()
        return 0 if not argv else 2
    name = argv[0]
    parser, module = _command_parser(name)
    args = parser.parse_args(argv[1:])
    try:
        status = module.run(args)
    except InputError as exc:
        print(f"vp {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vp {name}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
