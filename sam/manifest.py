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
from collections.abc import Iterable
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
# Reader limits (docs/sam-format.md §5.4); the packer refuses a model that would exceed them.
FILES_MAX = 1 << 18  # files per package (262 144)
DIRS_MAX = 1 << 18  # directories the paths imply (each costs a few hundred bytes of memory)
PATH_MAX_BYTES = 4096  # UTF-8 bytes of one path (Linux PATH_MAX)
PATH_MAX_DEPTH = 64  # components of one path: 63 directories and the file

CIPHER = "AES-256-GCM"
CHUNK_SIZE = 65536  # plaintext bytes per chunk, measured in bench/sam_chunk.py
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = 24  # magic (8) + file ID (16)
ID_LEN = 16
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")


@dataclass(frozen=True, slots=True)
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
    # (files list, its length, tree, dirs or None): rebuilt when files is replaced or changes length
    _cache: tuple | None = field(default=None, init=False, repr=False, compare=False)

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
        if len(files) > FILES_MAX:
            raise ManifestError(f"manifest: {len(files)} files, over the limit of {FILES_MAX} files per "
                                "package")
        m = cls(key_id=key_id, package_id=_hex(obj.get("package_id"), ID_LEN, "package_id"),
                kdf=KdfParams.from_json(obj.get("kdf")),
                key_check=_hex(obj.get("key_check"), 32, "key_check"),
                wrapped_key=_hex(obj.get("wrapped_key"), WRAPPED_LEN, "wrapped_key"),
                created=_str(obj, "created"), packer=_str(obj, "packer"), chunk_size=chunk_size,
                files=[_entry(f) for f in files])
        m.tree()  # no path listed twice, none both a file and a directory
        return m

    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def tree(self) -> Dir:
        """The directory tree the file paths imply, built once in time linear in the paths' length.

        Raises ManifestError for a path listed twice or one that is both a file and a directory.
        """
        cache = self._cache
        if cache is None or cache[0] is not self.files or cache[1] != len(self.files):
            cache = self._cache = (self.files, len(self.files), build_tree(self.files), None)
        return cache[2]

    def lookup(self, path: str) -> Dir | FileEntry | None:
        """The directory ("" is the top) or file at ``path``; None if the manifest has neither."""
        node = self.tree()
        if path:
            for name in path.split("/"):
                node = node.entries.get(name) if type(node) is Dir else None
                if node is None:
                    return None
        return node

    def dirs(self) -> frozenset[str]:
        """Every directory the file paths imply (the package records no other), without the top.

        Each name is built once from its parent's; readers that walk the tree use tree() or
        lookup() instead, which hold every name only once.
        """
        tree = self.tree()
        if self._cache[3] is None:
            out: list[str] = []
            stack = [("", tree)]
            while stack:
                prefix, node = stack.pop()
                for name, child in node.entries.items():
                    if type(child) is Dir:
                        path = prefix + name
                        out.append(path)
                        stack.append((path + "/", child))
            self._cache = (*self._cache[:3], frozenset(out))
        return self._cache[3]


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
    try:
        file_id = _hex(obj["id"], ID_LEN, "id")
    except ManifestError:  # the path is shown only when needed: display() is slow per character
        raise ManifestError(f"manifest: {shown(path)}: id must be {2 * ID_LEN} lowercase hex "
                            "digits") from None
    return FileEntry(path, size, mode, file_id)


def path_limit_problem(path: str) -> str | None:
    """What makes ``path`` exceed the reader's limits (depth, length), or None; linear in its length.

    The packer asks the same question of every file it would pack.
    """
    depth = path.count("/") + 1
    if depth > PATH_MAX_DEPTH:
        return f"has {depth} components, over the limit of {PATH_MAX_DEPTH} (directories nested too deep)"
    size = len(path.encode("utf-8", "surrogatepass"))  # a lone surrogate is refused by check_path
    if size > PATH_MAX_BYTES:
        return f"is {size} bytes long, over the limit of {PATH_MAX_BYTES} bytes of a path"
    return None


def brief(path: str, keep: int = 100) -> str:
    """A possibly huge path for a message: at most ``keep`` characters of it, shown safely."""
    text = display(path[:keep].encode("utf-8", "backslashreplace"))  # not yet checked for lone surrogates
    return text if len(path) <= keep else f"{text}... ({len(path)} characters)"


_BAD_PARTS = frozenset(("", ".", ".."))


def check_path(path: str) -> None:
    """A relative, normalised path within the limits that cannot leave the package or hide in its metadata."""
    problem = path_limit_problem(path)
    if problem is not None:
        raise ManifestError(f"manifest: the path {brief(path)} {problem}")
    parts = path.split("/")
    if (not path or path.startswith("/") or posixpath.normpath(path) != path
            or not _BAD_PARTS.isdisjoint(parts) or "\0" in path or not _is_utf8(path)):
        raise ManifestError(f"manifest: {path!r} is not a plain relative path")
    if parts[0] == META_DIR:
        raise ManifestError(f"manifest: {path!r} is inside the reserved {META_DIR}/ directory")


class Dir:
    """One directory of the package: its entries by name, each a :class:`Dir` or a :class:`FileEntry`."""

    __slots__ = ("entries", "_names")

    def __init__(self) -> None:
        self.entries: dict[str, Dir | FileEntry] = {}
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        """The entries' names sorted by their UTF-8 bytes (computed once)."""
        if self._names is None:
            self._names = sorted(self.entries, key=lambda n: n.encode("utf-8", "surrogateescape"))
        return self._names


def build_tree(entries: Iterable, path=lambda e: e.path) -> Dir:
    """The tree of the entries' paths, in one pass: each path is split once and walked from the top.

    No path listed twice, no path both a file and a directory (``a`` and ``a/b``), and at most
    DIRS_MAX directories. Time and memory are linear in the total length of the paths, however
    deep they are, and each directory name is held once.
    """
    top = Dir()
    dirs = 0
    for entry in entries:
        *parents, name = path(entry).split("/")
        node = top
        for i, part in enumerate(parents):
            child = node.entries.get(part)
            if child is None:
                dirs += 1
                if dirs > DIRS_MAX:
                    raise ManifestError(f"manifest: the paths imply more than {DIRS_MAX} directories, the "
                                        "limit of a package")
                child = node.entries[part] = Dir()
            elif type(child) is not Dir:
                raise ManifestError(f"manifest: {'/'.join(parents[:i + 1])!r} is both a file and a directory")
            node = child
        old = node.entries.get(name)
        if old is not None:
            what = "is both a file and a directory" if type(old) is Dir else "is listed twice"
            raise ManifestError(f"manifest: {path(entry)!r} {what}")
        node.entries[name] = entry
    return top


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
