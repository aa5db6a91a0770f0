"""``sam unpack``: write the authenticated plaintext tree of a package into a new directory.

Nothing unauthenticated is ever left behind: a file whose chunk fails is removed with
everything else written by this run, and the command exits with the integrity code.
"""

from __future__ import annotations

import os

from cryptfs.core.files import is_inside, prepare_empty_dir, remove_created
from cryptfs.core.progress import bar

from .errors import OutputError
from .package import PlainFile, UnlockedPackage

BUF = 4 << 20


def unpack(pkg: UnlockedPackage, out_dir: str, progress: bool | None = None) -> int:
    """Return the plaintext bytes written; on any failure remove what this run wrote."""
    if is_inside(out_dir, pkg.root):
        raise OutputError(f"{out_dir} is inside the package: the plaintext would sit beside the "
                          "ciphertext (and be uploaded with it); choose another directory")
    created = prepare_empty_dir(out_dir, OutputError, "output directory")
    total = 0
    try:
        pkg.check_files()  # swaps, truncation and missing files before any byte is written
        buf = bytearray(BUF)
        with bar(pkg.manifest.total_size(), "unpacking", progress) as pbar:
            for entry in pkg.manifest.files:
                dst = os.path.join(out_dir, *entry.path.split("/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with PlainFile(pkg, entry) as src, open(dst, "xb") as f:
                    for off in range(0, entry.size, BUF):
                        n = src.read_into(off, memoryview(buf))
                        f.write(memoryview(buf)[:n])
                        pbar.update(n)
                        total += n
                os.chmod(dst, entry.mode)
    except BaseException:
        remove_created(out_dir, created)
        raise
    return total
