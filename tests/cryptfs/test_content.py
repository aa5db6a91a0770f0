"""File content: size formulas, block reads at every edge, and gocryptfs' corruption rules (spec §4).

Synthetic ciphertext files are written here with ContentCodec + cryptocore.content_aead, then read
back through ContentCodec.read / read_into. Every content cipher (AES-GCM, AES-SIV, XChaCha) is
covered, and the C block path too where it is built (AES-GCM only).
"""

from __future__ import annotations

import os
import random

import pytest

from cryptfs import cryptocore, exitcodes
from cryptfs.content import HEADER_LEN, PLAIN_BS, ContentCodec, block_aad, new_header, parse_header
from cryptfs.core import chunks
from cryptfs.errors import BlockError, CryptfsError, IntegrityError
from tests.support import EXAMPLES

MASTER = bytes(range(32))
GCM, SIV, XCHACHA = cryptocore.GCM, cryptocore.SIV, cryptocore.XCHACHA

_C_BUILT = chunks.c_available()

CODEC_PARAMS = [
    pytest.param((GCM, "python"), id="gcm-python"),
    pytest.param((GCM, "c"), id="gcm-c",
                 marks=pytest.mark.skipif(not _C_BUILT, reason="C block path not built")),
    pytest.param((SIV, "python"), id="siv"),
    pytest.param((XCHACHA, "python"), id="xchacha"),
]


def make_codec(kind: str, block_path: str = "python", master: bytes = MASTER, hkdf: bool = True):
    codec = ContentCodec(cryptocore.content_aead(kind, master, hkdf), block_path=block_path)
    assert codec.block_path == block_path
    return codec


@pytest.fixture(params=CODEC_PARAMS)
def codec(request) -> ContentCodec:
    kind, path = request.param
    return make_codec(kind, path)


def encrypt_file(codec: ContentCodec, plain: bytes, file_id: bytes | None = None) -> bytes:
    """The on-disk bytes for ``plain``, as gocryptfs writes them (random nonces)."""
    if not plain:
        return b""
    if file_id is None:
        header, file_id = new_header()
    else:
        header = (2).to_bytes(2, "big") + file_id
    blocks = [codec.encrypt_block(plain[i : i + PLAIN_BS], i // PLAIN_BS, file_id)
              for i in range(0, len(plain), PLAIN_BS)]
    return header + b"".join(blocks)


def write(tmp_path, data: bytes, name: str = "f") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def read(codec: ContentCodec, path: str, off: int = 0, size: int = 1 << 24) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return codec.read(fd, off, size)
    finally:
        os.close(fd)


def read_expect_error(codec: ContentCodec, path: str, off: int = 0, size: int = 1 << 24) -> BlockError:
    with pytest.raises(BlockError) as ei:
        read(codec, path, off, size)
    assert ei.value.exit_code == exitcodes.INTEGRITY
    return ei.value


def rnd(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# --- size formulas ------------------------------------------------------------------------------
def go_cipher_size_to_plain_size(c: int, overhead: int) -> int:
    """Direct port of gocryptfs' contentenc.CipherSizeToPlainSize (internal/contentenc/offsets.go)."""
    cbs = PLAIN_BS + overhead
    if c <= HEADER_LEN:
        return 0
    last = (c - HEADER_LEN) % cbs
    if 0 < last <= overhead:
        c = c - last + overhead + 1
    block_count = (c - 1 - HEADER_LEN) // cbs + 1
    total_overhead = overhead * block_count + HEADER_LEN
    if total_overhead > c:
        return 0
    return c - total_overhead


def go_plain_size_to_cipher_size(p: int, overhead: int) -> int:
    """gocryptfs' PlainSizeToCipherSize = PlainOffToCipherOff(p - 1) + 1."""
    if p == 0:
        return 0
    off = p - 1
    return HEADER_LEN + (off // PLAIN_BS) * (PLAIN_BS + overhead) + off % PLAIN_BS + overhead + 1


@pytest.mark.parametrize(
    ("plain", "gcm", "xchacha"),
    [(0, 0, 0), (1, 51, 59), (10, 60, 68), (4095, 4145, 4153), (4096, 4146, 4154), (4097, 4179, 4195),
     (5000, 5082, 5098), (8192, 8274, 8290), (10000, 10114, 10138), (1_000_000, 1_007_858, 1_009_818)],
)
def test_size_examples(plain, gcm, xchacha):
    for kind, expected in ((GCM, gcm), (SIV, gcm), (XCHACHA, xchacha)):
        c = make_codec(kind)
        assert c.cipher_size(plain) == expected
        assert c.plain_size(expected) == plain


@pytest.mark.parametrize("kind", [GCM, SIV, XCHACHA])
def test_overheads(kind):
    c = make_codec(kind)
    expected = 40 if kind == XCHACHA else 32
    assert c.overhead == expected
    assert c.cipher_bs == PLAIN_BS + expected
    cbs = PLAIN_BS + expected
    assert [c.cipher_off(n) for n in range(3)] == [18, 18 + cbs, 18 + 2 * cbs]


@pytest.mark.parametrize("kind", [GCM, XCHACHA])
def test_tiny_cipher_sizes_are_empty(kind):
    c = make_codec(kind)
    for size in range(0, 19):
        assert c.plain_size(size) == 0


@pytest.mark.parametrize(
    ("cipher", "plain"),
    [(19, 1), (18 + 20, 1), (18 + 32, 1), (18 + 33, 1), (18 + 34, 2),
     (18 + 4128 + 1, 4097), (18 + 4128 + 20, 4097), (18 + 4128 + 32, 4097), (18 + 4128 + 33, 4097),
     (18 + 4128 + 34, 4098), (18 + 2 * 4128 + 5, 8193)],
)
def test_bogus_tail_counts_as_one_byte(cipher, plain):
    assert make_codec(GCM).plain_size(cipher) == plain
    assert make_codec(SIV).plain_size(cipher) == plain


def test_bogus_tail_xchacha():
    c = make_codec(XCHACHA)
    assert c.plain_size(18 + 4136 + 20) == 4097
    assert c.plain_size(18 + 4136 + 40) == 4097
    assert c.plain_size(18 + 4136 + 41) == 4097
    assert c.plain_size(18 + 4136 + 42) == 4098


@pytest.mark.parametrize("kind", [GCM, XCHACHA])
def test_sizes_brute_force(kind):
    c = make_codec(kind)
    o = c.overhead
    for p in range(0, 5 * PLAIN_BS + 300):
        cs = c.cipher_size(p)
        assert cs == go_plain_size_to_cipher_size(p, o), p
        assert c.plain_size(cs) == p, p
    prev = 0
    for cs in range(0, 18 + 6 * c.cipher_bs + 100):
        ps = c.plain_size(cs)
        assert ps == go_cipher_size_to_plain_size(cs, o), cs
        assert ps >= prev, cs  # monotonic
        prev = ps


# --- header -------------------------------------------------------------------------------------
def test_new_header():
    header, file_id = new_header()
    assert len(header) == 18 and header[:2] == b"\x00\x02" and header[2:] == file_id
    assert parse_header(header) == file_id
    assert new_header()[1] != file_id


@pytest.mark.parametrize(
    "header",
    [bytes(18), b"\x00\x03" + b"\x01" * 16, b"\x00\x01" + b"\x01" * 16, b"\x02\x00" + b"\x01" * 16,
     b"\x00\x02" + bytes(16), b"\x00\x02" + b"\x01" * 15],
)
def test_parse_header_rejects(header):
    with pytest.raises(BlockError) as ei:
        parse_header(header)
    assert ei.value.block_no is None


def test_block_aad():
    fid = bytes(range(16))
    assert block_aad(0, fid) == bytes(8) + fid
    assert block_aad(258, fid) == b"\x00" * 6 + b"\x01\x02" + fid


def test_encrypt_block_layout(codec):
    fid = bytes(range(1, 17))
    a = codec.encrypt_block(b"x" * 100, 3, fid)
    b = codec.encrypt_block(b"x" * 100, 3, fid)
    assert len(a) == 100 + codec.overhead
    n = codec.aead.nonce_len
    assert a[:n] != b[:n]  # fresh random nonce per write
    assert codec.aead.open(a, block_aad(3, fid)) == b"x" * 100
    assert codec.decrypt_block(a, 3, fid) == b"x" * 100
    with pytest.raises(BlockError) as ei:
        codec.decrypt_block(a, 4, fid)
    assert ei.value.block_no == 4


# --- reading synthetic files at many offsets ----------------------------------------------------
SIZES = [1, 17, 18, 100, 4095, 4096, 4097, 8191, 8192, 8193, 3 * PLAIN_BS + 17]


def _offsets(size: int) -> list[int]:
    base = {0, 1, 17, 4095, 4096, 4097, 8191, 8192, 8193, 12288, size - 1, size, size + 1, size + 5000}
    return sorted(o for o in base if o >= 0)


LENGTHS = [0, 1, 2, 100, 4095, 4096, 4097, 8192, 8193, 20000]


@pytest.mark.parametrize("size", SIZES)
def test_read_ranges(tmp_path, codec, size):
    plain = rnd(size, size)
    data = encrypt_file(codec, plain)
    assert len(data) == codec.cipher_size(size)
    path = write(tmp_path, data)
    assert read(codec, path) == plain
    fd = os.open(path, os.O_RDONLY)
    try:
        file_id = codec.read_file_id(fd)
        assert file_id == data[2:18]
        for off in _offsets(size):
            for length in LENGTHS:
                want = plain[off : off + length]
                got = codec.read(fd, off, length)
                assert got == want, (off, length)
                buf = bytearray(b"\xee" * (length + 7))
                n = codec.read_into(fd, file_id, len(data), off, memoryview(buf)[:length])
                assert n == len(want), (off, length)
                assert bytes(buf[:n]) == want, (off, length)
                assert buf[length:] == b"\xee" * 7  # nothing written past the buffer
                if n < length:  # short reads only at EOF
                    assert off + n >= size
    finally:
        os.close(fd)


def test_read_many_blocks_in_fuse_sized_requests(tmp_path, codec):
    size = 40 * PLAIN_BS + 1234
    plain = rnd(size, 7)
    path = write(tmp_path, encrypt_file(codec, plain))
    assert read(codec, path) == plain
    out = bytearray()
    fd = os.open(path, os.O_RDONLY)
    try:
        off = 0
        while True:
            chunk = codec.read(fd, off, 128 * 1024)
            if not chunk:
                break
            out += chunk
            off += len(chunk)
        # unaligned requests spanning many blocks
        for off, length in ((1, 131072), (4095, 65537), (size - 70000, 131072)):
            assert codec.read(fd, off, length) == plain[off : off + length]
    finally:
        os.close(fd)
    assert bytes(out) == plain


def test_read_with_explicit_cipher_size(tmp_path, codec):
    plain = rnd(10000, 3)
    data = encrypt_file(codec, plain)
    path = write(tmp_path, data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert codec.read(fd, 0, 20000, cipher_size=len(data)) == plain
    finally:
        os.close(fd)


# --- real gocryptfs files -------------------------------------------------------------------------
EXAMPLE_CONTENT = {
    # dir: (master key, content cipher, hkdf)
    "v1.3": ("fd890dab86bf61cfec5ad460ad3ed01f9c52d5462a31783da56b088d3d05232e", GCM, True),
    "v2.2-deterministic-names": ("722733f5b0f399f55465ad7af0bed125e82de7b4045e7608a5e5c78e04a1a61e",
                                 GCM, True),
    "v2.2-xchacha": ("44670e7e32475bfcbdfb8a8cbe17a7670679cac0be705d8caf41c41128c40f26", XCHACHA, True),
    "v2.2-xchacha-deterministic-names": ("beba88a9c6cd1dc0b69c6f9d9daea4939ae870824ffc40bfb44e52db3933af39",
                                         XCHACHA, True),
    "v1.1-aessiv": ("eaf371c3f9a553368819f22b7bccd7c2a738cf617261c65814c28a039428992b", SIV, False),
    "v0.9": ("1cafe3f4bc3164662214c47cecd89bf34e078fe4f5faeea78b7cab02884f5e1c", GCM, False),
    "v0.7": ("ed7f6d8340cce86c0e7d79c2a9438710575221bf30a0eb602821fa8f7f3123bf", GCM, False),
}


@pytest.mark.parametrize("block_path", ["python", pytest.param("c", marks=pytest.mark.skipif(
    not _C_BUILT, reason="C block path not built"))])
@pytest.mark.parametrize("name", sorted(EXAMPLE_CONTENT))
def test_example_files_decrypt(name, block_path):
    """Every regular file in the examples (status.txt and the long-named one) holds 'It works!\\n'."""
    mk, kind, hkdf = EXAMPLE_CONTENT[name]
    if block_path == "c" and kind != GCM:
        pytest.skip("the C block path is AES-GCM only")
    c = make_codec(kind, block_path, bytes.fromhex(mk), hkdf)
    files = [p for p in (EXAMPLES / name).iterdir()
             if p.is_file() and not p.is_symlink() and p.name not in ("gocryptfs.conf", "gocryptfs.diriv")
             and not p.name.endswith(".name")]
    assert files
    for p in files:
        assert p.stat().st_size == c.cipher_size(10)
        assert read(c, str(p)) == b"It works!\n"
        assert read(c, str(p), 3, 4) == b"work"


# --- gocryptfs' edge cases (spec §4.3) ----------------------------------------------------------
def test_empty_file(tmp_path, codec):
    path = write(tmp_path, b"")
    assert read(codec, path) == b""
    fd = os.open(path, os.O_RDONLY)
    try:
        assert codec.read_file_id(fd) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("n", list(range(1, 19)))
def test_files_of_1_to_18_bytes_read_as_empty(tmp_path, codec, n):
    for data in (rnd(n, n), bytes(n), (b"\x00\x02" + rnd(16, 1))[:n]):
        path = write(tmp_path, data)
        assert read(codec, path) == b""
        assert read(codec, path, 5, 100) == b""
    assert codec.plain_size(n) == 0


def test_header_only_file_of_a_real_file_reads_empty(tmp_path, codec):
    data = encrypt_file(codec, b"hello")
    path = write(tmp_path, data[:18])
    assert read(codec, path) == b""


@pytest.mark.parametrize(
    ("header", "what"),
    [(bytes(18), "all-zero header"), (b"\x00\x03" + rnd(16, 9), "version 3"),
     (b"\x00\x01" + rnd(16, 9), "version 1"), (b"\x00\x02" + bytes(16), "zero file ID")],
)
def test_invalid_header_is_an_error(tmp_path, codec, header, what):
    body = encrypt_file(codec, rnd(5000, 1), file_id=header[2:] if header[2:] != bytes(16) else b"\x01" * 16)
    path = write(tmp_path, header + body[18:])
    err = read_expect_error(codec, path)
    assert err.block_no is None, what
    assert "header" in str(err)
    # even a header followed by a single byte
    path = write(tmp_path, header + b"\x01", "g")
    assert read_expect_error(codec, path).block_no is None


def test_all_zero_file_is_a_header_error(tmp_path, codec):
    path = write(tmp_path, bytes(18 + codec.cipher_bs))
    assert read_expect_error(codec, path).block_no is None


def test_full_all_zero_block_is_a_hole(tmp_path, codec):
    plain = rnd(3 * PLAIN_BS + 10, 2)
    header, fid = new_header()
    blocks = [codec.encrypt_block(plain[i : i + PLAIN_BS], i // PLAIN_BS, fid)
              for i in range(0, len(plain), PLAIN_BS)]
    blocks[1] = bytes(codec.cipher_bs)
    path = write(tmp_path, header + b"".join(blocks))
    expected = plain[:PLAIN_BS] + bytes(PLAIN_BS) + plain[2 * PLAIN_BS :]
    assert read(codec, path) == expected
    assert read(codec, path, PLAIN_BS + 5, 10) == bytes(10)
    assert read(codec, path, PLAIN_BS - 3, 10) == expected[PLAIN_BS - 3 : PLAIN_BS + 7]


def test_full_all_zero_last_block_is_a_hole(tmp_path, codec):
    header, fid = new_header()
    b0 = codec.encrypt_block(b"A" * PLAIN_BS, 0, fid)
    path = write(tmp_path, header + b0 + bytes(codec.cipher_bs))
    assert read(codec, path) == b"A" * PLAIN_BS + bytes(PLAIN_BS)
    path = write(tmp_path, header + bytes(codec.cipher_bs), "only-hole")
    assert read(codec, path) == bytes(PLAIN_BS)


@pytest.mark.parametrize("tail", [1, 31, 33, 100, 4000, "cbs-1"])
def test_partial_all_zero_tail_is_an_error(tmp_path, codec, tail):
    n = codec.cipher_bs - 1 if tail == "cbs-1" else tail
    header, fid = new_header()
    b0 = codec.encrypt_block(b"B" * PLAIN_BS, 0, fid)
    path = write(tmp_path, header + b0 + bytes(n))
    assert read_expect_error(codec, path).block_no == 1
    assert read_expect_error(codec, path, PLAIN_BS, 1).block_no == 1
    assert read(codec, path, 0, PLAIN_BS) == b"B" * PLAIN_BS  # block 0 still reads


def test_partial_all_zero_only_block_is_an_error(tmp_path, codec):
    header, _ = new_header()
    path = write(tmp_path, header + bytes(100))
    assert read_expect_error(codec, path).block_no == 0


def test_garbage_tail_of_1_to_overhead_bytes(tmp_path, codec):
    header, fid = new_header()
    b0 = codec.encrypt_block(b"C" * PLAIN_BS, 0, fid)
    for n in range(1, codec.overhead + 1):
        data = header + b0 + rnd(n, n)
        assert codec.plain_size(len(data)) == PLAIN_BS + 1
        path = write(tmp_path, data)
        assert read_expect_error(codec, path).block_no == 1
        assert read_expect_error(codec, path, PLAIN_BS, 10).block_no == 1
        assert read(codec, path, 0, PLAIN_BS) == b"C" * PLAIN_BS


def test_garbage_only_block_of_overhead_bytes(tmp_path, codec):
    header, _ = new_header()
    path = write(tmp_path, header + rnd(codec.overhead, 5))
    assert read_expect_error(codec, path).block_no == 0


def _three_block_file(codec):
    plain = rnd(3 * PLAIN_BS, 11)
    header, fid = new_header()
    blocks = [codec.encrypt_block(plain[i : i + PLAIN_BS], i // PLAIN_BS, fid)
              for i in range(0, len(plain), PLAIN_BS)]
    return plain, header, fid, blocks


@pytest.mark.parametrize("where", ["nonce", "first ciphertext byte", "middle", "last byte"])
def test_flipped_byte_in_block_1(tmp_path, codec, where):
    plain, header, _, blocks = _three_block_file(codec)
    pos = {"nonce": 3, "first ciphertext byte": codec.aead.nonce_len, "middle": 2000,
           "last byte": codec.cipher_bs - 1}[where]
    b1 = bytearray(blocks[1])
    b1[pos] ^= 0x01
    path = write(tmp_path, header + blocks[0] + bytes(b1) + blocks[2])
    assert read_expect_error(codec, path).block_no == 1
    assert read_expect_error(codec, path, PLAIN_BS, PLAIN_BS).block_no == 1
    assert read_expect_error(codec, path, PLAIN_BS + 100, 1).block_no == 1
    assert read_expect_error(codec, path, 10, PLAIN_BS).block_no == 1  # straddles blocks 0 and 1
    # other ranges of the same file still read fine
    assert read(codec, path, 0, PLAIN_BS) == plain[:PLAIN_BS]
    assert read(codec, path, 5, 100) == plain[5:105]
    assert read(codec, path, 2 * PLAIN_BS, PLAIN_BS) == plain[2 * PLAIN_BS :]


def test_flipped_file_id_breaks_every_block(tmp_path, codec):
    _, header, _, blocks = _three_block_file(codec)
    bad = bytearray(header)
    bad[10] ^= 0x80
    path = write(tmp_path, bytes(bad) + b"".join(blocks))
    assert read_expect_error(codec, path).block_no == 0
    assert read_expect_error(codec, path, 2 * PLAIN_BS, 10).block_no == 2


def test_all_zero_nonce_is_an_error(tmp_path, codec):
    _, header, _, blocks = _three_block_file(codec)
    b1 = bytes(codec.aead.nonce_len) + blocks[1][codec.aead.nonce_len :]
    path = write(tmp_path, header + blocks[0] + b1 + blocks[2])
    assert read_expect_error(codec, path, PLAIN_BS, 1).block_no == 1


def test_swapped_blocks_are_an_error(tmp_path, codec):
    _, header, _, blocks = _three_block_file(codec)
    path = write(tmp_path, header + blocks[1] + blocks[0] + blocks[2])
    assert read_expect_error(codec, path).block_no == 0
    assert read_expect_error(codec, path, PLAIN_BS, 1).block_no == 1


def test_block_from_another_file_is_an_error(tmp_path, codec):
    plain, header, _, blocks = _three_block_file(codec)
    _, _, _, other = _three_block_file(codec)  # same plaintext, different file ID
    path = write(tmp_path, header + blocks[0] + other[1] + blocks[2])
    assert read_expect_error(codec, path, PLAIN_BS, 1).block_no == 1
    assert read(codec, path, 0, PLAIN_BS) == plain[:PLAIN_BS]


def test_last_block_padded_with_garbage_is_an_error(tmp_path, codec):
    """Appending bytes to a valid partial last block breaks its tag."""
    header, fid = new_header()
    b0 = codec.encrypt_block(b"D" * 100, 0, fid)
    path = write(tmp_path, header + b0 + b"\x01")
    assert read_expect_error(codec, path).block_no == 0


def test_truncation_at_block_boundary_goes_undetected(tmp_path, codec):
    """Documented gocryptfs weakness (spec §7): a 3-block file cut to 2 blocks reads as 8192 bytes."""
    plain, header, _, blocks = _three_block_file(codec)
    path = write(tmp_path, header + blocks[0] + blocks[1])
    assert read(codec, path) == plain[: 2 * PLAIN_BS]
    assert read(codec, path, 2 * PLAIN_BS, 10) == b""


def test_truncation_inside_a_block_is_detected(tmp_path, codec):
    _, header, _, blocks = _three_block_file(codec)
    path = write(tmp_path, header + blocks[0] + blocks[1][:-100])
    assert read_expect_error(codec, path, PLAIN_BS, 1).block_no == 1


def test_wrong_key_is_an_error(tmp_path, codec):
    path = write(tmp_path, encrypt_file(codec, b"secret data"))
    other = make_codec(codec.aead.name, codec.block_path, master=b"\x07" * 32)
    assert read_expect_error(other, path).block_no == 0


# --- BlockError --------------------------------------------------------------------------------
def test_block_error_with_path():
    e = BlockError(1, "authentication failed")
    assert e.block_no == 1 and e.path is None
    e2 = e.with_path("/data/model.bin")
    assert isinstance(e2, BlockError) and isinstance(e2, IntegrityError)
    assert e2.block_no == 1 and e2.path == "/data/model.bin" and e2.reason == "authentication failed"
    msg = str(e2)
    assert "/data/model.bin" in msg and "block 1" in msg and "authentication failed" in msg
    assert e2.exit_code == exitcodes.INTEGRITY == 26
    assert e.exit_code == 26


def test_block_error_header_message():
    e = BlockError(None, "header is all zeros").with_path("f.bin")
    assert "header" in str(e) and "f.bin" in str(e)
    assert "block" not in str(e).split(":")[0]


def test_block_error_from_read_names_the_block(tmp_path, codec):
    plain, header, _, blocks = _three_block_file(codec)
    b2 = bytearray(blocks[2])
    b2[-1] ^= 1
    path = write(tmp_path, header + blocks[0] + blocks[1] + bytes(b2))
    err = read_expect_error(codec, path)
    assert err.block_no == 2
    assert "block 2" in str(err.with_path(path)) and path in str(err.with_path(path))


# --- a cipher size that is smaller than the file (the file grew after it was stat'ed) -----------
# PlainFile (tree.py) fstat()s once at open and passes that size to every read_into, so a backing
# file that grows while open (concurrent writer, or an attacker on the storage) reaches this case.
# The output buffer is a slice of a larger bytearray with a guard region, so an overflow lands in
# the guard (and is detected) instead of corrupting the heap.
GUARD = 3 * PLAIN_BS


def _grown_file(tmp_path, codec):
    """A 1-byte plaintext file as stat'ed (cipher_size(1) bytes), then grown to 4096 + 10 bytes."""
    header, fid = new_header()
    data = header + codec.encrypt_block(b"A" * PLAIN_BS, 0, fid) + codec.encrypt_block(b"B" * 10, 1, fid)
    return write(tmp_path, data), fid, codec.cipher_size(1)


def _stale_read(codec, path, fid, stat_size):
    buf = bytearray(b"\xee" * (10 + GUARD))
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            n = codec.read_into(fd, fid, stat_size, 0, memoryview(buf)[:10])
        except CryptfsError:
            n = None  # a clean, reported error would be acceptable too
    finally:
        os.close(fd)
    assert buf[10:] == b"\xee" * GUARD, "read_into wrote past the end of its output buffer"
    if n is not None:
        assert n == 1 and buf[:1] == b"A"


@pytest.mark.skipif(not _C_BUILT, reason="C block path not built")
def test_stale_cipher_size_c_path_stays_inside_the_buffer(tmp_path):
    codec = make_codec(GCM, "c")
    _stale_read(codec, *_grown_file(tmp_path, codec))


@pytest.mark.parametrize("kind", [GCM, SIV, XCHACHA])
def test_stale_cipher_size_python_path(tmp_path, kind):
    codec = make_codec(kind, "python")
    _stale_read(codec, *_grown_file(tmp_path, codec))
