"""Connecting: settings, pinning, passwords, rate limits, timeouts, the GIL."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import pytest

import blendfleet_py
from conftest import PASSWORD, Manager


def test_module_surface() -> None:
    assert isinstance(blendfleet_py.__version__, str) and blendfleet_py.__version__
    tree = {
        "ConnectionFailed": "FleetError",
        "PinMismatch": "ConnectionFailed",
        "AuthenticationFailed": "FleetError",
        "RateLimited": "FleetError",
        "NotFound": "FleetError",
        "InvalidRequest": "FleetError",
        "ServerError": "FleetError",
    }
    for name, parent in tree.items():
        cls = getattr(blendfleet_py, name)
        assert cls.__bases__ == (getattr(blendfleet_py, parent),), name
        assert cls.__module__ == "blendfleet_py"
    assert issubclass(blendfleet_py.FleetError, Exception)
    assert blendfleet_py.FleetError("x").code is None
    assert blendfleet_py.RateLimited("x").retry_after is None


def test_info(manager: Manager) -> None:
    client = manager.client()
    info = client.info()
    assert set(info) >= {"server", "version", "api_version", "agents_online"}
    assert info["agents_online"] == 0
    assert client.url == manager.url


def test_connection_string(manager: Manager) -> None:
    parsed = blendfleet_py.parse_connection_string(manager.connection)
    assert parsed == {"url": manager.url, "user": "admin", "ca_fingerprint": manager.fingerprint}
    client = blendfleet_py.Client.from_connection_string(manager.connection, PASSWORD)
    assert client.info()["api_version"] == manager.client().info()["api_version"]
    with pytest.raises(blendfleet_py.InvalidRequest, match="#ca="):
        blendfleet_py.parse_connection_string("https://admin@127.0.0.1:1/")


def test_repr_never_shows_the_password(manager: Manager) -> None:
    client = manager.client(password="hunter2-secret")
    assert "hunter2" not in repr(client)
    assert "hunter2" not in str(client)
    assert manager.url in repr(client) and "admin" in repr(client)


def test_bad_settings_are_refused_without_network(manager: Manager) -> None:
    with pytest.raises(blendfleet_py.InvalidRequest, match="fingerprint"):
        blendfleet_py.Client(manager.url, "admin", PASSWORD, "sha256:1234")
    with pytest.raises(blendfleet_py.InvalidRequest, match="https"):
        blendfleet_py.Client("http://127.0.0.1:1", "admin", PASSWORD, manager.fingerprint)
    for timeout in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(blendfleet_py.InvalidRequest, match="timeout"):
            blendfleet_py.Client(manager.url, "admin", PASSWORD, manager.fingerprint, timeout)


def test_wrong_password(fresh_manager: Manager) -> None:
    client = fresh_manager.client(password="not-the-password")
    with pytest.raises(blendfleet_py.AuthenticationFailed) as raised:
        client.info()
    assert raised.value.code == "unauthorized"
    assert "password" in str(raised.value)


def test_pin_mismatch_sends_no_credentials(fresh_manager: Manager) -> None:
    wrong = "sha256:" + "ab" * 32
    assert wrong != fresh_manager.fingerprint
    client = blendfleet_py.Client(fresh_manager.url, "admin", "wrong-password", wrong)
    # More attempts than the manager tolerates failed logins from one address (10): had any
    # of them reached the password check, the address would now be blocked.
    for _ in range(15):
        with pytest.raises(blendfleet_py.PinMismatch) as raised:
            client.info()
        assert isinstance(raised.value, blendfleet_py.ConnectionFailed)
        assert raised.value.code is None
        assert "pinned" in str(raised.value)
    assert fresh_manager.client().info()["agents_online"] == 0


def test_rate_limited_after_repeated_failures(fresh_manager: Manager) -> None:
    client = fresh_manager.client(password="guess")
    failures = 0
    with pytest.raises(blendfleet_py.RateLimited) as raised:
        for _ in range(30):
            try:
                client.info()
            except blendfleet_py.AuthenticationFailed:
                failures += 1
    assert failures >= 1
    assert raised.value.code == "too_many_requests"
    assert raised.value.retry_after is not None and raised.value.retry_after > 0
    # The right password from the same address is refused too while it is blocked.
    with pytest.raises(blendfleet_py.RateLimited):
        fresh_manager.client().info()


def test_refused_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    client = blendfleet_py.Client(f"https://127.0.0.1:{port}", "admin", "pw", "sha256:" + "00" * 32)
    with pytest.raises(blendfleet_py.ConnectionFailed) as raised:
        client.info()
    assert f"127.0.0.1:{port}" in str(raised.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
                accepted.append(connection)
            except OSError:
                pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_timeout_on_a_silent_server(silent_server: int) -> None:
    client = blendfleet_py.Client(f"https://127.0.0.1:{silent_server}", "admin", "pw",
                                  "sha256:" + "00" * 32, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(blendfleet_py.ConnectionFailed) as raised:
        client.info()
    elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 5.0, elapsed
    assert "timed out" in str(raised.value) or "timeout" in str(raised.value), str(raised.value)


def test_calls_release_the_gil(silent_server: int) -> None:
    """A Python thread keeps running while the main thread waits for the network."""
    client = blendfleet_py.Client(f"https://127.0.0.1:{silent_server}", "admin", "pw",
                                  "sha256:" + "00" * 32, timeout=2.0)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.01)

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)
    before = ticks
    with pytest.raises(blendfleet_py.ConnectionFailed):
        client.info()
    during = ticks - before
    stop.set()
    counter.join()
    # Two seconds at one tick per 10 ms: ~200 if the GIL was free (fewer on a busy machine),
    # none at all if the call held it.
    assert during >= 50, during


def test_calls_from_many_threads(manager: Manager) -> None:
    client = manager.client()
    results: list[object] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(client.info()["api_version"])
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 8 and len(set(results)) == 1
