"""gocryptfs accepts every long flag with one or two dashes; so do we."""

from __future__ import annotations

import argparse


class UsageParser(argparse.ArgumentParser):
    """argparse whose usage errors raise ``usage_error`` for the one top-level handler."""

    usage_error: type[Exception] = Exception

    def error(self, message: str):
        raise self.usage_error(f"{message}\n{self.format_usage().strip()}")


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
             error_cls: type[Exception], codes, interrupted_note: str = "") -> int:
    """The one top-level handler of a command line: dispatch, then map every failure to a code.

    ``error_cls`` instances carry ``exit_code``; ``codes`` is the package's exitcodes module.
    """
    import os
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(normalize(argv, parser))
        return commands[args.command](args)
    except error_cls as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{interrupted_note}", file=sys.stderr)
        return codes.INTERRUPTED
    except BrokenPipeError:
        return codes.ERROR
    except OSError as e:
        from .tree import display

        name = f"{display(os.fsencode(e.filename))}: " if e.filename else ""
        print(f"{prog}: error: {name}{e.strerror or e}", file=sys.stderr)
        return codes.ERROR
