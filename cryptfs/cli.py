"""``python -m cryptfs``: decrypt, encrypt, info, fsck, digest and mount gocryptfs v2 directories."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, cli_pin, exitcodes
from .config import SCRYPT_LOGN_DEFAULT, SCRYPT_LOGN_MAX, SCRYPT_LOGN_MIN, ConfFile, FsParams
from .core import chunks, options
from .core.argv import UsageParser, prog_name, run_main
from .core.hardening import protect_process
from .core.text import display
from .cryptocore import GCM, SIV, XCHACHA
from .errors import UsageError
from .names import LONGNAME_MAX_DEFAULT, LONGNAME_MAX_MIN
from .password import KeySource
from .tree import check_cipherdir, conf_path_for


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


def _no_holes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-holes", dest="holes", action="store_false",
                   help="an all-zero cipher block is a tampered block (EIO / exit 26), not 4 KiB of zeros "
                        "as gocryptfs serves it (model files are not sparse; agent run always sets it; "
                        "--expect-digest implies it)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=prog_name("cryptfs"),
                     description="Read and write gocryptfs v2 encrypted directories.")
    parser.add_argument("--version", action="version", version=f"cryptfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("decrypt", help="decrypt CIPHERDIR into a new plaintext directory")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    p.add_argument("outdir", metavar="OUTDIR", help="created if missing; must be empty")
    _unlock_args(p)
    options.add_block_path_argument(p)
    _no_holes(p)
    p.add_argument("--keep-external-links", action="store_true",
                   help="also write symlinks whose target is absolute or leaves the tree (skipped with a "
                        "warning by default; the mount never serves them)")
    cli_pin.add_pin_arguments(p)
    _common(p)

    p = sub.add_parser("encrypt", help="encrypt PLAINDIR into a new gocryptfs directory")
    p.add_argument("plaindir", metavar="PLAINDIR")
    p.add_argument("cipherdir", metavar="CIPHERDIR", help="created if missing; must be empty")
    g = p.add_argument_group("password (default: stdin, asked twice on a terminal)")
    g.add_argument("--passfile", action="append", metavar="FILE")
    g.add_argument("--extpass", action="append", metavar="CMD")
    p.add_argument("--config", metavar="FILE", help="write gocryptfs.conf here instead")
    p.add_argument("--scryptn", type=int, default=SCRYPT_LOGN_DEFAULT, metavar="N",
                   help=f"scrypt cost as log2(N), {SCRYPT_LOGN_MIN}..{SCRYPT_LOGN_MAX} (default "
                        f"{SCRYPT_LOGN_DEFAULT}; readers refuse more than 1 GiB of scrypt memory)")
    p.add_argument("--xchacha", action="store_true", help="XChaCha20-Poly1305 content encryption")
    p.add_argument("--aessiv", action="store_true", help="AES-SIV content encryption")
    p.add_argument("--deterministic-names", action="store_true", help="no per-directory IVs")
    p.add_argument("--plaintextnames", action="store_true", help="do not encrypt file names")
    p.add_argument("--longnamemax", type=int, default=LONGNAME_MAX_DEFAULT, metavar="N",
                   help="hash encrypted names longer than N characters (62..255, default 255)")
    p.add_argument("-L", "--dereference", action="store_true",
                   help="follow symlinks and encrypt what they point to")
    p.add_argument("--keep-external-links", action="store_true",
                   help="store symlinks that point outside PLAINDIR as they are (refused by default: "
                        "the mount does not serve them)")
    _common(p)

    p = sub.add_parser("info", help="show the configuration of CIPHERDIR (no secrets)")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    p.add_argument("--config", metavar="FILE")

    p = sub.add_parser("mount", help="mount CIPHERDIR read-only at MOUNTPOINT (FUSE)")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    _unlock_args(p)
    options.add_arguments(p)
    _no_holes(p)
    cli_pin.add_pin_arguments(p)

    p = sub.add_parser("unmount", help="unmount a cryptfs (or any FUSE) mount")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")

    cli_pin.add_digest_command(sub)

    p = sub.add_parser("fsck", help="authenticate every name and block; list each problem")
    p.add_argument("cipherdir", metavar="CIPHERDIR")
    _unlock_args(p)
    options.add_block_path_argument(p)
    _common(p)
    return parser


def _progress(args) -> bool | None:
    return False if args.quiet else None


def _path(path: str) -> str:
    """A command-line path for stdout: any bytes, printed as one line of text."""
    return display(os.fsencode(path))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _open(args):
    """The unlocked tree for decrypt, fsck and mount (password or master key, --block-path, pin)."""
    return cli_pin.open_for(args)


def cmd_decrypt(args) -> int:
    from .decrypt import decrypt_tree

    tree = _open(args)
    stats = decrypt_tree(tree, args.outdir, _progress(args), keep_external_links=args.keep_external_links)
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
    if not SCRYPT_LOGN_MIN <= args.scryptn <= SCRYPT_LOGN_MAX:
        raise UsageError(f"--scryptn takes log2(N) between {SCRYPT_LOGN_MIN} and {SCRYPT_LOGN_MAX} "
                         f"(default {SCRYPT_LOGN_DEFAULT})")
    password = KeySource(args.passfile, args.extpass).password(confirm=True)
    stats = encrypt_tree(args.plaindir, args.cipherdir, password, params, args.scryptn,
                         args.dereference, _progress(args), args.config, args.keep_external_links)
    if not args.quiet:
        print(f"encrypted {stats.files} files ({_mib(stats.plain_bytes)}), {stats.dirs} directories, "
              f"{stats.symlinks} symlinks into {_path(args.cipherdir)} ({' '.join(params.flags())})")
    return exitcodes.OK


def cmd_mount(args) -> int:
    from .core.mount import check_mountpoint, mount

    opts = options.MountOptions.from_args(args, args.cipherdir, subtype="cryptfs")
    check_mountpoint(opts)  # before asking for the password
    protect_process()  # the daemon holds the key for as long as it runs
    return mount(_open(args), opts)


def cmd_unmount(args) -> int:
    from .core.mount import unmount

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
    if params.content != GCM:
        return "python (the C block path covers AES-GCM only)"
    if not chunks.c_available():
        return "python (the C block path is not built: install gcc and libssl-dev, then reinstall)"
    return f"c ({chunks.openssl_version()})"


def _content_name(params: FsParams) -> str:
    return {GCM: "AES-GCM-256", SIV: "AES-SIV-512", XCHACHA: "XChaCha20-Poly1305"}[params.content]


def cmd_fsck(args) -> int:
    from .fsck import fsck

    args.holes = False  # all-zero blocks are listed as warnings
    tree = _open(args)
    report = fsck(tree, _progress(args), on_problem=lambda m: print(f"fsck: {m}", flush=True),
                  on_warning=lambda m: print(f"fsck: warning: {m}", flush=True))
    summary = f"checked {report.files} files, {report.dirs} directories, {report.symlinks} symlinks: "
    warned = f", {_count(len(report.warnings), 'warning')}" if report.warnings else ""
    if report.problems:
        print(summary + f"{_count(len(report.problems), 'problem')} found{warned}", file=sys.stderr)
        return exitcodes.INTEGRITY
    if not args.quiet:
        print(summary + f"no problems found{warned}")
    return exitcodes.OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


COMMANDS = {"decrypt": cmd_decrypt, "encrypt": cmd_encrypt, "info": cmd_info, "fsck": cmd_fsck,
            "mount": cmd_mount, "unmount": cmd_unmount, "digest": cli_pin.cmd_digest}


def main(argv: list[str] | None = None) -> int:
    return run_main("cryptfs", build_parser(), COMMANDS, argv, "; partial output was removed")


if __name__ == "__main__":
    sys.exit(main())
