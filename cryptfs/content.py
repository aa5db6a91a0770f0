"""gocryptfs file content: the 18-byte header and the layout of its 4096-byte blocks.

Reading is byte-exact with gocryptfs v2.4 (its internal/contentenc): files of 1..18 bytes read as
empty, only a *full* all-zero cipher block is a hole, a partial tail or any block that fails
to authenticate raises BlockError. The block crypto itself (C and Python paths) is the shared
chunk layer (:mod:`cryptfs.core.chunks`); this module says how gocryptfs lays it out.
"""

from __future__ import annotations

import os

from .core.aead import Aead
from .core.chunks import ChunkCodec, ChunkLayout
from .errors import BlockError

HEADER_LEN = 18
VERSION = 2
FILE_ID_LEN = 16
PLAIN_BS = 4096


def layout(aead: Aead, holes: bool = True) -> ChunkLayout:
    """gocryptfs blocks: AAD = be64 block number | file ID.

    gocryptfs serves a full all-zero cipher block as a hole (4 KiB of zeros); it carries no
    tag, so anyone who can write the storage can zero a block unnoticed. Model files are not
    sparse: with ``holes=False`` such a block is a tampered block (the mount answers EIO).
    """
    return ChunkLayout(header_len=HEADER_LEN, plain_bs=PLAIN_BS, nonce_len=aead.nonce_len,
                       overhead=aead.overhead, zero_is_hole=holes, last_flag=False)


def block_aad(block_no: int, file_id: bytes) -> bytes:
    return block_no.to_bytes(8, "big") + file_id


def parse_header(header: bytes) -> bytes:
    """Return the file ID; raise BlockError(None, …) for an invalid header."""
    if len(header) != HEADER_LEN:
        raise BlockError(None, "header is truncated")
    if header == bytes(HEADER_LEN):
        raise BlockError(None, "header is all zeros")
    version = int.from_bytes(header[:2], "big")
    if version != VERSION:
        raise BlockError(None, f"header version {version}, expected {VERSION}")
    file_id = header[2:]
    if file_id == bytes(FILE_ID_LEN):
        raise BlockError(None, "file ID is all zeros")
    return file_id


def new_header() -> tuple[bytes, bytes]:
    file_id = os.urandom(FILE_ID_LEN)
    return VERSION.to_bytes(2, "big") + file_id, file_id


class ContentCodec:
    """gocryptfs' size rules and header over the chunk layer, for one filesystem's content cipher."""

    def __init__(self, aead: Aead, block_path: str | None = "auto", holes: bool = True):
        self.aead = aead
        self.overhead = aead.overhead
        self.cipher_bs = PLAIN_BS + aead.overhead
        self.holes = holes
        self.chunks = ChunkCodec(layout(aead, holes), aead, block_path=block_path, error=BlockError)

    @property
    def block_path(self) -> str:
        """Which implementation decrypts bulk reads: "c" or "python"."""
        return self.chunks.block_path

    # sizes ------------------------------------------------------------------
    def cipher_size(self, plain_size: int) -> int:
        if plain_size == 0:
            return 0
        nblocks = -(-plain_size // PLAIN_BS)
        return HEADER_LEN + plain_size + self.overhead * nblocks

    def plain_size(self, cipher_size: int) -> int:
        """st_size as gocryptfs reports it, including its rule for a bogus short tail."""
        if cipher_size <= HEADER_LEN:
            return 0
        body = cipher_size - HEADER_LEN
        tail = body % self.cipher_bs
        if 0 < tail <= self.overhead:
            body += self.overhead + 1 - tail
        nblocks = -(-body // self.cipher_bs)
        return max(0, body - self.overhead * nblocks)

    def cipher_off(self, block_no: int) -> int:
        return HEADER_LEN + block_no * self.cipher_bs

    # blocks -----------------------------------------------------------------
    def decrypt_block(self, chunk, block_no: int, file_id: bytes) -> bytes:
        out = bytearray(PLAIN_BS)
        n = self.chunks.open_chunk_into(chunk, block_no, file_id, False, memoryview(out))
        return bytes(out[:n])

    def encrypt_block(self, plain, block_no: int, file_id: bytes) -> bytes:
        return self.chunks.seal_chunk(plain, block_no, file_id, False)

    # files ------------------------------------------------------------------
    def read_file_id(self, fd: int) -> bytes | None:
        """The file ID, or None for a file that reads as empty (0..18 bytes on disk)."""
        header = os.pread(fd, HEADER_LEN + 1, 0)
        if len(header) <= HEADER_LEN:
            return None
        return parse_header(header[:HEADER_LEN])

    def read_into(self, fd: int, file_id: bytes, cipher_size: int, plain_off: int,
                  out: memoryview) -> int:
        """Fill ``out`` with plaintext from ``plain_off``; short only at EOF. Raises BlockError."""
        return self.chunks.read_into(fd, file_id, self.plain_size(cipher_size), plain_off, out)

    def read_into_python(self, fd: int, file_id: bytes, plain_size: int, plain_off: int,
                         out: memoryview) -> int:
        """The pure-Python reference path (used where the C path is not built, and in tests)."""
        return self.chunks.read_into_python(fd, file_id, plain_size, plain_off, out)

    def read(self, fd: int, plain_off: int, size: int, cipher_size: int | None = None) -> bytes:
        if cipher_size is None:
            cipher_size = os.fstat(fd).st_size
        file_id = self.read_file_id(fd)
        if file_id is None:
            return b""
        out = bytearray(size)
        n = self.read_into(fd, file_id, cipher_size, plain_off, memoryview(out))
        del out[n:]
        return bytes(out)
