"""Command-line plumbing of every package: one- or two-dash long flags, the one top-level handler.

gocryptfs accepts every long flag with one or two dashes; so do we.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import exitcodes
from .errors import Failure, UsageError
from .text import display


class UsageParser(argparse.ArgumentParser):
    """argparse whose usage errors raise ``usage_error`` for the one top-level handler."""

    usage_error: type[Exception] = UsageError

    def error(self, message: str):
        raise self.usage_error(f"{message}\n{self.format_usage().strip()}")


def prog_name(command: str) -> str:
    """``cryptfs`` when run as the console script, ``python -m cryptfs`` otherwise (for usage lines)."""
    return command if os.path.basename(sys.argv[0] or "") == command else f"python -m {command}"


def long_options(parser: argparse.ArgumentParser) -> dict[str, bool]:
    """Every ``--flag`` of a parser and its subparsers, mapped to whether it takes a value."""
    found: dict[str, bool] = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                found[opt] = action.nargs != 0
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.update(long_options(sub))
    return found


def normalize(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Rewrite ``-flag`` / ``-flag=value`` to ``--flag`` where ``--flag`` exists."""
    known = long_options(parser)
    out: list[str] = []
    takes_value = False
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if takes_value:  # the value of the previous option is never rewritten
            out.append(arg)
            takes_value = False
            continue
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name, eq, _ = arg.partition("=")
            if "-" + name in known:
                arg = "-" + arg
        if arg.startswith("--"):
            name, eq, _ = arg.partition("=")
            takes_value = known.get(name, False) and not eq
        out.append(arg)
    return out


def run_main(prog: str, parser: argparse.ArgumentParser, commands: dict, argv: list[str] | None,
             interrupted_note: str = "") -> int:
    """The one top-level handler of a command line: dispatch, then map every failure to a code.

    Every project failure is a :class:`~cryptfs.core.errors.Failure` carrying its ``exit_code``;
    an OSError nobody worded is printed with its (escaped) file name and exits 1.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(normalize(argv, parser))
        return commands[args.command](args)
    except Failure as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{interrupted_note}", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        return exitcodes.ERROR
    except OSError as e:
        name = f"{display(os.fsencode(e.filename))}: " if e.filename else ""
        print(f"{prog}: error: {name}{e.strerror or e}", file=sys.stderr)
        return exitcodes.ERROR
