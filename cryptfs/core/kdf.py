"""How much scrypt a reader pays for a KDF description it does not control.

gocryptfs.conf and a Sam manifest come from storage the attacker may edit, and both name
their scrypt cost. A reader runs at most this much, whoever wrote the file; a writer never
writes more (so nothing we write is refused by our own readers).
"""

from __future__ import annotations

SCRYPT_MEM_MAX = 1 << 30  # 128 * r * N bytes: 1 GiB (N = 2^20 at r = 8)
SCRYPT_WORK_MAX = 1 << 23  # r * N * p: 8x gocryptfs' default cost (N = 2^16), ~4 s here


def scrypt_cost_problem(n: int, r: int, p: int) -> str | None:
    """Why scrypt(N, r, p) is too costly for a reader, or None when it is acceptable."""
    if 128 * r * n > SCRYPT_MEM_MAX:
        return (f"scrypt N={n} r={r} needs {128 * r * n >> 20} MiB of memory, more than the "
                f"{SCRYPT_MEM_MAX >> 20} MiB a reader allows")
    if r * n * p > SCRYPT_WORK_MAX:
        return (f"scrypt N={n} r={r} p={p} costs r*N*p = {r * n * p}, more than the {SCRYPT_WORK_MAX} "
                "a reader allows (8 times the default)")
    return None
