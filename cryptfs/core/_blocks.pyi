"""Type stub for the C block path (cryptfs/core/_blocks.c), imported by cryptfs/core/chunks.py only."""

OPENSSL_VERSION: str

class BlockError(Exception):
    """args: (chunk_no: int, reason: str)"""

class Decryptor:
    header_len: int
    plain_bs: int
    cipher_bs: int
    nonce_len: int

    def __init__(
        self,
        key: bytes,
        header_len: int = 18,
        plain_bs: int = 4096,
        nonce_len: int = 16,
        zero_is_hole: bool = True,
        last_flag: bool = False,
    ) -> None: ...
    def read_into(
        self,
        fd: int,
        out: memoryview | bytearray | int,
        plain_off: int,
        plain_size: int,
        aad_post: bytes = b"",
        aad_pre: bytes = b"",
        out_len: int = -1,
    ) -> int:
        """Decrypt plaintext [plain_off, plain_off + len(out)) into out; the GIL is released.

        ``out`` may be an integer address, then ``out_len`` gives its size. Raises BlockError
        (chunk number, reason) on the first chunk that fails, OSError on I/O errors.
        """
    def seal_into(
        self,
        plain: bytes | bytearray | memoryview,
        out: bytearray | memoryview,
        first_chunk: int,
        plain_size: int,
        aad_post: bytes = b"",
        aad_pre: bytes = b"",
    ) -> int:
        """Encrypt ``plain`` as chunks ``first_chunk``... of a file of ``plain_size`` bytes.

        Only the file's last chunk may be short; each chunk gets a fresh random nonce. Returns
        the cipher bytes written to ``out``; the GIL is released.
        """

def set_threads(n: int) -> None: ...
