"""No-crypto passthrough mount: the cryptfs FUSE stack over a plaintext directory.

``bench/run.py`` uses it as the ceiling for a decrypting mount on this machine: the same
mfusepy/libfuse3 operations class, mount options, keep_cache, attribute timeouts and bdi
readahead as ``python -m cryptfs mount`` (it goes through ``cryptfs.core.mount.mount``); only the
source differs: a read is one ``preadv`` of the plaintext file straight into libfuse's buffer.

    python bench/passthrough.py PLAINDIR MOUNTPOINT [--readahead-kb KB] [--log FILE]

It daemonizes and returns once the mount is ready, like ``cryptfs mount``; unmount it with
``fusermount3 -u MOUNTPOINT``.
"""

from __future__ import annotations

import argparse
import os
import sys

from cryptfs.core.mount import mount
from cryptfs.core.options import READAHEAD_KB_DEFAULT, MountOptions
from cryptfs.core.source import DirEntry, MountSource, OpenFile


class PlainOpenFile(OpenFile):
    def __init__(self, path: bytes):
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.plain_size = os.fstat(self.fd).st_size

    def read_into(self, plain_off: int, out: memoryview) -> int:
        done = 0
        while done < len(out):
            n = os.preadv(self.fd, [out[done:]], plain_off + done)
            if n <= 0:
                break
            done += n
        return done


class PlainSource(MountSource):
    """A MountSource (cryptfs.core.source) that serves a plaintext directory unchanged."""

    def __init__(self, root: str):
        self.root = os.fsencode(os.path.abspath(root))

    def _path(self, rel: bytes) -> bytes:
        return os.path.join(self.root, rel) if rel else self.root

    @property
    def block_path(self) -> str:
        return "none (passthrough)"  # logged by cryptfs.core.mount.serve

    def lstat(self, rel: bytes) -> os.stat_result:
        return os.lstat(self._path(rel))

    def readdir(self, rel: bytes) -> list[DirEntry]:
        base = self._path(rel)
        out = []
        for name in sorted(os.listdir(base)):
            try:
                st = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            out.append(DirEntry(name, st.st_mode, st.st_ino))
        return out

    def readlink(self, rel: bytes) -> bytes:
        return os.readlink(self._path(rel))

    def open(self, rel: bytes) -> PlainOpenFile:
        return PlainOpenFile(self._path(rel))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("plaindir")
    p.add_argument("mountpoint")
    p.add_argument("--readahead-kb", type=int, default=READAHEAD_KB_DEFAULT)
    p.add_argument("--log", metavar="FILE", help="daemon log file (default: syslog)")
    args = p.parse_args(argv)
    cfg = MountOptions(source_dir=args.plaindir, mountpoint=args.mountpoint,
                       readahead_kb=args.readahead_kb, log_file=args.log)
    return mount(PlainSource(args.plaindir), cfg)


if __name__ == "__main__":
    sys.exit(main())
