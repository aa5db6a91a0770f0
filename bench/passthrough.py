"""No-crypto passthrough mount: the cryptfs FUSE stack over a plaintext directory.

``bench/run.py`` uses it as the ceiling for a decrypting mount on this machine: the same
mfusepy/libfuse3 operations class, mount options, keep_cache, attribute timeouts and bdi
readahead as ``python -m cryptfs mount`` (it goes through ``cryptfs.mount.mount``); only the
source differs: a read is one ``preadv`` of the plaintext file straight into libfuse's buffer.

    python bench/passthrough.py PLAINDIR MOUNTPOINT [--readahead-kb KB] [--log FILE]

It daemonizes and returns once the mount is ready, like ``cryptfs mount``; unmount it with
``fusermount3 -u MOUNTPOINT``.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import SimpleNamespace

from cryptfs.mount import READAHEAD_KB_DEFAULT, MountConfig, mount
from cryptfs.tree import Entry


class PlainOpenFile:
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

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PlainSource:
    """A MountSource (see cryptfs.fuse_ops) that serves a plaintext directory unchanged."""

    content = SimpleNamespace(block_path="none (passthrough)")  # logged by cryptfs.mount.serve

    def __init__(self, root: str):
        self.root = os.fsencode(os.path.abspath(root))

    def _path(self, rel: bytes) -> bytes:
        return os.path.join(self.root, rel) if rel else self.root

    def lstat(self, rel: bytes) -> os.stat_result:
        return os.lstat(self._path(rel))

    def listdir(self, rel: bytes) -> list[Entry]:
        base = self._path(rel)
        return [Entry(name, os.path.join(base, name)) for name in sorted(os.listdir(base))]

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
    cfg = MountConfig(cipherdir=args.plaindir, mountpoint=args.mountpoint,
                      readahead_kb=args.readahead_kb, log_file=args.log)
    return mount(PlainSource(args.plaindir), cfg)


if __name__ == "__main__":
    sys.exit(main())
