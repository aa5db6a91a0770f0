"""File content: a 24-byte header, then AES-256-GCM chunks bound to package, file and position.

On disk a chunk is ``nonce (12) | ciphertext | tag (16)``; its associated data is
``package_id (16) | be64 chunk_no | file_id (16) | last (1 byte: 1 on the file's last chunk)``.
So a chunk moved to another position, file or package fails to authenticate, and a file cut
at a chunk edge is caught (its new last chunk was sealed with last = 0). There are no holes:
an all-zero chunk is an error. The C block path of cryptfs does the bulk work, GIL released;
the pure-Python path stays for machines without it and for differential tests.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cryptfs.content import BLOCK_PATH_ENV, load_block_path

from .errors import ChunkError
from .manifest import HEADER_LEN, NONCE_LEN, TAG_LEN

MAGIC = b"samopen1"
OVERHEAD = NONCE_LEN + TAG_LEN


def chunk_aad(package_id: bytes, chunk_no: int, file_id: bytes, last: bool) -> bytes:
    return package_id + chunk_no.to_bytes(8, "big") + file_id + (b"\x01" if last else b"\x00")


def header(file_id: bytes) -> bytes:
    return MAGIC + file_id


def _c_codec(key: bytes, chunk_size: int, choice: str):
    blocks = load_block_path(choice)
    if blocks is None:
        return None
    return blocks.Decryptor(key, header_len=HEADER_LEN, plain_bs=chunk_size, nonce_len=NONCE_LEN,
                            zero_is_hole=False, last_flag=True)


class ChunkCodec:
    """Chunk arithmetic and chunk crypto for one package (one content key, one package ID)."""

    def __init__(self, key: bytes, package_id: bytes, chunk_size: int, block_path: str | None = None):
        self.package_id = package_id
        self.chunk_size = chunk_size
        self.cipher_cs = chunk_size + OVERHEAD
        self._gcm = AESGCM(key)
        self._c = _c_codec(key, chunk_size, block_path or os.environ.get(BLOCK_PATH_ENV, "auto"))
        if self._c is not None:
            from cryptfs._blocks import BlockError as CBlockError

            self._c_error = CBlockError

    @property
    def block_path(self) -> str:
        """Which implementation does bulk work: "c" or "python" (the mount logs it)."""
        return "c" if self._c is not None else "python"

    # sizes ------------------------------------------------------------------
    def chunks(self, plain_size: int) -> int:
        return -(-plain_size // self.chunk_size)

    def cipher_size(self, plain_size: int) -> int:
        return HEADER_LEN + plain_size + OVERHEAD * self.chunks(plain_size)

    def cipher_off(self, chunk_no: int) -> int:
        return HEADER_LEN + chunk_no * self.cipher_cs

    # sealing ----------------------------------------------------------------
    def seal_into(self, plain: memoryview, first_chunk: int, plain_size: int, file_id: bytes,
                  out: bytearray) -> int:
        """Seal whole chunks of ``plain`` (from ``first_chunk``) into ``out``; return its length."""
        if self._c is not None:
            return self._c.seal_into(plain, out, first_chunk, plain_size, file_id, self.package_id)
        total = self.chunks(plain_size)
        pos = at = 0
        chunk_no = first_chunk
        while pos < len(plain):
            piece = plain[pos : pos + self.chunk_size]
            nonce = _nonce()
            aad = chunk_aad(self.package_id, chunk_no, file_id, chunk_no == total - 1)
            sealed = nonce + self._gcm.encrypt(nonce, bytes(piece), aad)
            out[at : at + len(sealed)] = sealed
            pos += len(piece)
            at += len(sealed)
            chunk_no += 1
        return at

    # reading ----------------------------------------------------------------
    def open_chunk(self, chunk, chunk_no: int, plain_size: int, file_id: bytes) -> bytes:
        """Authenticate and decrypt one on-disk chunk; raise ChunkError."""
        if len(chunk) == self.cipher_cs and not any(chunk):
            raise ChunkError(chunk_no, "all-zero chunk (holes are not allowed here)")
        if len(chunk) <= OVERHEAD:
            raise ChunkError(chunk_no, f"chunk too short ({len(chunk)} bytes)")
        nonce = bytes(chunk[:NONCE_LEN])
        if not any(nonce):  # never written by the packer; refused as the C path refuses it
            raise ChunkError(chunk_no, "all-zero nonce")
        aad = chunk_aad(self.package_id, chunk_no, file_id, chunk_no == self.chunks(plain_size) - 1)
        try:
            return self._gcm.decrypt(nonce, bytes(chunk[NONCE_LEN:]), aad)
        except InvalidTag:
            raise ChunkError(chunk_no, "authentication failed") from None

    def read_into(self, fd: int, file_id: bytes, plain_size: int, plain_off: int, out: memoryview) -> int:
        """Fill ``out`` from ``plain_off``; short only at the manifest's EOF. Raises ChunkError."""
        want = max(0, min(len(out), plain_size - plain_off))
        if self._c is not None:
            try:
                got = self._c.read_into(fd, out, plain_off, plain_size, file_id, self.package_id)
            except self._c_error as e:
                raise ChunkError(e.args[0], e.args[1]) from None
        else:
            got = self.read_into_python(fd, file_id, plain_size, plain_off, out)
        if got < want:  # the file is shorter on disk than the manifest says
            raise ChunkError((plain_off + got) // self.chunk_size, "missing (the file was truncated)")
        return got

    def read_into_python(self, fd: int, file_id: bytes, plain_size: int, plain_off: int,
                         out: memoryview) -> int:
        """The pure-Python reference path: the same answers as the C path, slower."""
        if plain_off >= plain_size or not len(out):
            return 0
        end = min(plain_size, plain_off + len(out))
        first, last = plain_off // self.chunk_size, (end - 1) // self.chunk_size
        cipher = os.pread(fd, (last - first + 1) * self.cipher_cs, self.cipher_off(first))
        done = 0
        skip = plain_off - first * self.chunk_size
        for i, chunk_no in enumerate(range(first, last + 1)):
            chunk = memoryview(cipher)[i * self.cipher_cs : (i + 1) * self.cipher_cs]
            if not len(chunk):
                break
            plain = self.open_chunk(chunk, chunk_no, plain_size, file_id)
            piece = plain[skip:][: end - plain_off - done]
            out[done : done + len(piece)] = piece
            done += len(piece)
            skip = 0
            if len(chunk) < self.cipher_cs:
                break
        return done


def _nonce() -> bytes:
    while True:
        nonce = os.urandom(NONCE_LEN)
        if any(nonce):
            return nonce
