"""Filesystem helpers shared by every writer and reader: output directories, containment, small
metadata files that must never block."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass

from .errors import Failure


@dataclass
class TreeStats:
    """What an encrypt or decrypt run wrote."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    plain_bytes: int = 0
    skipped: int = 0  # special files not written
    hidden: int = 0  # undecryptable names skipped


def prepare_empty_dir(path: str, error: type[Failure], what: str) -> bool:
    """Make sure ``path`` is an empty directory; return True if we created it."""
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise error(f"{what} {path} exists and is not a directory")
        if os.listdir(path):
            raise error(f"{what} {path} is not empty: refusing to write into it "
                        "(give a new or empty directory)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise error(f"{what} {path} is not writable")
        return False
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise error(f"{what} {path}: parent directory {parent} does not exist")
    try:
        os.mkdir(path)
    except OSError as e:
        raise error(f"cannot create {what} {path}: {e.strerror}") from None
    return True


def remove_created(path: str, created: bool) -> None:
    """Undo a failed run: remove the directory we made, or empty the one we were given."""
    if created:
        shutil.rmtree(path, ignore_errors=True)
        return
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            _make_writable(full)
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass


def _make_writable(top: str) -> None:
    for root, dirs, _ in os.walk(top):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o700)
            except OSError:
                pass
    try:
        os.chmod(top, 0o700)
    except OSError:
        pass


def set_times_and_mode(path: str | bytes, st: os.stat_result, is_link: bool = False) -> None:
    if not is_link:
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=not is_link)


def is_inside(child: str | bytes, parent: str | bytes) -> bool:
    """Whether ``child`` is ``parent`` or below it, symlinks resolved (the one containment test)."""
    child, parent = os.path.realpath(os.fsdecode(child)), os.path.realpath(os.fsdecode(parent))
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def link_stays_inside(rel: bytes, target: bytes) -> bool:
    """Whether symlink ``rel`` (a path relative to a tree's root) points inside that tree.

    Relative links that stay below the root (Hugging Face cache snapshots point into
    ``../../blobs``) are fine; an absolute target, or one whose ``..`` climbs above the root,
    would make a served model read files of the machine instead of the owner's bytes.
    """
    if not target or target.startswith(b"/"):
        return False
    depth = rel.count(b"/")  # directories between the root and the link
    for comp in target.split(b"/"):
        if comp == b"..":
            depth -= 1
            if depth < 0:
                return False
        elif comp not in (b"", b"."):
            depth += 1
    return True


def tree_bytes(top: str) -> int:
    """Total size of the files below ``top`` (lstat: links not followed), for progress and size checks."""
    total = 0
    for root, _, files in os.walk(top):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def read_small_regular(path: str | bytes, limit: int, follow: bool = False) -> bytes:
    """Up to ``limit + 1`` bytes of a regular file; never blocks; a final symlink is refused
    (ELOOP) unless ``follow``.

    Metadata files (a config, a manifest, a dir IV) come from storage an attacker may control:
    a FIFO there would block an open() forever, a device would read without end. Raises
    OSError (ENOENT, ELOOP for a symlink, EINVAL "not a regular file") for the caller to word.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fsdecode(path))
        # allocate for what the file holds, not for ``limit`` (a 1 KB manifest under a 64 MiB
        # limit costs 1 KB); one byte more, and reading on, still catches a file that grew
        want = min(st.st_size, limit) + 1
        chunks = [os.read(fd, want)]
        left = limit + 1 - len(chunks[0])
        if len(chunks[0]) == want:
            while left > 0 and (more := os.read(fd, min(left, 1 << 20))):
                chunks.append(more)
                left -= len(more)
        return b"".join(chunks)
    finally:
        os.close(fd)


def close_passed_fd(path: str) -> None:
    """After reading a secret from ``/dev/fd/N``, close the inherited descriptor N too.

    Opening /dev/fd/N duplicates the descriptor; the original stays open in this process (a
    long-lived mount daemon) for as long as it runs unless closed here. Other paths: no-op.
    """
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if path.startswith(prefix) and path[len(prefix):].isdigit():
            try:
                os.close(int(path[len(prefix):]))
            except OSError:
                pass
            return
