"""The manifest: every file of the package (path, size, mode, file ID) and how it was sealed.

Stored as canonical JSON in ``.sam/manifest.json`` (readable without the key: names and
sizes are not secret in this format) with its HMAC-SHA256 in ``.sam/manifest.mac``. The
package digest is SHA-256 over the exact manifest bytes; a random package ID and KDF salt
make it new on every pack, so a policy can pin one upload and refuse any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from dataclasses import dataclass, field

from cryptfs.core.text import display

from .errors import ManifestError, UsageError
from .keys import WRAPPED_LEN, KdfParams, _hex, check_key_id

FORMAT = "sam-open"
VERSION = 1
META_DIR = ".sam"
MANIFEST_NAME = "manifest.json"
MAC_NAME = "manifest.mac"
MANIFEST_MAX = 64 << 20  # bytes: a bigger manifest is refused before parsing

CIPHER = "AES-256-GCM"
CHUNK_SIZE = 65536  # plaintext bytes per chunk, measured in bench/sam_chunk.py
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = 24  # magic (8) + file ID (16)
ID_LEN = 16
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, "/"-separated, normalised
    size: int  # plaintext bytes
    mode: int  # permission bits (0o7777 without setuid/setgid)
    file_id: bytes

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size, "mode": self.mode, "id": self.file_id.hex()}


@dataclass
class Manifest:
    key_id: str
    package_id: bytes
    kdf: KdfParams
    key_check: bytes
    wrapped_key: bytes  # the random master key, sealed under the key-wrapping key
    created: str
    packer: str
    chunk_size: int = CHUNK_SIZE
    files: list[FileEntry] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        obj = {
            "format": FORMAT, "version": VERSION, "key_id": self.key_id,
            "package_id": self.package_id.hex(), "created": self.created, "packer": self.packer,
            "kdf": self.kdf.to_json(), "key_check": self.key_check.hex(),
            "wrapped_key": self.wrapped_key.hex(),
            "cipher": {"name": CIPHER, "chunk_size": self.chunk_size, "nonce_len": NONCE_LEN,
                       "tag_len": TAG_LEN, "header_len": HEADER_LEN},
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path.encode())],
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, huge integers, deep nesting
            raise ManifestError(f"manifest is not valid JSON ({str(e)[:200]}): the package is "
                                "damaged") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ManifestError(f"not a {FORMAT} manifest")
        if type(obj.get("version")) is not int or obj["version"] != VERSION:  # not 1.0, not true
            raise ManifestError(f"manifest format version {obj.get('version')!r}: this release reads "
                                f"version {VERSION} only (upgrade sam)")
        key_id = _str(obj, "key_id")
        try:
            check_key_id(key_id)
        except Exception as e:
            raise ManifestError(f"manifest: {e}") from None
        cipher = obj.get("cipher")
        want = {"name": CIPHER, "nonce_len": NONCE_LEN, "tag_len": TAG_LEN, "header_len": HEADER_LEN}
        if not isinstance(cipher, dict) or any(cipher.get(k) != v for k, v in want.items()):
            raise ManifestError(f"manifest: cipher must be {CIPHER} with a {NONCE_LEN}-byte nonce, "
                                f"{TAG_LEN}-byte tag and {HEADER_LEN}-byte header")
        chunk_size = cipher.get("chunk_size")
        if type(chunk_size) is not int or not 4096 <= chunk_size <= (1 << 24) or chunk_size % 4096:
            raise ManifestError("manifest: cipher.chunk_size must be a multiple of 4096 up to 16 MiB")
        files = obj.get("files")
        if not isinstance(files, list):
            raise ManifestError("manifest: files must be a list")
        m = cls(key_id=key_id, package_id=_hex(obj.get("package_id"), ID_LEN, "package_id"),
                kdf=KdfParams.from_json(obj.get("kdf")),
                key_check=_hex(obj.get("key_check"), 32, "key_check"),
                wrapped_key=_hex(obj.get("wrapped_key"), WRAPPED_LEN, "wrapped_key"),
                created=_str(obj, "created"), packer=_str(obj, "packer"), chunk_size=chunk_size,
                files=[_entry(f) for f in files])
        check_tree([f.path for f in m.files])
        return m

    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def dirs(self) -> set[str]:
        """Every directory the file paths imply (the package records no other)."""
        return {d for f in self.files for d in parent_dirs(f.path)}


def _str(obj: dict, key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not _is_utf8(v) or not v.isprintable():
        raise ManifestError(f"manifest: {key} must be a printable UTF-8 string")
    return v


def shown(path: str) -> str:
    """A manifest path for messages: one line, control characters escaped."""
    return display(path.encode("utf-8", "surrogateescape"))


def _is_utf8(s: str) -> bool:
    """False for a lone surrogate (JSON "\\ud800"): it has no UTF-8 form, and printing it would crash."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _entry(obj) -> FileEntry:
    if not isinstance(obj, dict) or set(obj) != {"path", "size", "mode", "id"}:
        raise ManifestError("manifest: each file must have exactly path, size, mode and id")
    path, size, mode = obj["path"], obj["size"], obj["mode"]
    if not isinstance(path, str):
        raise ManifestError("manifest: a file path is not a string")
    check_path(path)
    if type(size) is not int or size < 0:
        raise ManifestError(f"manifest: {shown(path)}: size must be a non-negative integer")
    if type(mode) is not int or mode & ~0o1777:
        raise ManifestError(f"manifest: {shown(path)}: mode must hold permission bits only")
    return FileEntry(path, size, mode, _hex(obj["id"], ID_LEN, f"{shown(path)}: id"))


def check_path(path: str) -> None:
    """A relative, normalised path that cannot leave the package or hide in its metadata."""
    parts = path.split("/")
    if (not path or path.startswith("/") or posixpath.normpath(path) != path
            or any(p in ("", ".", "..") for p in parts) or "\0" in path or not _is_utf8(path)):
        raise ManifestError(f"manifest: {path!r} is not a plain relative path")
    if parts[0] == META_DIR:
        raise ManifestError(f"manifest: {path!r} is inside the reserved {META_DIR}/ directory")


def parent_dirs(path: str) -> list[str]:
    """The parent directories of a path: "a/b/c" -> ["a", "a/b"]."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def check_tree(paths: list[str]) -> None:
    """No duplicates, and no path that is both a file and a directory."""
    seen = set()
    dirs = set()
    for p in paths:
        if p in seen:
            raise ManifestError(f"manifest: {p!r} is listed twice")
        seen.add(p)
        dirs.update(parent_dirs(p))
    both = seen & dirs
    if both:
        raise ManifestError(f"manifest: {sorted(both)[0]!r} is both a file and a directory")


def digest(manifest_raw: bytes) -> str:
    """The printable package digest: what ``--expect-digest`` and EXPECTED_MODEL_DIGEST take."""
    return "sha256:" + hashlib.sha256(manifest_raw).hexdigest()


def check_digest_syntax(value: str, what: str = "--expect-digest") -> str:
    value = value.strip()
    if not DIGEST_RE.match(value):
        raise UsageError(f"{what} {value!r}: expected sha256: followed by 64 lowercase hex digits "
                    "(as 'python -m sam info DIR' prints it)")
    return value


def meta_paths(package_dir: str) -> tuple[str, str]:
    meta = os.path.join(package_dir, META_DIR)
    return os.path.join(meta, MANIFEST_NAME), os.path.join(meta, MAC_NAME)
