"""The chunked-file layer: a header, then authenticated chunks, described by a layout.

Both formats store a file as ``header | chunk 0 | chunk 1 | ...``, each chunk
``nonce | ciphertext | tag`` sealed with associated data
``aad_pre | be64 chunk_no | file_id [| 1 byte: 1 on the file's last chunk]``:

=====================  ==========================  ===================================
                       gocryptfs (cryptfs.content)  Sam (sam.content)
=====================  ==========================  ===================================
header                 18 bytes (version, file ID)  24 bytes (magic, file ID)
chunk plaintext        4096                         64 KiB
nonce                  16 (12 legacy, 24 XChaCha)   12
aad_pre                (none)                       package ID
last-chunk flag        no                           yes
all-zero chunk         a hole: reads as zeros       an error
=====================  ==========================  ===================================

This module is the only importer of the C block path (``_blocks``, AES-256-GCM, GIL
released); :meth:`ChunkCodec.read_into_python` and :meth:`ChunkCodec.seal_chunk` are the
pure-Python reference it is tested against at every chunk edge. A chunk that does not
authenticate raises the codec's :class:`~cryptfs.core.errors.ChunkError`, from either path,
with the same chunk number: never zeros in its place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .aead import Aead, AuthError, GcmAead
from .errors import ChunkError, UsageError

BLOCK_PATHS = ("auto", "c", "python")


def _extension():
    try:
        from . import _blocks
    except ImportError:
        return None
    return _blocks


def c_available() -> bool:
    """Whether the C block path was built (gcc and OpenSSL headers at install time)."""
    return _extension() is not None


def openssl_version() -> str | None:
    ext = _extension()
    return None if ext is None else ext.OPENSSL_VERSION


def set_decrypt_threads(n: int) -> None:
    """Extra C threads that share one large request (0: the caller's thread only)."""
    ext = _extension()
    if ext is not None:
        ext.set_threads(n)


@dataclass(frozen=True)
class ChunkLayout:
    """Where a format puts its chunks and what their associated data binds."""

    header_len: int
    plain_bs: int  # plaintext bytes per chunk (the last one may be shorter)
    nonce_len: int
    overhead: int  # nonce + tag: cipher bytes a chunk adds
    zero_is_hole: bool  # a full all-zero chunk reads as zeros (gocryptfs) or fails (Sam)
    last_flag: bool  # the AAD ends with one byte: 1 on the file's last chunk

    @property
    def cipher_bs(self) -> int:
        return self.plain_bs + self.overhead

    def chunks(self, plain_size: int) -> int:
        return -(-plain_size // self.plain_bs)

    def cipher_off(self, chunk_no: int) -> int:
        return self.header_len + chunk_no * self.cipher_bs

    def aad(self, aad_pre: bytes, chunk_no: int, file_id: bytes, last: bool) -> bytes:
        flag = (b"\x01" if last else b"\x00") if self.last_flag else b""
        return aad_pre + chunk_no.to_bytes(8, "big") + file_id + flag


class ChunkCodec:
    """Chunk crypto for one key (and one ``aad_pre``): open, seal, read a file's span."""

    def __init__(self, layout: ChunkLayout, aead: Aead, *, aad_pre: bytes = b"",
                 block_path: str | None = "auto", error: type[ChunkError] = ChunkError):
        self.layout = layout
        self.aead = aead
        self.aad_pre = aad_pre
        self.error = error
        self._zero = bytes(layout.cipher_bs)
        self._c = self._c_codec(block_path)

    def _c_codec(self, choice: str | None):
        """The C path for AES-256-GCM, or None where it is not built, not wanted or not applicable."""
        choice = choice or "auto"
        if choice not in BLOCK_PATHS:
            raise UsageError(f"block path {choice!r}: expected auto, c or python")
        if choice == "python":
            return None
        aead = self.aead
        if not isinstance(aead, GcmAead):
            if choice == "c":
                raise UsageError(f"the C block path supports AES-GCM only, not {aead.name}")
            return None
        ext = _extension()
        if ext is None:
            if choice == "c":
                raise UsageError("the C block path (cryptfs.core._blocks) is not built: reinstall with a "
                                 "C compiler and OpenSSL headers (apt-get install gcc libssl-dev)")
            return None
        lay = self.layout
        return ext.Decryptor(aead.key, header_len=lay.header_len, plain_bs=lay.plain_bs,
                             nonce_len=lay.nonce_len, zero_is_hole=lay.zero_is_hole,
                             last_flag=lay.last_flag)

    @property
    def block_path(self) -> str:
        """Which implementation does bulk work: "c" or "python"."""
        return "c" if self._c is not None else "python"

    def _failed(self, chunk_no: int | None, reason: str) -> ChunkError:
        """The one translation of a failure (C or Python) into the format's error class."""
        return self.error(chunk_no, reason.replace("block", self.error.unit))

    # one chunk ----------------------------------------------------------------
    def open_chunk_into(self, chunk, chunk_no: int, file_id: bytes, last: bool, out: memoryview) -> int:
        """Authenticate and decrypt one on-disk chunk into ``out``; return the plaintext length."""
        lay = self.layout
        n = len(chunk)
        if n == lay.cipher_bs and chunk == self._zero:
            if not lay.zero_is_hole:
                raise self._failed(chunk_no, "all-zero block (holes are not allowed here)")
            out[: lay.plain_bs] = self._zero[: lay.plain_bs]
            return lay.plain_bs
        if n <= lay.overhead:
            raise self._failed(chunk_no, f"block too short ({n} bytes)")
        if chunk[: lay.nonce_len] == self._zero[: lay.nonce_len]:
            raise self._failed(chunk_no, "all-zero nonce")
        try:
            return self.aead.open_into(chunk, lay.aad(self.aad_pre, chunk_no, file_id, last), out)
        except AuthError:
            raise self._failed(chunk_no, "authentication failed") from None

    def seal_chunk(self, plain, chunk_no: int, file_id: bytes, last: bool) -> bytes:
        """One on-disk chunk with a fresh random nonce (never all zeros: readers refuse those)."""
        aad = self.layout.aad(self.aad_pre, chunk_no, file_id, last)
        return self.aead.seal(_nonce(self.layout.nonce_len), plain, aad)

    # spans ------------------------------------------------------------------
    def seal_into(self, plain: memoryview, first_chunk: int, plain_size: int, file_id: bytes,
                  out: bytearray) -> int:
        """Seal whole chunks of ``plain`` (from ``first_chunk``) into ``out``; return its length.

        Only the file's last chunk may be short; ``plain_size`` says which one that is.
        """
        if self._c is not None:
            return self._c.seal_into(plain, out, first_chunk, plain_size, file_id, self.aad_pre)
        bs, last = self.layout.plain_bs, self.layout.chunks(plain_size) - 1
        at = 0
        for i, pos in enumerate(range(0, len(plain), bs)):
            sealed = self.seal_chunk(plain[pos : pos + bs], first_chunk + i, file_id, first_chunk + i == last)
            out[at : at + len(sealed)] = sealed
            at += len(sealed)
        return at

    def read_into(self, fd: int, file_id: bytes, plain_size: int, plain_off: int, out: memoryview) -> int:
        """Fill ``out`` with plaintext from ``plain_off``; short only where the file ends.

        ``plain_size`` is the file's size as the format knows it (the last-chunk flag and the
        number of chunks to read follow from it). Raises the codec's ChunkError.
        """
        if self._c is None:
            return self.read_into_python(fd, file_id, plain_size, plain_off, out)
        try:
            return self._c.read_into(fd, out, plain_off, plain_size, file_id, self.aad_pre)
        except _extension().BlockError as e:
            raise self._failed(e.args[0], e.args[1]) from None

    def read_into_python(self, fd: int, file_id: bytes, plain_size: int, plain_off: int,
                         out: memoryview) -> int:
        """The pure-Python reference path: the same answers as the C path, slower."""
        if plain_off >= plain_size or not len(out):
            return 0
        lay = self.layout
        bs, cbs = lay.plain_bs, lay.cipher_bs
        end = min(plain_size, plain_off + len(out))
        first, last = plain_off // bs, (end - 1) // bs
        cipher = memoryview(os.pread(fd, (last - first + 1) * cbs, lay.cipher_off(first)))
        final = lay.chunks(plain_size) - 1
        tmp = memoryview(bytearray(bs))
        done, skip = 0, plain_off - first * bs
        for i in range(last - first + 1):
            chunk = cipher[i * cbs : (i + 1) * cbs]
            if not len(chunk):
                break
            want = end - plain_off - done
            direct = skip == 0 and len(out) - done >= bs  # the whole chunk fits: no copy
            target = out[done : done + bs] if direct else tmp
            got = self.open_chunk_into(chunk, first + i, file_id, first + i == final, target)
            n = max(0, min(want, got - skip))
            if not direct:
                out[done : done + n] = tmp[skip : skip + n]
            done += n
            skip = 0
            if len(chunk) < cbs:
                break
        return done


def _nonce(length: int) -> bytes:
    while True:
        nonce = os.urandom(length)
        if any(nonce):
            return nonce
