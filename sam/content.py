"""Sam file content: a 24-byte header, then AES-256-GCM chunks bound to package, file and position.

On disk a chunk is ``nonce (12) | ciphertext | tag (16)``; its associated data is
``package_id (16) | be64 chunk_no | file_id (16) | last (1 byte: 1 on the file's last chunk)``.
So a chunk moved to another position, file or package fails to authenticate, and a file cut
at a chunk edge is caught (its new last chunk was sealed with last = 0). There are no holes:
an all-zero chunk is an error. The crypto itself (C and Python paths) is the shared chunk
layer (:mod:`cryptfs.core.chunks`); this module says how a Sam package lays it out.
"""

from __future__ import annotations

from cryptfs.core.aead import GcmAead
from cryptfs.core.chunks import ChunkCodec, ChunkLayout

from .errors import ChunkError
from .manifest import HEADER_LEN, NONCE_LEN, TAG_LEN

MAGIC = b"samopen1"
OVERHEAD = NONCE_LEN + TAG_LEN


def layout(chunk_size: int) -> ChunkLayout:
    return ChunkLayout(header_len=HEADER_LEN, plain_bs=chunk_size, nonce_len=NONCE_LEN, overhead=OVERHEAD,
                       zero_is_hole=False, last_flag=True)


def header(file_id: bytes) -> bytes:
    return MAGIC + file_id


class PackageCodec:
    """Chunk arithmetic and chunk crypto for one package (one content key, one package ID)."""

    def __init__(self, key: bytes, package_id: bytes, chunk_size: int, block_path: str = "auto"):
        self.package_id = package_id
        self.chunk_size = chunk_size
        self.cipher_cs = chunk_size + OVERHEAD
        self.layer = ChunkCodec(layout(chunk_size), GcmAead(key, NONCE_LEN), aad_pre=package_id,
                                block_path=block_path, error=ChunkError)

    @property
    def block_path(self) -> str:
        """Which implementation does bulk work: "c" or "python" (the mount logs it)."""
        return self.layer.block_path

    # sizes ------------------------------------------------------------------
    def chunks(self, plain_size: int) -> int:
        return self.layer.layout.chunks(plain_size)

    def cipher_size(self, plain_size: int) -> int:
        return HEADER_LEN + plain_size + OVERHEAD * self.chunks(plain_size)

    def cipher_off(self, chunk_no: int) -> int:
        return self.layer.layout.cipher_off(chunk_no)

    # sealing and opening ------------------------------------------------------
    def seal_into(self, plain: memoryview, first_chunk: int, plain_size: int, file_id: bytes,
                  out: bytearray) -> int:
        """Seal whole chunks of ``plain`` (from ``first_chunk``) into ``out``; return its length."""
        return self.layer.seal_into(plain, first_chunk, plain_size, file_id, out)

    def open_chunk(self, chunk, chunk_no: int, plain_size: int, file_id: bytes) -> bytes:
        """Authenticate and decrypt one on-disk chunk; raise ChunkError."""
        out = bytearray(self.chunk_size)
        last = chunk_no == self.chunks(plain_size) - 1
        n = self.layer.open_chunk_into(chunk, chunk_no, file_id, last, memoryview(out))
        return bytes(out[:n])

    def read_into(self, fd: int, file_id: bytes, plain_size: int, plain_off: int, out: memoryview) -> int:
        """Fill ``out`` from ``plain_off``; short only at the manifest's EOF. Raises ChunkError."""
        want = max(0, min(len(out), plain_size - plain_off))
        got = self.layer.read_into(fd, file_id, plain_size, plain_off, out)
        if got < want:  # the file is shorter on disk than the manifest says
            raise ChunkError((plain_off + got) // self.chunk_size, "missing (the file was truncated)")
        return got

    def read_into_python(self, fd: int, file_id: bytes, plain_size: int, plain_off: int,
                         out: memoryview) -> int:
        """The pure-Python reference path: the same answers as the C path, slower."""
        return self.layer.read_into_python(fd, file_id, plain_size, plain_off, out)
