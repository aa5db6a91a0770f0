"""File content: the 18-byte header and the sequence of authenticated 4096-byte blocks.

Reading is byte-exact with gocryptfs v2.4 (format spec §4.3): files of 1..18 bytes read as
empty, only a *full* all-zero cipher block is a hole, a partial tail or any block that fails
to authenticate raises BlockError. Nothing here ever returns zeros for a bad block.

``ContentCodec.read_into`` is the one entry point for bulk reads (decrypt, fsck, the mount):
a faster backend (the C block path) can replace ``decrypt_span_into`` under the same API.
"""

from __future__ import annotations

import os

from .cryptocore import Aead, AuthError, GcmAead
from .errors import BlockError, UsageError

HEADER_LEN = 18
VERSION = 2
FILE_ID_LEN = 16
PLAIN_BS = 4096


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


BLOCK_PATH_ENV = "CRYPTFS_BLOCK_PATH"  # auto (default) | c | python


def c_block_path_available() -> bool:
    try:
        from . import _blocks  # noqa: F401
    except ImportError:
        return False
    return True


def load_block_path(choice: str):
    """The C block path module for a CRYPTFS_BLOCK_PATH choice, or None for the Python path."""
    if choice not in ("auto", "c", "python"):
        raise UsageError(f"{BLOCK_PATH_ENV}={choice!r}: expected auto, c or python")
    if choice == "python":
        return None
    try:
        from . import _blocks
    except ImportError:
        if choice == "c":
            raise UsageError("the C block path (cryptfs._blocks) is not built: reinstall with a C "
                             "compiler and OpenSSL headers (apt-get install gcc libssl-dev)") from None
        return None
    return _blocks


def _c_decryptor(aead: Aead, choice: str):
    """The C block path for AES-GCM content, or None where it is not built or not wanted."""
    if not isinstance(aead, GcmAead):
        if choice == "c":
            raise UsageError(f"the C block path supports AES-GCM only, not {aead.name}")
        load_block_path(choice)  # still reject a bad choice
        return None
    blocks = load_block_path(choice)
    if blocks is None:
        return None
    return blocks.Decryptor(aead.key, header_len=HEADER_LEN, plain_bs=PLAIN_BS,
                            nonce_len=aead.nonce_len, zero_is_hole=True)


def _c_block_error() -> type[Exception]:
    from ._blocks import BlockError as CBlockError

    return CBlockError


class ContentCodec:
    """Block arithmetic and block crypto for one filesystem's content cipher."""

    def __init__(self, aead: Aead, block_path: str | None = None):
        self.aead = aead
        self.overhead = aead.overhead
        self.cipher_bs = PLAIN_BS + aead.overhead
        self._zero_block = bytes(self.cipher_bs)
        self._c = _c_decryptor(aead, block_path or os.environ.get(BLOCK_PATH_ENV, "auto"))
        self._c_error = _c_block_error() if self._c is not None else None

    @property
    def block_path(self) -> str:
        """Which implementation decrypts bulk reads: "c" or "python"."""
        return "c" if self._c is not None else "python"

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
    def decrypt_block_into(self, chunk, block_no: int, file_id: bytes, out: memoryview) -> int:
        """Decrypt one on-disk chunk into ``out``; return the plaintext length."""
        n = len(chunk)
        if n == self.cipher_bs and chunk == self._zero_block:
            out[:PLAIN_BS] = self._zero_block[:PLAIN_BS]
            return PLAIN_BS
        if n <= self.overhead:
            raise BlockError(block_no, f"block too short ({n} bytes)")
        nonce_len = self.aead.nonce_len
        if chunk[:nonce_len] == self._zero_block[:nonce_len]:
            raise BlockError(block_no, "all-zero nonce")
        try:
            return self.aead.open_into(chunk, block_aad(block_no, file_id), out)
        except AuthError:
            raise BlockError(block_no, "authentication failed") from None

    def decrypt_block(self, chunk, block_no: int, file_id: bytes) -> bytes:
        out = bytearray(PLAIN_BS)
        n = self.decrypt_block_into(chunk, block_no, file_id, memoryview(out))
        return bytes(out[:n])

    def encrypt_block(self, plain: bytes, block_no: int, file_id: bytes) -> bytes:
        return self.aead.seal(os.urandom(self.aead.nonce_len), plain, block_aad(block_no, file_id))

    def decrypt_span_into(self, cipher: memoryview, first_block: int, file_id: bytes,
                          out: memoryview) -> int:
        """Decrypt consecutive chunks starting at ``first_block``; return plaintext bytes written."""
        pos = done = 0
        block_no = first_block
        while pos < len(cipher):
            chunk = cipher[pos : pos + self.cipher_bs]
            done += self.decrypt_block_into(chunk, block_no, file_id, out[done:])
            pos += self.cipher_bs
            block_no += 1
        return done

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
        plain_size = self.plain_size(cipher_size)
        if self._c is not None:
            try:
                return self._c.read_into(fd, out, plain_off, plain_size, file_id)
            except self._c_error as e:
                raise BlockError(e.args[0], e.args[1]) from None
        return self.read_into_python(fd, file_id, plain_size, plain_off, out)

    def read_into_python(self, fd: int, file_id: bytes, plain_size: int, plain_off: int,
                         out: memoryview) -> int:
        """The pure-Python reference path (used where the C path is not built, and in tests)."""
        if plain_off >= plain_size or not len(out):
            return 0
        plain_end = min(plain_size, plain_off + len(out))
        first = plain_off // PLAIN_BS
        last = (plain_end - 1) // PLAIN_BS
        cipher = os.pread(fd, (last - first + 1) * self.cipher_bs, self.cipher_off(first))
        skip = plain_off - first * PLAIN_BS
        want = plain_end - plain_off
        if skip == 0 and len(out) >= (last - first + 1) * PLAIN_BS:  # whole chunks fit (see _blocks.c)
            got = self.decrypt_span_into(memoryview(cipher), first, file_id, out)
            return min(got, want)
        tmp = bytearray((last - first + 1) * PLAIN_BS)
        got = self.decrypt_span_into(memoryview(cipher), first, file_id, memoryview(tmp))
        n = max(0, min(want, got - skip))
        out[:n] = tmp[skip : skip + n]
        return n

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
