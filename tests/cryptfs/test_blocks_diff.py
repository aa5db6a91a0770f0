"""Differential tests: the C block path must agree with the pure-Python reference exactly.

Same file, same offsets and lengths around every block edge, holes, short tails, the
multi-threaded split of large reads, and tampered blocks (same error, same block number).
"""

from __future__ import annotations

import os

import pytest

from cryptfs import cryptocore
from cryptfs.content import HEADER_LEN, PLAIN_BS, ContentCodec, new_header
from cryptfs.core import chunks
from cryptfs.errors import BlockError

pytestmark = pytest.mark.skipif(not chunks.c_available(),
                                reason="C block path (cryptfs.core._blocks) not built")

KEY = bytes(range(32))
EDGES = sorted({0, 1, 17, 18, 19, 4095, 4096, 4097, 8191, 8192, 8193, 3 * 4096 - 1, 3 * 4096,
                5 * 4096 + 7, 64 * 4096, 64 * 4096 + 1, 100 * 4096 - 1})
LENGTHS = [1, 2, 4095, 4096, 4097, 8192, 65536, 256 * 1024, 256 * 1024 + 4096 + 1, 1 << 20]


def codecs():
    aead = cryptocore.content_aead(cryptocore.GCM, KEY, True)
    return ContentCodec(aead, "python"), ContentCodec(aead, "c")


def write_file(path, plain: bytes, holes=(), tail: bytes = b"") -> tuple[int, bytes]:
    """Encrypt ``plain``; blocks in ``holes`` become all-zero chunks; ``tail`` is appended raw."""
    py, _ = codecs()
    header, file_id = new_header()
    out = bytearray(header)
    for i in range(0, len(plain), PLAIN_BS):
        block_no = i // PLAIN_BS
        if block_no in holes:
            out += bytes(py.cipher_bs)
        else:
            out += py.encrypt_block(plain[i:i + PLAIN_BS], block_no, file_id)
    out += tail
    path.write_bytes(out)
    return len(out), file_id


def outcome(codec: ContentCodec, fd: int, file_id: bytes, cipher_size: int, off: int, ln: int):
    buf = bytearray(ln)
    try:
        n = codec.read_into(fd, file_id, cipher_size, off, memoryview(buf))
    except BlockError as e:
        return ("error", e.block_no)
    return ("ok", bytes(buf[:n]))


def compare_everywhere(path, cipher_size, file_id, expect=None):
    py, c = codecs()
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in EDGES:
            for ln in LENGTHS:
                a = outcome(py, fd, file_id, cipher_size, off, ln)
                b = outcome(c, fd, file_id, cipher_size, off, ln)
                assert a == b, f"off={off} len={ln}: python={a[0]} c={b[0]}"
                if expect is not None and a[0] == "ok":
                    assert a[1] == expect[off:off + ln]
    finally:
        os.close(fd)


def test_plain_file_with_partial_last_block(tmp_path):
    plain = os.urandom(100 * 4096 - 123)
    size, fid = write_file(tmp_path / "f", plain)
    compare_everywhere(tmp_path / "f", size, fid, plain)


def test_holes(tmp_path):
    plain = bytearray(os.urandom(80 * 4096))
    holes = {0, 3, 4, 40, 79}
    for h in holes:
        plain[h * 4096:(h + 1) * 4096] = bytes(4096)
    size, fid = write_file(tmp_path / "f", bytes(plain), holes)
    compare_everywhere(tmp_path / "f", size, fid, bytes(plain))


@pytest.mark.parametrize("tail", [b"\x01", b"\x07" * 20, bytes(32), bytes(100)])
def test_bad_tails(tmp_path, tail):
    plain = os.urandom(70 * 4096)
    size, fid = write_file(tmp_path / "f", plain, tail=tail)
    compare_everywhere(tmp_path / "f", size, fid)


@pytest.mark.parametrize("bad_block", [0, 1, 33, 69])
def test_tampered_block_same_error(tmp_path, bad_block):
    plain = os.urandom(70 * 4096)
    size, fid = write_file(tmp_path / "f", plain)
    with open(tmp_path / "f", "r+b") as f:
        pos = HEADER_LEN + bad_block * (PLAIN_BS + 32) + 16 + 5
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x80]))
    compare_everywhere(tmp_path / "f", size, fid)
    py, c = codecs()
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:  # a large read that the C path splits across threads names the same block
        assert outcome(c, fd, fid, size, 0, 70 * 4096) == ("error", bad_block)
        assert outcome(py, fd, fid, size, 0, 70 * 4096) == ("error", bad_block)
    finally:
        os.close(fd)


def test_split_reads_into_unaligned_buffers(tmp_path):
    plain = os.urandom(300 * 4096 + 5)
    size, fid = write_file(tmp_path / "f", plain)
    _, c = codecs()
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        for off in (0, 1, 4095, 123457):
            buf = bytearray(len(plain))
            n = c.read_into(fd, fid, size, off, memoryview(buf)[: len(plain) - off])
            assert bytes(buf[:n]) == plain[off:]
    finally:
        os.close(fd)
