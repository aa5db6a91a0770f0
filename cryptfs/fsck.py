"""fsck: authenticate every name, dir IV, symlink and content block, and list each problem.

Warnings are what gocryptfs accepts but a model tree should not contain: an all-zero cipher
block (served as a hole, with no tag to say it was written that way) and a file whose few
bytes on disk hold no header (it reads as empty). They do not change the exit code.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from .content import HEADER_LEN, PLAIN_BS
from .core.files import link_stays_inside, tree_bytes
from .core.progress import bar
from .core.text import show
from .errors import BadNameError, BlockError
from .tree import CipherTree, PlainFile

CHUNK = 1 << 20


HOLE_REASON = "all-zero block"


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    plain_bytes: int = 0

    def add(self, message: str) -> None:
        self.problems.append(message)


class Checker:
    def __init__(self, tree: CipherTree, progress: bool | None = None, on_problem=None, on_warning=None):
        self.tree = tree
        self.report = FsckReport()
        self.progress = progress
        self._on_problem = on_problem
        self._on_warning = on_warning

    def _warning(self, message: str) -> None:
        self.report.warnings.append(message)
        if self._on_warning:
            self._on_warning(message)

    def _problem(self, message: str) -> None:
        self.report.add(message)
        if self._on_problem:
            self._on_problem(message)

    def run(self) -> FsckReport:
        total = tree_bytes(os.fsdecode(self.tree.root))
        with bar(total, "fsck", self.progress) as self._bar:
            self._dir(b"")
        return self.report

    def _dir(self, rel: bytes) -> None:
        try:
            entries, problems = self.tree.scan(rel)
        except (BadNameError, OSError) as e:
            self._problem(f"{show(rel)}: directory cannot be read: {e}")
            return
        self.report.dirs += 1
        for p in problems:
            self._problem(f"{show(rel)}: {p}")
        for e in entries:
            child = rel + b"/" + e.name if rel else e.name
            try:
                st = os.lstat(e.cipher_path)
            except OSError as err:
                self._problem(f"{show(child)}: {err.strerror}")
                continue
            if stat.S_ISDIR(st.st_mode):
                self._dir(child)
            elif stat.S_ISLNK(st.st_mode):
                self._symlink(child, e.cipher_path)
            elif stat.S_ISREG(st.st_mode):
                self._file(child, st.st_size)

    def _symlink(self, rel: bytes, cpath: bytes) -> None:
        self.report.symlinks += 1
        try:
            target = self.tree.readlink_cipher(cpath, rel)
        except BlockError as e:
            self._problem(str(e))
            return
        if not link_stays_inside(rel, target):
            self._problem(f"{show(rel)}: symlink to {show(target)[1:]} leaves the tree: the mount and "
                          "decrypt refuse it (re-encrypt with -L to store what it points to)")

    def _file(self, rel: bytes, cipher_size: int) -> None:
        self.report.files += 1
        if 0 < cipher_size <= HEADER_LEN:
            self._warning(f"{show(rel)}: only {cipher_size} bytes on disk, no header: reads as an empty "
                          "file (gocryptfs' rule; truncated?)")
            self._bar.update(cipher_size)
            return
        try:
            f = self.tree.open(rel)
        except BlockError as e:
            self._problem(str(e))
            self._bar.update(cipher_size)
            return
        with f:
            self._blocks(f)
        self._bar.update(cipher_size)

    def _blocks(self, f: PlainFile) -> None:
        """Read in 1 MiB steps; where a step fails, retry it block by block to name each bad one."""
        buf = memoryview(bytearray(CHUNK))
        off = 0
        while off < f.plain_size:
            try:
                n = f.read_into(off, buf)
            except BlockError:
                n = self._blocks_one_by_one(f, off, min(CHUNK, f.plain_size - off))
            if n == 0:
                break
            off += n
            self.report.plain_bytes += n

    def _blocks_one_by_one(self, f: PlainFile, off: int, length: int) -> int:
        block = memoryview(bytearray(PLAIN_BS))
        for pos in range(off, off + length, PLAIN_BS):
            try:
                f.read_into(pos, block)
            except BlockError as e:
                if e.reason.startswith(HOLE_REASON):
                    self._warning(f"{show(f.rel)}: block {e.block_no} is all zeros: gocryptfs serves it as a "
                                  "hole of zeros, 'cryptfs mount --no-holes' and agent run refuse it")
                else:
                    self._problem(str(e))
        return length


def fsck(tree: CipherTree, progress: bool | None = None, on_problem=None, on_warning=None) -> FsckReport:
    """Check every entry. Open ``tree`` with ``holes=False`` to see all-zero blocks as warnings."""
    return Checker(tree, progress, on_problem, on_warning).run()
