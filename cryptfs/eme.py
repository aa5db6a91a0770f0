"""EME (ECB-Mix-ECB) wide-block encryption, as rfjakob/eme implements it for gocryptfs names.

Halevi-Rogaway EME with AES-256 and a 16-byte tweak (the directory IV). Blocks are
treated as 128-bit little-endian integers so that doubling in GF(2^128) is a shift.
The two ECB passes are done in one call each to keep per-block Python work small.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
MAX_BLOCKS = 128
_MASK = (1 << 128) - 1


def _mul2(x: int) -> int:
    x <<= 1
    if x >> 128:
        x = (x & _MASK) ^ 0x87
    return x


def _ints(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + BLOCK], "little") for i in range(0, len(data), BLOCK)]


def _bytes(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(BLOCK, "little") for v in values)


class EME:
    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("EME needs an AES-256 key")
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())
        lval = int.from_bytes(self._ecb(bytes(BLOCK), encrypt=True), "little")
        self._l = []
        for _ in range(MAX_BLOCKS):
            lval = _mul2(lval)
            self._l.append(lval)

    def _ecb(self, data: bytes, encrypt: bool) -> bytes:
        ctx = self._cipher.encryptor() if encrypt else self._cipher.decryptor()
        return ctx.update(data) + ctx.finalize()

    def encrypt(self, tweak: bytes, data: bytes) -> bytes:
        return self._transform(tweak, data, True)

    def decrypt(self, tweak: bytes, data: bytes) -> bytes:
        return self._transform(tweak, data, False)

    def _transform(self, tweak: bytes, data: bytes, encrypt: bool) -> bytes:
        if len(tweak) != BLOCK:
            raise ValueError("EME tweak must be 16 bytes")
        m, rem = divmod(len(data), BLOCK)
        if rem or not 1 <= m <= MAX_BLOCKS:
            raise ValueError("EME input must be 1..128 blocks of 16 bytes")
        lvals = self._l[:m]
        t = int.from_bytes(tweak, "little")
        ppp = _ints(self._ecb(_bytes([p ^ lj for p, lj in zip(_ints(data), lvals, strict=True)]), encrypt))
        mp = t
        for v in ppp:
            mp ^= v
        mc = int.from_bytes(self._ecb(mp.to_bytes(BLOCK, "little"), encrypt), "little")
        mval = mp ^ mc
        ccc = [0] * m
        acc = 0
        for j in range(1, m):
            mval = _mul2(mval)
            ccc[j] = ppp[j] ^ mval
            acc ^= ccc[j]
        ccc[0] = mc ^ t ^ acc
        out = _ints(self._ecb(_bytes(ccc), encrypt))
        return _bytes([c ^ lj for c, lj in zip(out, lvals, strict=True)])
