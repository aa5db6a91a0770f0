"""The one options object of a read-only mount, and the flags that fill it.

``cryptfs mount`` and ``sam mount`` take the same FUSE flags (:func:`add_arguments`) and build
a :class:`MountOptions` from them (:meth:`MountOptions.from_args`); the mount life cycle
(:mod:`cryptfs.core.mount`) and the adapter (:mod:`cryptfs.core.fuse`) read only this object.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from .chunks import BLOCK_PATHS
from .errors import UsageError
from .warmup import DEFAULT_BUDGET, parse_budget

READAHEAD_KB_DEFAULT = 2048  # measured in bench/: 1-4 MiB all help; see bench/README.md
CACHE_TIMEOUT = 3600.0  # attr/entry timeouts: the tree never changes under a read-only mount


@dataclass
class MountOptions:
    source_dir: str  # the encrypted directory (shown as the mount's fsname)
    mountpoint: str
    foreground: bool = False
    allow_other: bool = False
    nonempty: bool = False
    extra_options: list[str] = field(default_factory=list)
    direct_io: bool = False
    readahead_kb: int = READAHEAD_KB_DEFAULT
    log_file: str | None = None
    notify_fd: int | None = None
    subtype: str = "cryptfs"  # shown as fuse.<subtype> in the mount table
    block_path: str = "auto"  # auto | c | python
    decrypt_threads: int | None = None  # None: the measured default (see decrypt_threads_for)
    cache_timeout: float = CACHE_TIMEOUT
    warmup: bool = False  # read every file through the mount once it is ready (core/warmup.py)
    warmup_budget: str | int = DEFAULT_BUDGET  # a size ("8G", bytes as int) or "NN%" of MemAvailable

    def __post_init__(self) -> None:
        """Budget and combination errors when the options are made, not in the daemon later."""
        try:
            parse_budget(self.warmup_budget)
        except ValueError as e:
            raise UsageError(f"--warmup-budget: {e}") from None
        if self.warmup and self.direct_io:
            raise UsageError("--warmup fills the page cache, which --direct-io bypasses: use one of them")

    @classmethod
    def from_args(cls, args: argparse.Namespace, source_dir: str, subtype: str) -> MountOptions:
        """The options from :func:`add_arguments`' flags; usage errors before anything happens."""
        if args.notify_fd is not None:
            try:
                os.fstat(args.notify_fd)
            except OSError:
                raise UsageError(f"--notify-fd {args.notify_fd}: not an open file descriptor") from None
        readahead = READAHEAD_KB_DEFAULT if args.readahead_kb is None else args.readahead_kb
        if readahead < 0:
            raise UsageError("--readahead-kb must be 0 or more")
        if args.decrypt_threads is not None and not 0 <= args.decrypt_threads <= 16:
            raise UsageError("--decrypt-threads must be between 0 and 16")
        budget = getattr(args, "warmup_budget", None)
        return cls(source_dir=source_dir, mountpoint=args.mountpoint, foreground=args.fg,
                   allow_other=args.allow_other, nonempty=args.nonempty, extra_options=args.options,
                   direct_io=args.direct_io, readahead_kb=readahead, log_file=args.log,
                   notify_fd=args.notify_fd, subtype=subtype, block_path=args.block_path,
                   decrypt_threads=args.decrypt_threads,
                   warmup=getattr(args, "warmup", False) or budget is not None,
                   warmup_budget=DEFAULT_BUDGET if budget is None else budget)

    def threads(self) -> int:
        """Extra threads that split one large request: only where it pays (bench/README.md).

        Through the page cache the kernel keeps about two requests in flight, which already
        occupies both cores: splitting each one lost in 7 of 9 paired runs. With --direct-io a
        reader has one request in flight, and the split is what uses the other cores.
        """
        if self.decrypt_threads is not None:
            return self.decrypt_threads
        return max(0, (os.cpu_count() or 1) - 1) if self.direct_io else 0


def add_block_path_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block-path", choices=BLOCK_PATHS, default="auto",
                   help="decryption implementation (default auto: C where built and applicable)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The FUSE flags every read-only mount takes (cryptfs mount, sam mount)."""
    p.add_argument("-f", "--fg", "--foreground", dest="fg", action="store_true",
                   help="stay in the foreground and log to stderr")
    p.add_argument("--allow_other", "--allow-other", dest="allow_other", action="store_true",
                   help="let other users read the mount (the model server may run as another user)")
    p.add_argument("--nonempty", action="store_true", help="mount over a non-empty directory")
    p.add_argument("-o", "--ko", dest="options", action="append", default=[], metavar="OPTS",
                   help="extra FUSE mount options, comma-separated")
    p.add_argument("--direct-io", action="store_true",
                   help="bypass the page cache (faster single read(), breaks MAP_SHARED mmap)")
    p.add_argument("--readahead-kb", type=int, default=None, metavar="KB",
                   help=f"set the mount's bdi read_ahead_kb (default {READAHEAD_KB_DEFAULT}; 0 keeps "
                        "the kernel's)")
    p.add_argument("--log", metavar="FILE", help="daemon log file (default: syslog)")
    p.add_argument("--notify-fd", type=int, metavar="N",
                   help="write one line to file descriptor N when the mount is ready")
    add_block_path_argument(p)
    p.add_argument("--decrypt-threads", type=int, default=None, metavar="N",
                   help="C path: extra threads that share one large request (default 0; with "
                        "--direct-io cores - 1)")
    p.add_argument("--warmup", action="store_true",
                   help="once the mount is ready, read every file through it in the background "
                        "(small files first, then shards in natural order) so the model server "
                        "loads from the page cache; it pauses while other reads arrive")
    p.add_argument("--warmup-budget", metavar="SIZE|PCT%", default=None,
                   help="warm at most SIZE (e.g. 8G, 512M) or PCT%% of MemAvailable at the start "
                        f"(default {DEFAULT_BUDGET.replace('%', '%%')}: keep 25%% free); implies --warmup")
