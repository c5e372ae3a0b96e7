"""Fixtures: a real `blendfleet manager` process on a free loopback port."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import blendfleet_py

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "py-test-password"
START_TIMEOUT = 60.0


def in_ci() -> bool:
    return os.environ.get("CI", "") not in ("", "false", "0")


def blendfleet_binary() -> Path:
    """`BLENDFLEET_BIN`, else the debug build in the cargo target dir."""
    explicit = os.environ.get("BLENDFLEET_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "blendfleet"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Manager:
    """A running manager and what it printed at start-up."""

    process: subprocess.Popen[str]
    url: str
    fingerprint: str
    connection: str
    state: Path
    log: Path

    def client(self, password: str = PASSWORD, timeout: float = 30.0) -> blendfleet_py.Client:
        return blendfleet_py.Client(self.url, "admin", password, self.fingerprint, timeout)

    def blob_files(self) -> dict[str, tuple[int, int]]:
        """Stored blobs: file name -> (inode, mtime in ns). A re-upload replaces the file."""
        root = self.state / "blobs"
        found = {}
        for path in root.glob("??/*"):
            stat = path.stat()
            found[path.name] = (stat.st_ino, stat.st_mtime_ns)
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_manager(directory: Path, extra_args: list[str] | None = None) -> Manager:
    binary = blendfleet_binary()
    if not binary.is_file():
        pytest.fail(f"no blendfleet binary at {binary}: run `cargo build -p blendfleet` "
                    "or set BLENDFLEET_BIN")
    state = directory / "state"
    log = directory / "manager.log"
    env = dict(os.environ)
    env["BLENDFLEET_PASSWORD"] = PASSWORD
    env.pop("BLENDFLEET_MANAGER", None)
    env["XDG_CONFIG_HOME"] = str(directory / "config")
    port = free_port()
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [str(binary), "manager", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
             *(extra_args or [])],
            stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, text=True, env=env,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    printed: dict[str, str] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while "token" not in printed:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            pytest.fail(f"the manager did not start; its log:\n{log.read_text()}")
        text = line.strip()
        if text.startswith("BlendFleet manager listening on "):
            printed["url"] = text.removeprefix("BlendFleet manager listening on ").strip()
        elif text.startswith("CA fingerprint:"):
            printed["fingerprint"] = text.removeprefix("CA fingerprint:").strip()
        elif text.startswith("connection:"):
            printed["connection"] = text.removeprefix("connection:").strip()
        elif text.startswith("agents join with:"):
            printed["token"] = text
    return Manager(process, printed["url"], printed["fingerprint"], printed["connection"],
                   state, log)


@pytest.fixture(scope="session")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manager]:
    """One manager shared by the tests that do not count failed logins."""
    running = start_manager(tmp_path_factory.mktemp("manager"))
    yield running
    running.stop()


@pytest.fixture
def fresh_manager(tmp_path: Path) -> Iterator[Manager]:
    """A manager of its own, for tests that count failed logins per address."""
    running = start_manager(tmp_path)
    yield running
    running.stop()


def require(found: str | None, what: str) -> str:
    """A tool the test needs: in CI it must be there, elsewhere its absence skips."""
    if found:
        return found
    if in_ci():
        pytest.fail(f"{what} is missing, and CI must test with it")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="session")
def blender() -> str:
    return require(shutil.which(os.environ.get("BLENDFLEET_TEST_BLENDER", "blender")),
                   "Blender (`blender` or BLENDFLEET_TEST_BLENDER)")


@pytest.fixture(scope="session")
def bpy_python() -> str:
    path = os.environ.get("BLENDFLEET_TEST_BPY_PYTHON")
    return require(path if path and Path(path).is_file() else None,
                   "a Python with pip bpy (BLENDFLEET_TEST_BPY_PYTHON)")


@pytest.fixture(scope="session")
def wheel() -> Path:
    path = os.environ.get("BLENDFLEET_PY_WHEEL")
    if not path:
        if in_ci():
            pytest.fail("BLENDFLEET_PY_WHEEL names no wheel; scripts/test-python.sh sets it")
        pytest.skip("BLENDFLEET_PY_WHEEL is not set (scripts/test-python.sh sets it)")
    return Path(path)


@pytest.fixture(scope="session")
def unpacked_wheel(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked into a directory, as the add-on bundles it."""
    target = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target
