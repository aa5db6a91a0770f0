"""The command line of measured launch: ``cryptfs digest`` and ``--expect-digest``/``--allow-holes``.

Kept out of :mod:`cryptfs.cli` so that module stays a list of commands; the logic is in
:mod:`cryptfs.digest` (the measurement) and :mod:`cryptfs.pin` (the pinned tree).
"""

from __future__ import annotations

import argparse
import json

from . import exitcodes
from .digest import tree_digest
from .errors import UsageError
from .password import KeySource
from .pin import open_pinned_tree
from .tree import CipherTree, open_tree


def add_digest_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("digest", help="print the tree digest of CIPHERDIR (no key needed)")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    p.add_argument("--config", metavar="FILE", help="gocryptfs.conf elsewhere than CIPHERDIR")
    p.add_argument("--json", action="store_true",
                   help="print {digest, format, entries, files, dirs, symlinks, bytes} as JSON")


def add_pin_arguments(p: argparse.ArgumentParser) -> None:
    """``--expect-digest`` and ``--allow-holes`` for mount and decrypt."""
    p.add_argument("--expect-digest", metavar="DIGEST",
                   help="refuse any tree but this one (sha256:..., as 'cryptfs digest' prints it), "
                        "checked before the password is read; then serve only the measured entries")
    p.add_argument("--allow-holes", action="store_true",
                   help="with --expect-digest: serve an all-zero cipher block as zeros (refused by default)")


def cmd_digest(args: argparse.Namespace) -> int:
    """Print the digest (or its --json summary): what the owner registers and --expect-digest takes."""
    measured = tree_digest(args.cipherdir, args.config)
    if args.json:
        print(json.dumps(measured.summary()))
    else:
        print(measured.digest)
    return exitcodes.OK


def open_for(args: argparse.Namespace) -> CipherTree:
    """The unlocked tree of decrypt, fsck or mount: pinned when ``--expect-digest`` is given.

    The digest's syntax is checked before anything else, the tree compared before the key is read.
    """
    expect = getattr(args, "expect_digest", None)
    allow_holes = getattr(args, "allow_holes", False)
    holes = getattr(args, "holes", True)
    if allow_holes and not holes:
        raise UsageError("--allow-holes and --no-holes contradict each other: give one")
    if expect is None and allow_holes:
        raise UsageError("--allow-holes only applies with --expect-digest (unpinned trees serve holes "
                         "unless --no-holes is given)")
    keys = KeySource(args.passfile, args.extpass, args.masterkey)
    if expect is not None:
        return open_pinned_tree(args.cipherdir, keys, expect, args.config, args.block_path, allow_holes)
    return open_tree(args.cipherdir, keys, args.config, args.block_path, holes)
