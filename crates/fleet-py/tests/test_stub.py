"""The shipped type stub describes the module as it is at run time, and these tests type-check
against it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import in_ci

TESTS = Path(__file__).resolve().parent


def mypy(arguments: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("mypy") is None:
        if in_ci():
            pytest.fail("mypy is missing, and CI must check the stub")
        pytest.skip("mypy is not installed (scripts/test-python.sh installs it)")
    return subprocess.run(
        [sys.executable, "-m", *arguments], capture_output=True, text=True, cwd=tmp_path,
        timeout=300, check=False, env={**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "cache")})


def test_stub_matches_the_runtime(tmp_path: Path) -> None:
    allowlist = TESTS / "stubtest-allowlist.txt"
    output = mypy(["mypy.stubtest", "blendfleet_py", "--allowlist", str(allowlist)], tmp_path)
    assert output.returncode == 0, output.stdout + output.stderr


def test_tests_type_check_against_the_stub(tmp_path: Path) -> None:
    output = mypy(["mypy", "--strict", str(TESTS)], tmp_path)
    assert output.returncode == 0, output.stdout + output.stderr
