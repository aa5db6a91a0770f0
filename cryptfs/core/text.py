"""Names from disk, shown safely: one line, pure text, whatever bytes they hold."""

from __future__ import annotations

import os


def display(path: bytes | str) -> str:
    """A path for messages and listings: one line, pure text, whatever bytes the name holds.

    Invalid UTF-8 becomes \\xNN and control characters are escaped, so a name can neither
    split a report line nor crash a strict-UTF-8 stdout.
    """
    if isinstance(path, str):
        path = os.fsencode(path)
    text = path.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def show(rel: bytes | str) -> str:
    """A path relative to a mount root, for messages: ``/`` + its display form."""
    return "/" + display(rel)
