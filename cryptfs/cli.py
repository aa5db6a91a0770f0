"""``python -m cryptfs``: decrypt, encrypt, info and fsck gocryptfs v2 directories."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, exitcodes
from .argv import UsageParser, run_main
from .config import SCRYPT_LOGN_DEFAULT, ConfFile, FsParams
from .cryptocore import GCM, SIV, XCHACHA
from .errors import CryptfsError, UsageError
from .hardening import protect_process
from .names import LONGNAME_MAX_DEFAULT, LONGNAME_MAX_MIN
from .password import KeySource
from .tree import check_cipherdir, conf_path_for, display, open_tree


class _Parser(UsageParser):
    usage_error = UsageError


def _unlock_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("unlock (one of; default: the password from stdin)")
    g.add_argument("--passfile", action="append", metavar="FILE",
                   help="read the password from the first line of FILE (repeat to concatenate)")
    g.add_argument("--extpass", action="append", metavar="CMD",
                   help="run CMD and use the first line it prints (given once: split on spaces)")
    g.add_argument("--masterkey", metavar="HEX",
                   help="use this master key (64 hex digits, dashes allowed) or 'stdin'")
    p.add_argument("--config", metavar="FILE", help="gocryptfs.conf elsewhere than CIPHERDIR")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def add_mount_options(p: argparse.ArgumentParser) -> None:
    """The FUSE options every read-only mount takes (cryptfs mount, sam mount)."""
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
                   help="set the mount's bdi read_ahead_kb (default 2048; 0 keeps the kernel's)")
    p.add_argument("--log", metavar="FILE", help="daemon log file (default: syslog)")
    p.add_argument("--notify-fd", type=int, metavar="N",
                   help="write one line to file descriptor N when the mount is ready")
    p.add_argument("--block-path", choices=("auto", "c", "python"), default=None,
                   help="decryption implementation (default auto: C where built)")
    p.add_argument("--decrypt-threads", type=int, default=None, metavar="N",
                   help="C path: extra threads that share one large request (default 0; with "
                        "--direct-io cores - 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m cryptfs",
                     description="Read and write gocryptfs v2 encrypted directories.")
    parser.add_argument("--version", action="version", version=f"cryptfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("decrypt", help="decrypt CIPHERDIR into a new plaintext directory")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    p.add_argument("outdir", metavar="OUTDIR", help="created if missing; must be empty")
    _unlock_args(p)
    _common(p)

    p = sub.add_parser("encrypt", help="encrypt PLAINDIR into a new gocryptfs directory")
    p.add_argument("plaindir", metavar="PLAINDIR")
    p.add_argument("cipherdir", metavar="CIPHERDIR", help="created if missing; must be empty")
    g = p.add_argument_group("password (default: stdin, asked twice on a terminal)")
    g.add_argument("--passfile", action="append", metavar="FILE")
    g.add_argument("--extpass", action="append", metavar="CMD")
    p.add_argument("--config", metavar="FILE", help="write gocryptfs.conf here instead")
    p.add_argument("--scryptn", type=int, default=SCRYPT_LOGN_DEFAULT, metavar="N",
                   help=f"scrypt cost as log2(N), 10..28 (default {SCRYPT_LOGN_DEFAULT})")
    p.add_argument("--xchacha", action="store_true", help="XChaCha20-Poly1305 content encryption")
    p.add_argument("--aessiv", action="store_true", help="AES-SIV content encryption")
    p.add_argument("--deterministic-names", action="store_true", help="no per-directory IVs")
    p.add_argument("--plaintextnames", action="store_true", help="do not encrypt file names")
    p.add_argument("--longnamemax", type=int, default=LONGNAME_MAX_DEFAULT, metavar="N",
                   help="hash encrypted names longer than N characters (62..255, default 255)")
    p.add_argument("-L", "--dereference", action="store_true",
                   help="follow symlinks and encrypt what they point to")
    _common(p)

    p = sub.add_parser("info", help="show the configuration of CIPHERDIR (no secrets)")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    p.add_argument("--config", metavar="FILE")

    p = sub.add_parser("mount", help="mount CIPHERDIR read-only at MOUNTPOINT (FUSE)")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    _unlock_args(p)
    add_mount_options(p)

    p = sub.add_parser("unmount", help="unmount a cryptfs (or any FUSE) mount")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")

    p = sub.add_parser("fsck", help="authenticate every name and block; list each problem")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    _unlock_args(p)
    _common(p)
    return parser


def _progress(args) -> bool | None:
    return False if args.quiet else None


def _path(path: str) -> str:
    """A command-line path for stdout: any bytes, printed as one line of text."""
    return display(os.fsencode(path))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def cmd_decrypt(args) -> int:
    from .decrypt import decrypt_tree

    tree = open_tree(args.cipherdir, KeySource(args.passfile, args.extpass, args.masterkey), args.config)
    stats = decrypt_tree(tree, args.outdir, _progress(args))
    if not args.quiet:
        print(f"decrypted {stats.files} files ({_mib(stats.plain_bytes)}), {stats.dirs} directories, "
              f"{stats.symlinks} symlinks into {_path(args.outdir)}")
    if stats.hidden:
        print(f"cryptfs: warning: {stats.hidden} undecryptable names were skipped", file=sys.stderr)
    return exitcodes.OK


def _params(args) -> FsParams:
    if args.xchacha and args.aessiv:
        raise UsageError("--xchacha and --aessiv cannot be combined")
    if args.plaintextnames and (args.deterministic_names or args.longnamemax != LONGNAME_MAX_DEFAULT):
        raise UsageError("--plaintextnames cannot be combined with --deterministic-names or --longnamemax")
    if not LONGNAME_MAX_MIN <= args.longnamemax <= LONGNAME_MAX_DEFAULT:
        raise UsageError(f"--longnamemax must be between {LONGNAME_MAX_MIN} and 255")
    content = XCHACHA if args.xchacha else SIV if args.aessiv else GCM
    return FsParams(content=content, plaintext_names=args.plaintextnames,
                    diriv=not (args.deterministic_names or args.plaintextnames),
                    raw64=not args.plaintextnames, longnamemax=args.longnamemax)


def cmd_encrypt(args) -> int:
    from .encrypt import encrypt_tree

    params = _params(args)
    if not 10 <= args.scryptn <= 28:
        raise UsageError("--scryptn takes log2(N) between 10 and 28 (default 16)")
    password = KeySource(args.passfile, args.extpass).password(confirm=True)
    stats = encrypt_tree(args.plaindir, args.cipherdir, password, params, args.scryptn,
                         args.dereference, _progress(args), args.config)
    if not args.quiet:
        print(f"encrypted {stats.files} files ({_mib(stats.plain_bytes)}), {stats.dirs} directories, "
              f"{stats.symlinks} symlinks into {_path(args.cipherdir)} ({' '.join(params.flags())})")
    return exitcodes.OK


def cmd_mount(args) -> int:
    from .mount import check_mountpoint, mount

    cfg = mount_config(args, args.cipherdir)
    check_mountpoint(cfg)  # before asking for the password
    protect_process()  # the daemon holds the key for as long as it runs
    tree = open_tree(args.cipherdir, KeySource(args.passfile, args.extpass, args.masterkey), args.config)
    return mount(tree, cfg)


def mount_config(args, source_dir: str, subtype: str = "cryptfs"):
    """A MountConfig from add_mount_options' flags; applies --block-path and --decrypt-threads."""
    from .content import BLOCK_PATH_ENV
    from .mount import READAHEAD_KB_DEFAULT, MountConfig

    if args.block_path:
        os.environ[BLOCK_PATH_ENV] = args.block_path
    if args.notify_fd is not None:
        try:
            os.fstat(args.notify_fd)
        except OSError:
            raise UsageError(f"--notify-fd {args.notify_fd}: not an open file descriptor") from None
    _set_decrypt_threads(args)
    readahead = READAHEAD_KB_DEFAULT if args.readahead_kb is None else args.readahead_kb
    if readahead < 0:
        raise UsageError("--readahead-kb must be 0 or more")
    return MountConfig(cipherdir=source_dir, mountpoint=args.mountpoint, foreground=args.fg,
                       allow_other=args.allow_other, nonempty=args.nonempty, extra_options=args.options,
                       direct_io=args.direct_io, readahead_kb=readahead, log_file=args.log,
                       notify_fd=args.notify_fd, subtype=subtype)


def _set_decrypt_threads(args) -> None:
    """Split large requests over a pool only where it pays (measured, bench/README.md).

    Through the page cache the kernel keeps about two requests in flight, which already
    occupies both cores: splitting each one lost in 7 of 9 paired runs. With --direct-io a
    reader has one request in flight, and the split is what uses the second core.
    """
    threads = args.decrypt_threads
    if threads is None:
        threads = None if args.direct_io else 0
    elif not 0 <= threads <= 16:
        raise UsageError("--decrypt-threads must be between 0 and 16")
    from .content import c_block_path_available

    if threads is not None and c_block_path_available():
        from ._blocks import set_threads

        set_threads(threads)


def cmd_unmount(args) -> int:
    from .mount import unmount

    unmount(args.mountpoint)
    return exitcodes.OK


def cmd_info(args) -> int:
    check_cipherdir(args.cipherdir)
    conf = ConfFile.load(conf_path_for(args.cipherdir, args.config))
    s = conf.scrypt
    rows = [
        ("Creator", conf.creator),
        ("FeatureFlags", " ".join(conf.feature_flags)),
        ("EncryptedKey", f"{len(conf.encrypted_key)}B"),
        ("ScryptObject", f"Salt={len(s.salt)}B N={s.n} R={s.r} P={s.p} KeyLen={s.keylen}"),
        ("contentEncryption", _content_name(conf.params)),
    ]
    if conf.longnamemax:
        rows.append(("LongNameMax", str(conf.longnamemax)))
    rows.append(("blockPath", _block_path_info(conf.params)))
    for key, value in rows:
        print(f"{key + ':':<19}{value}")
    return exitcodes.OK


def _block_path_info(params: FsParams) -> str:
    from .content import BLOCK_PATH_ENV, c_block_path_available

    if params.content != GCM:
        return "python (the C block path covers AES-GCM only)"
    if not c_block_path_available():
        return "python (the C block path is not built: install gcc and libssl-dev, then reinstall)"
    if os.environ.get(BLOCK_PATH_ENV) == "python":
        return f"python ({BLOCK_PATH_ENV}=python)"
    from ._blocks import OPENSSL_VERSION

    return f"c ({OPENSSL_VERSION})"


def _content_name(params: FsParams) -> str:
    return {GCM: "AES-GCM-256", SIV: "AES-SIV-512", XCHACHA: "XChaCha20-Poly1305"}[params.content]


def cmd_fsck(args) -> int:
    from .fsck import fsck

    tree = open_tree(args.cipherdir, KeySource(args.passfile, args.extpass, args.masterkey), args.config)
    report = fsck(tree, _progress(args), on_problem=lambda m: print(f"fsck: {m}", flush=True))
    summary = (f"checked {report.files} files, {report.dirs} directories, {report.symlinks} symlinks: ")
    if report.problems:
        print(summary + f"{len(report.problems)} problems found", file=sys.stderr)
        return exitcodes.INTEGRITY
    if not args.quiet:
        print(summary + "no problems found")
    return exitcodes.OK


COMMANDS = {"decrypt": cmd_decrypt, "encrypt": cmd_encrypt, "info": cmd_info, "fsck": cmd_fsck,
            "mount": cmd_mount, "unmount": cmd_unmount}


def main(argv: list[str] | None = None) -> int:
    return run_main("cryptfs", build_parser(), COMMANDS, argv, CryptfsError, exitcodes,
                    "; partial output was removed")


if __name__ == "__main__":
    sys.exit(main())
