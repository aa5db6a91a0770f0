"""Shared fixtures for every test package (helpers: tests/support.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import Oracle, fuse_mounts, oracle_available


@pytest.fixture(scope="session")
def oracle() -> Oracle:
    if not oracle_available():
        if os.environ.get("CRYPTFS_REQUIRE_ORACLE"):
            pytest.fail("CRYPTFS_REQUIRE_ORACLE is set but gocryptfs, fusermount3 or /dev/fuse is missing")
        pytest.skip("real gocryptfs not available (apt-get install gocryptfs fuse3)")
    return Oracle()


@pytest.fixture(autouse=True)
def _no_leftover_mounts(tmp_path_factory):
    """Fail a test that leaves a FUSE mount behind (only this run's mounts: its temp dirs)."""
    base = os.path.realpath(tmp_path_factory.getbasetemp())
    before = fuse_mounts()
    yield
    left = {m for m in fuse_mounts() - before if m.startswith(base + "/")}
    for m in left:
        subprocess.run(["fusermount3", "-u", "-z", m], capture_output=True)
    assert not left, f"test left FUSE mounts behind: {sorted(left)}"
