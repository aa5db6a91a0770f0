"""What ENCRYPTED_MODEL_PATH holds, told without the key: a gocryptfs directory, a Sam package,
or a plaintext model.

A directory of the other method, or a model nobody encrypted, would otherwise be found out only
by the mount, after the key was released; here the agent says which variable to change.
"""

from __future__ import annotations

import os

__all__ = ["GOCRYPTFS", "PLAINTEXT", "SAM", "identify", "mismatch"]

GOCRYPTFS, SAM, SAM_PARENT = "gocryptfs", "sam", "sam-parent"
PLAINTEXT, EMPTY, UNKNOWN = "plaintext", "empty", "?"
# What an unencrypted model directory has at its top (gocryptfs names are base64, Sam's are kept
# but the package has .sam/)
PLAIN_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".onnx", ".ckpt", ".h5", ".msgpack")
PLAIN_NAMES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def identify(path: str) -> str:
    """The kind of directory ``path`` is (one of the module's constants); no file is parsed."""
    if os.path.lexists(os.path.join(path, "gocryptfs.conf")):
        return GOCRYPTFS
    if os.path.lexists(os.path.join(path, ".sam", "manifest.json")):
        return SAM
    try:
        names = os.listdir(path)
    except OSError:
        return UNKNOWN
    if not names:
        return EMPTY
    if any(n in PLAIN_NAMES or n.endswith(PLAIN_SUFFIXES) for n in names):
        return PLAINTEXT
    if any(os.path.lexists(os.path.join(path, n, ".sam", "manifest.json")) for n in names[:64]):
        return SAM_PARENT
    return UNKNOWN


def mismatch(path: str, method: str) -> str | None:
    """Why ``path`` cannot be served with ENCRYPTION_METHOD=``method``, with the fix; None if it may."""
    kind = identify(path)
    where = f"ENCRYPTED_MODEL_PATH={path}"
    if kind == method or kind == UNKNOWN:
        return None
    if kind in (GOCRYPTFS, SAM):
        marker = "gocryptfs.conf" if kind == GOCRYPTFS else ".sam/manifest.json"
        return (f"{where} is a {kind} directory ({marker}) but ENCRYPTION_METHOD is {method}: set "
                f"ENCRYPTION_METHOD={kind}")
    if kind == PLAINTEXT:
        tool = "python -m cryptfs encrypt" if method == GOCRYPTFS else "python -m sam pack"
        return (f"{where} looks like a plaintext model (config.json, weights), not an encrypted one: "
                f"encrypt it ({tool}) and set ENCRYPTED_MODEL_PATH to the result")
    if kind == SAM_PARENT:
        return (f"{where} holds Sam packages but is not one: set ENCRYPTED_MODEL_PATH to the package "
                "directory (PATH/KEY_ID)" + ("" if method == SAM else " and ENCRYPTION_METHOD=sam"))
    what = "a usable Sam package (no .sam/manifest.json)" if method == SAM else \
        "a usable gocryptfs directory (no gocryptfs.conf)"
    return f"{where} is empty, not {what}: is the OSS bucket mounted there?"
