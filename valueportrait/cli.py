"""The `vp` command.

Each subcommand lives in the module that does its work; that module defines
``add_arguments(parser)`` and ``run(args) -> int | None``. Only the module of the
command being run is imported, so `vp --help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sqlite3
import sys

from valueportrait import __version__
from valueportrait.errors import DATABASES, InputError, Terminated, redact

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
    "fetch-release": ("analysis.fetch_release", "download the authors' public release and lay it out for import-release"),
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


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes in one line (the option, the value, the valid range), exit status 2."""

    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _command_parser(name: str):
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = _Parser(
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
    try:
        args = parser.parse_args(argv[1:])
    except _UsageError as exc:
        return _fail(name, str(exc))
    previous = _handle_sigterm()
    DATABASES.clear()  # the ones this command opens, for its error messages
    try:
        status = module.run(args)
    except InputError as exc:
        return _fail(name, str(exc))
    except Terminated:
        print(f"vp {name}: terminated (SIGTERM); nothing half-written was kept", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"vp {name}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `vp ... | head`: the reader left; say nothing more
        _silence_stdout()
        return 1
    except OSError as exc:
        return _fail(name, os_error_message(exc))
    except sqlite3.Error as exc:
        return _fail(name, database_error_message(exc))
    except MemoryError:
        return _fail(name, "out of memory: the input is too large for this machine")
    finally:
        if previous is not _NOT_INSTALLED:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return int(status or 0)


def _fail(name: str, message: str) -> int:
    print(f"vp {name}: error: {redact(message)}", file=sys.stderr)
    return 2


def _raise_terminated(signum, frame):
    raise Terminated()


_NOT_INSTALLED = object()


def _handle_sigterm():
    """SIGTERM ends a command the way Ctrl-C does (cleanup runs, exit status 143); returns the previous handler."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. a test calling main() from a thread)
        return _NOT_INSTALLED


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


#: What to do about an operating-system error, by errno.
_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device: free some space and run again",
    errno.EDQUOT: "disk quota exceeded: free some space and run again",
    errno.EFBIG: "file too large for this file system (or the process's file-size limit)",
    errno.EACCES: "permission denied: check that you may read (or write) there, or choose another path",
    errno.EPERM: "operation not permitted: check the permissions, or choose another path",
    errno.EROFS: "read-only file system: choose a writable place",
    errno.EISDIR: "is a folder; a file is needed here",
    errno.ENOTDIR: "part of this path is a file; a folder is needed there",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists (a file where a folder is needed?)",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error: the disk or the network share failed",
}


def os_error_message(exc: OSError) -> str:
    """``path: what went wrong: what to do``, in one line."""
    advice = _OS_ADVICE.get(exc.errno, exc.strerror or type(exc).__name__)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {advice}" if paths else advice


def database_error_message(exc: sqlite3.Error) -> str:
    """An SQLite error in one line, naming the database files this run opened."""
    text = str(exc) or type(exc).__name__
    where = ", ".join(dict.fromkeys(DATABASES)) or "database"
    if "disk is full" in text or "disk I/O" in text:
        text += ": free some space and run again (an unfinished transaction is not kept)"
    elif "not a database" in text or "malformed" in text:
        text += ": not a valid SQLite file"
    elif "readonly" in text or "unable to open" in text:
        text += ": check the path and its permissions"
    return f"{where}: {text}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
