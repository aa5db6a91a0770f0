"""Reading and writing the kernel's attestation files (configfs-tsm, sysfs RTMRs).

These files take each write(2) as one request: a TDX report's inblob is exactly one 64-byte
write, an RTMR extend exactly one 48-byte write. So a write must go out whole in one call,
and a short write is an error, never something to retry in pieces.
"""

from __future__ import annotations

import errno
import os


def read_all(path: str) -> bytes:
    """Read to EOF in one open (an outblob can be far larger than one page)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_once(path: str, data: bytes) -> None:
    """One write(2) of all of ``data`` at offset 0; a short write is EIO."""
    fd = os.open(path, os.O_WRONLY)
    try:
        n = os.write(fd, data)
    finally:
        os.close(fd)
    if n != len(data):
        raise OSError(errno.EIO, f"short write to {path}: {n} of {len(data)} bytes")
