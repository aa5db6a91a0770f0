"""Packaging: one version (pyproject's), three console scripts, every subpackage shipped."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

import agent.kbs
import cryptfs
import sam
from cryptfs.core.version import DIST, VERSION
from tests.support import PROJECT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = {"cryptfs": "cryptfs.cli:main", "sam": "sam.cli:main", "agent": "agent.cli:main"}


def test_one_version_everywhere():
    installed = importlib.metadata.version(DIST)
    assert cryptfs.__version__ == sam.__version__ == VERSION == installed
    assert PYPROJECT["project"]["name"] == DIST
    assert PYPROJECT["project"]["version"] == installed, "reinstall: pip install -e '.[test]'"
    assert agent.kbs.USER_AGENT.endswith("/" + installed)


def test_console_scripts_name_the_three_mains():
    assert PYPROJECT["project"]["scripts"] == SCRIPTS
    for target in SCRIPTS.values():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        assert callable(main)
    entry_points = {ep.name: ep.value for ep in importlib.metadata.distribution(DIST).entry_points
                    if ep.group == "console_scripts"}
    assert entry_points == SCRIPTS


def test_every_subpackage_is_found():
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    assert set(find["include"]) == {"cryptfs*", "sam*", "agent*"}
    from setuptools import find_packages

    found = set(find_packages(str(PROJECT), include=find["include"]))
    assert {"cryptfs", "cryptfs.core", "sam", "agent", "agent.tdx", "agent.attesters"} <= found
    assert not any(p.startswith(("tests", "bench")) for p in found)


def test_demo_packages_are_an_extra_that_test_includes():
    project = PYPROJECT["project"]
    names = {dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]}
    assert not names & {"numpy", "safetensors"}, "numpy/safetensors belong to the demo extra"
    extras = project["optional-dependencies"]
    assert set(extras["demo"]) == {"numpy", "safetensors"}
    assert set(extras["demo"]) <= set(extras["test"])
