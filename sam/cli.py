"""``python -m sam``: pack, info, verify, unpack, mount and unmount open Sam-style packages."""

from __future__ import annotations

import argparse
import json
import os
import sys

from cryptfs.core import options
from cryptfs.core.argv import UsageParser, prog_name, run_main
from cryptfs.core.hardening import protect_process
from cryptfs.core.text import display

from . import __version__, exitcodes
from . import keys as keymod
from .errors import UsageError
from .manifest import check_digest_syntax
from .package import IoProblem, Package

ARGV_KEY_WARNING = ("sam: warning: a key on the command line is visible to other users (ps, "
                    "/proc/PID/cmdline) and in shell history: prefer --key-file FILE or --key-file - (stdin)")


class _Parser(UsageParser):
    usage_error = UsageError

    def error(self, message: str):
        if "unrecognized arguments" in message or "ignored explicit argument" in message:
            # never repeat the arguments: one of them may be a key (pack's PLAINTEXT_KEY)
            message = ("unexpected arguments or options (not repeated here: one may be the key); a key "
                       "that starts with '-' goes after '--': python -m sam pack -- MODEL_DIR -KEY KEY_ID")
        super().error(message)


def _key_file(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--key-file", metavar="FILE", required=required,
                   help="the plaintext key: the bytes of FILE without one trailing newline; - reads stdin")


def _unlock_args(p: argparse.ArgumentParser) -> None:
    """What every reader of a package's content takes: the key, and optionally the pinned digest."""
    _key_file(p)
    p.add_argument("--expect-digest", metavar="DIGEST",
                   help="refuse any package but this one (sha256:..., as 'sam info' prints it)")


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=prog_name("sam"),
                     description="Open, tamper-evident model packages (Sam packager interface). "
                                 "Packages are read by these tools, not by the platform's own Sam.")
    parser.add_argument("--version", action="version", version=f"sam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("pack", help="seal MODEL_DIR into ./KEY_ID/",
                       usage="python -m sam pack MODEL_DIR PLAINTEXT_KEY KEY_ID [options]\n"
                             "       python -m sam pack MODEL_DIR KEY_ID --key-file FILE [options]")
    p.add_argument("args", nargs="+", metavar="MODEL_DIR [PLAINTEXT_KEY] KEY_ID")
    _key_file(p, required=False)
    p.add_argument("--out", metavar="PARENT", help="write PARENT/KEY_ID/ (default: the current directory)")
    p.add_argument("--scryptn", type=int, default=keymod.SCRYPT_LOGN_DEFAULT, metavar="N",
                   help=f"scrypt cost as log2(N), {keymod.SCRYPT_LOGN_RANGE[0]}.."
                        f"{keymod.SCRYPT_LOGN_RANGE[1]} (default {keymod.SCRYPT_LOGN_DEFAULT})")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="sealing threads (default: cores)")
    p.add_argument("--no-follow-symlinks", dest="follow_symlinks", action="store_false",
                   help="refuse symlinks in MODEL_DIR instead of packing what they point to (the "
                        "default follows them, as a Hugging Face cache snapshot needs)")
    _quiet(p)

    p = sub.add_parser("info", help="show a package's key ID, files, sizes and digest (no key needed)")
    p.add_argument("package", metavar="DIR")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")

    p = sub.add_parser("verify", help="authenticate every file and chunk; list each problem")
    p.add_argument("package", metavar="DIR")
    _unlock_args(p)
    _quiet(p)

    p = sub.add_parser("unpack", help="write the plaintext model into a new directory")
    p.add_argument("package", metavar="DIR")
    p.add_argument("outdir", metavar="OUT", help="created if missing; must be empty")
    _unlock_args(p)
    _quiet(p)

    p = sub.add_parser("mount", help="serve the package read-only at MOUNTPOINT (FUSE)")
    p.add_argument("package", metavar="DIR")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    _unlock_args(p)
    options.add_arguments(p)

    p = sub.add_parser("unmount", help="unmount a sam (or any FUSE) mount")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    return parser


def _progress(args) -> bool | None:
    return False if args.quiet else None


def cmd_pack(args) -> int:
    from .pack import pack

    if args.key_file is not None:
        if len(args.args) != 2:
            raise UsageError("with --key-file give MODEL_DIR KEY_ID (and no key on the command line)")
        model_dir, key_id = args.args
        key = keymod.read_key_file(args.key_file)
    else:
        if len(args.args) != 3:
            raise UsageError("give MODEL_DIR PLAINTEXT_KEY KEY_ID (or MODEL_DIR KEY_ID --key-file FILE)")
        model_dir, key_text, key_id = args.args
        key = bytearray(os.fsencode(key_text))
        print(ARGV_KEY_WARNING, file=sys.stderr)
    lo, hi = keymod.SCRYPT_LOGN_RANGE
    if not lo <= args.scryptn <= hi:
        raise UsageError(f"--scryptn takes log2(N) between {lo} and {hi} "
                         f"(default {keymod.SCRYPT_LOGN_DEFAULT})")
    if args.threads is not None and not 1 <= args.threads <= 64:
        raise UsageError("--threads must be between 1 and 64")
    try:
        result = pack(model_dir, bytes(key), key_id, args.out, args.scryptn, args.threads, _progress(args),
                      follow_symlinks=args.follow_symlinks)
    finally:
        key[:] = bytes(len(key))
    if not args.quiet:
        rate = result.plain_bytes / max(result.seconds, 1e-9) / 1e6
        print(f"packed {result.files} files ({result.plain_bytes / (1 << 20):.1f} MiB) into "
              f"{display(os.fsencode(result.out_dir))} in {result.seconds:.1f} s ({rate:.0f} MB/s)")
        print(f"digest: {result.digest}")
    else:
        print(result.digest)
    return exitcodes.OK


def cmd_info(args) -> int:
    pkg = Package.open(args.package)
    m = pkg.manifest
    if os.path.basename(os.path.normpath(args.package)) != m.key_id:
        print(f"sam: warning: the directory is named {os.path.basename(os.path.normpath(args.package))!r}, "
              f"the package's key ID is {m.key_id!r}", file=sys.stderr)
    if args.json:
        obj = {"format": "sam-open", "version": 1, "digest": pkg.digest, "key_id": m.key_id,
               "created": m.created, "packer": m.packer, "chunk_size": m.chunk_size,
               "kdf": {"name": "scrypt", "log_n": m.kdf.log_n, "r": m.kdf.r, "p": m.kdf.p},
               "total_size": m.total_size(),
               "files": [{"path": f.path, "size": f.size, "mode": f"{f.mode:04o}"} for f in m.files]}
        print(json.dumps(obj, indent=2, ensure_ascii=False))
        return exitcodes.OK
    rows = [("Format", "sam-open version 1 (read by these tools, not the platform's Sam)"),
            ("KeyID", m.key_id), ("Digest", pkg.digest), ("Created", m.created), ("Packer", m.packer),
            ("KDF", f"scrypt N=2^{m.kdf.log_n} r={m.kdf.r} p={m.kdf.p}"),
            ("Cipher", f"AES-256-GCM, {m.chunk_size // 1024} KiB chunks"),
            ("Files", f"{len(m.files)} ({m.total_size()} bytes)")]
    for key, value in rows:
        print(f"{key + ':':<9}{value}")
    width = max((len(str(f.size)) for f in m.files), default=1)
    for f in m.files:
        print(f"  {f.mode:04o} {f.size:>{width}} {display(f.path.encode())}")
    return exitcodes.OK


def _unlock(args, block_path: str = "auto"):
    """Open the package, check the pinned digest (before parsing), then authenticate it with the key."""
    # an empty --expect-digest (an unset shell variable) is refused, never taken as "no pin"
    expected = check_digest_syntax(args.expect_digest) if args.expect_digest is not None else None
    pkg = Package.open(args.package, expect_digest=expected)
    key = keymod.read_key_file(args.key_file)
    try:
        return pkg.unlock(bytes(key), block_path)
    finally:
        key[:] = bytes(len(key))


def cmd_verify(args) -> int:
    from cryptfs.core.progress import bar

    pkg = _unlock(args)
    with bar(pkg.manifest.total_size(), "verifying", _progress(args)) as pbar:
        problems = pkg.verify(lambda m: print(f"verify: {m}", flush=True), pbar)
    summary = f"checked {len(pkg.manifest.files)} files ({pkg.manifest.total_size()} bytes): "
    if problems:
        print(summary + f"{len(problems)} problems found", file=sys.stderr)
        if all(isinstance(p, IoProblem) for p in problems):
            return exitcodes.ERROR  # nothing failed to authenticate; some files could not be read
        return exitcodes.INTEGRITY
    if not args.quiet:
        print(summary + f"no problems found; digest {pkg.package.digest}")
    return exitcodes.OK


def cmd_unpack(args) -> int:
    from .unpack import unpack

    pkg = _unlock(args)
    total = unpack(pkg, args.outdir, _progress(args))
    if not args.quiet:
        print(f"unpacked {len(pkg.manifest.files)} files ({total / (1 << 20):.1f} MiB) into "
              f"{display(os.fsencode(args.outdir))}")
    return exitcodes.OK


def cmd_mount(args) -> int:
    from cryptfs.core.mount import check_mountpoint, mount

    from .source import PackageSource

    opts = options.MountOptions.from_args(args, args.package, subtype="sam")
    check_mountpoint(opts)  # before reading the key
    protect_process()  # the daemon holds the key for as long as it runs
    pkg = _unlock(args, opts.block_path)
    pkg.check_files()  # every file present, with its size and ID, before the mount appears
    return mount(PackageSource(pkg), opts)


def cmd_unmount(args) -> int:
    from cryptfs.core.mount import unmount

    unmount(args.mountpoint)
    return exitcodes.OK


COMMANDS = {"pack": cmd_pack, "info": cmd_info, "verify": cmd_verify, "unpack": cmd_unpack,
            "mount": cmd_mount, "unmount": cmd_unmount}


def main(argv: list[str] | None = None) -> int:
    return run_main("sam", build_parser(), COMMANDS, argv, "; nothing partial was left behind")


if __name__ == "__main__":
    sys.exit(main())
