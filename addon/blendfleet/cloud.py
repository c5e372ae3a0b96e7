"""Cloud farms from Blender: `blendfleet cloud up | status | down | connection` run as child
processes with `--json`.

The `blendfleet` program does the cloud work (it holds the AWS and GCP clients and reads the
credentials of each SDK's default chain); the add-on only starts it, shows its progress
lines, and reads the JSON it prints. `up` saves the manager's connection (address, user,
password, CA fingerprint read through the cloud's API) in the user's config directory, mode
0600; renders read it back with `connection`, so a farm started from a terminal works from
Blender too, and the password is not stored in Blender's preferences.

Every call here blocks: run it off Blender's main thread.
"""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Any, Callable

# `up` waits up to 20 minutes for the manager to boot and publish its fingerprint.
UP_TIMEOUT = 30 * 60.0
DOWN_TIMEOUT = 15 * 60.0
QUICK_TIMEOUT = 120.0


class CloudError(Exception):
    """A `blendfleet cloud` command failed; the message is the program's own."""


def command(binary: str, action: str, config: str) -> list[str]:
    """The command line of `blendfleet cloud <action>` for a config (empty: the default)."""
    args = [binary, "cloud", action, "--json"]
    if config:
        args += ["--config", config]
    return args


def run(binary: str, action: str, config: str, progress: Callable[[str], None] | None = None,
        timeout: float = QUICK_TIMEOUT) -> Any:
    """Runs `blendfleet cloud <action> --json`; returns the JSON it printed. Each line it
    writes to stderr goes to `progress` as it comes. Raises CloudError with the program's
    error message when it fails."""
    try:
        process = subprocess.Popen(
            command(binary, action, config),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace",
        )
    except OSError as error:
        raise CloudError(f"could not run `{binary}`: {error}") from error
    lines: list[str] = []

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            line = line.rstrip("\n")
            lines.append(line)
            if progress is not None and line.strip():
                progress(line.strip())

    reader = threading.Thread(target=read_stderr, name="blendfleet-cloud-stderr", daemon=True)
    reader.start()
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        assert process.stdout is not None
        stdout = process.stdout.read()
        process.wait()
    finally:
        timer.cancel()
    # Every progress line is handed over before the outcome.
    reader.join()
    if timed_out.is_set():
        raise CloudError(f"`blendfleet cloud {action}` did not finish within {timeout / 60:.0f} minutes")
    if process.returncode != 0:
        raise CloudError(error_message(lines) or f"`blendfleet cloud {action}` failed "
                                                 f"(exit status {process.returncode})")
    try:
        return json.loads(stdout)
    except ValueError as error:
        raise CloudError(f"`blendfleet cloud {action}` printed something that is not JSON: {error}") from error


def error_message(stderr_lines: list[str]) -> str:
    """The program's error (`error: …` and its `caused by:` lines), else its last line."""
    for index, line in enumerate(stderr_lines):
        if line.startswith("error: "):
            return " ".join(part.strip() for part in stderr_lines[index:] if part.strip())[len("error: "):]
    rest = [line.strip() for line in stderr_lines if line.strip()]
    return rest[-1] if rest else ""


def up(binary: str, config: str, progress: Callable[[str], None] | None = None) -> dict:
    """Starts the farm's manager; returns its saved connection (`connection`, `password`,
    `ca_fingerprint`, `farm`, `provider`)."""
    return run(binary, "up", config, progress, timeout=UP_TIMEOUT)


def status(binary: str, config: str) -> dict:
    """The farm's instances and, when its manager answers, its spend (`instances`, `farm`,
    `manager_error`)."""
    return run(binary, "status", config)


def down(binary: str, config: str, progress: Callable[[str], None] | None = None) -> list:
    """Terminates every instance of the farm; returns the instances it terminated."""
    return run(binary, "down", config, progress, timeout=DOWN_TIMEOUT)


def saved_connection(binary: str, config: str) -> dict:
    """The connection `up` saved for the farm of this config."""
    return run(binary, "connection", config)


def summary(status_value: dict) -> str:
    """One line about a farm: instances by role, and spend when the manager answered."""
    instances = status_value.get("instances") or []
    managers = sum(1 for i in instances if i.get("role") == "manager")
    agents = sum(1 for i in instances if i.get("role") == "agent")
    text = f"{managers} manager, {agents} agent instance(s)" if instances else "no instances running"
    farm_value = status_value.get("farm")
    if farm_value:
        text += f"; spend so far ${farm_value.get('total_cost_micro_usd', 0) / 1e6:.2f}"
    elif status_value.get("manager_error"):
        text += f"; manager not reachable: {status_value['manager_error']}"
    return text


def job_spend(status_value: dict) -> str:
    """A job's estimated cloud cost and budget, from its status; empty when it has none."""
    spend = status_value.get("spend")
    if not spend:
        return ""
    text = f"cloud cost so far ${spend.get('cost_micro_usd', 0) / 1e6:.2f}"
    budget = spend.get("budget_micro_usd")
    if budget is not None:
        text += f" of a ${budget / 1e6:.2f} budget"
        if spend.get("budget_reached"):
            text += " (reached: no more agents for this job)"
    return text
