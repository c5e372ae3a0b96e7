"""The local farm: `blendfleet manager --local-agents N` as a child process of Blender.

The manager keeps its state (CA, database, results) in one directory across starts, so a job
that was running when Blender quit is still there to reattach to after the next start. Each
start sets a fresh random password (passed in the environment, never on the command line)
and reads the address and CA fingerprint the manager prints. The process is stopped with
SIGTERM (its agents with it) when Blender quits, when a new file is loaded without a job on
it, or when it has been idle for the configured time.

Nothing here runs on Blender's main thread except `stop_nowait`, which only signals.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

STARTUP_TIMEOUT = 60.0
STOP_GRACE = 20.0
_CONNECTION = re.compile(r"^\s*connection:\s*(\S+)\s*$")
_LISTENING = re.compile(r"listening on (\S+)")


class FarmError(Exception):
    """The local farm could not be started; the message is for the user."""


@dataclass(frozen=True)
class Connection:
    url: str
    user: str
    password: str
    ca_fingerprint: str
    connection_string: str


def default_state_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "blendfleet", "blender-farm")


def parse_banner(lines: list[str]) -> tuple[str, str] | None:
    """(url, connection string) from the lines `blendfleet manager` prints, once both are there."""
    url = connection = None
    for line in lines:
        match = _LISTENING.search(line)
        if match:
            url = match.group(1)
        match = _CONNECTION.match(line)
        if match:
            connection = match.group(1)
    if url and connection:
        return url, connection
    return None


def split_connection_string(text: str) -> tuple[str, str, str]:
    """(url, user, ca fingerprint) of `https://USER@HOST:PORT/#ca=sha256:...`, parsed the way
    the manager writes it (the Python module's parser is used when it is loaded)."""
    address, _, fragment = text.strip().partition("#")
    if not fragment.startswith("ca="):
        raise ValueError(f"`{text}` has no `#ca=sha256:...` part")
    scheme, _, rest = address.partition("://")
    user, at, host = rest.partition("@")
    if not at or not user:
        raise ValueError(f"`{text}` names no user (https://USER@HOST:PORT/#ca=...)")
    return f"{scheme}://{host.rstrip('/')}", user, fragment[3:]


class LocalFarm:
    """One manager process with its local agents."""

    def __init__(self, binary: str, agents: int, threads: int, blender: str, state_dir: str,
                 lease_timeout: int | None = None) -> None:
        self.binary = binary
        self.agents = agents
        self.threads = threads
        self.blender = blender
        self.state_dir = state_dir
        self.lease_timeout = lease_timeout
        self.process: subprocess.Popen[str] | None = None
        self.connection: Connection | None = None
        self.output: list[str] = []
        self.last_used = time.monotonic()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        command = [self.binary, "manager", "--state-dir", self.state_dir, "--listen", "127.0.0.1:0",
                   "--local-agents", str(self.agents)]
        if self.threads > 0:
            command += ["--agent-threads", str(self.threads)]
        if self.blender:
            command += ["--blender", self.blender]
        if self.lease_timeout:
            command += ["--lease-timeout", str(self.lease_timeout)]
        return command

    def start(self) -> Connection:
        """Starts the manager and waits for its banner. Blocking: call from a worker thread."""
        with self._lock:
            if self.running and self.connection:
                return self.connection
            os.makedirs(self.state_dir, exist_ok=True)
            password = secrets.token_urlsafe(24)
            env = dict(os.environ, BLENDFLEET_PASSWORD=password)
            env.setdefault("NO_COLOR", "1")
            log_path = os.path.join(self.state_dir, "manager.log")
            log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the process
            try:
                self.process = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=log, env=env, text=True, start_new_session=True,
                )
            except OSError as error:
                raise FarmError(f"cannot run {self.binary}: {error}") from None
            finally:
                log.close()
            banner = self._read_banner(log_path)
            url, connection_string = banner
            _url, user, fingerprint = split_connection_string(connection_string)
            self.connection = Connection(url, user, password, fingerprint, connection_string)
            threading.Thread(target=self._drain, name="blendfleet-farm-out", daemon=True).start()
            self.last_used = time.monotonic()
            return self.connection

    def _read_banner(self, log_path: str) -> tuple[str, str]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        stdout = self.process.stdout
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                break
            self.output.append(line.rstrip("\n"))
            banner = parse_banner(self.output)
            if banner:
                return banner
        self.stop()
        tail = ""
        try:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                tail = "".join(log.readlines()[-10:])
        except OSError:
            pass
        raise FarmError(f"the local manager did not start (log: {log_path}):\n{tail}".rstrip())

    def _drain(self) -> None:
        process = self.process
        if process is None or process.stdout is None:
            return
        for line in process.stdout:
            self.output.append(line.rstrip("\n"))
            del self.output[:-200]

    def stop_nowait(self) -> None:
        """Asks the manager to stop (it stops its agents); does not wait."""
        process = self.process
        if process is not None and process.poll() is None:
            try:
                process.send_signal(signal.SIGTERM)
            except OSError:
                pass

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stops the manager and waits for it; kills it after `grace` seconds."""
        process = self.process
        if process is None:
            return
        self.stop_nowait()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                process.kill()
            process.wait(timeout=5)
        self.process = None
        self.connection = None


_farm: LocalFarm | None = None
_farm_lock = threading.Lock()


def current() -> LocalFarm | None:
    return _farm


def ensure(binary: str, agents: int, threads: int, blender: str, state_dir: str | None = None,
           lease_timeout: int | None = None) -> LocalFarm:
    """The local farm, started with these settings (restarted if they changed)."""
    global _farm
    with _farm_lock:
        wanted = (binary, agents, threads, blender, state_dir or default_state_dir())
        farm = _farm
        if farm is not None and (farm.binary, farm.agents, farm.threads, farm.blender, farm.state_dir) != wanted:
            farm.stop()
            farm = None
        if farm is None:
            farm = LocalFarm(*wanted, lease_timeout=lease_timeout)
            _farm = farm
    farm.start()
    return farm


def shutdown(wait: bool = True) -> None:
    """Stops the local farm if the add-on started one."""
    global _farm
    with _farm_lock:
        farm, _farm = _farm, None
    if farm is not None:
        if wait:
            farm.stop()
        else:
            farm.stop_nowait()


atexit.register(shutdown)
