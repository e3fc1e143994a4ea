"""The ``amt`` command. Thin: each area registers its sub-commands, which parse arguments and call the
typed Python API (nothing else). Area CLI modules import nothing heavy at module level."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator

#: area modules, each with ``register(subparsers)`` adding its sub-commands
AREAS = (
    "amt_core.synth.cli",  # amt cohort
    "amt_core.data.cli",  # amt validate, amt import
    "amt_core.evaluation.cli",  # amt evaluate
    "amt_core.model.cli",  # amt train, amt predict, amt cache
    "amt_core.pipeline.cli",  # amt run, amt figures
)


class UserError(Exception):
    """An error caused by the user's input: printed as one clear message, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amt",
        description="Anterior mediastinal tumours in chest CT: cohort, training, inference, evaluation and figures.",
        epilog="`amt COMMAND --help` describes each command; README.md shows the whole study.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for area in AREAS:  # an area that fails to import is an error of the installation: it surfaces
        importlib.import_module(area).register(sub)
    return parser


def _version() -> str:
    from amt_core import __version__

    return f"amt {__version__}"


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: the file and the system's reason (``/x/y: No space left on device``)."""
    if exc.strerror and exc.filename is not None:
        other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"{exc.filename}{other}: {exc.strerror}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def warnings_on_stderr(prog: str, logger: str = "amt_core") -> Iterator[None]:
    """While the block runs, the warnings the package logs (``logging``, under ``logger``) are lines
    ``PROG: warning: ...`` on stderr, as the command's own warnings are (not the root logger's format)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"{prog}: warning: %(message)s"))
    log = logging.getLogger(logger)
    propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (UserError, FileNotFoundError, ValueError) as exc:
        print(f"amt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"amt {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output went away (`amt ... | head`): stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except OSError as exc:  # the machine's, not the code's: a full disk, a read-only folder, no permission
        print(f"amt {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    # import through the package so that `python -m amt_core.cli` shares the package's UserError class
    from amt_core.cli import main as _main

    sys.exit(_main())
