"""The settings a farm call needs, read once on the main thread, and the client they make."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from . import cloud, farm, fleetpy


class SetupError(Exception):
    """The add-on is not set up to reach a farm; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    provider: str
    connection: str
    address: str
    user: str
    password: str
    ca_fingerprint: str
    binary: str | None
    agents: int
    threads: int
    blender: str
    timeout: float
    idle_stop_minutes: float
    missing_files: str
    cloud_config: str = ""

    @staticmethod
    def from_prefs(prefs: Any) -> "Settings":
        from . import prefs as prefs_module

        import bpy

        missing = os.environ.get("BLENDFLEET_MISSING", "").strip().upper()
        return Settings(
            provider=prefs.provider,
            connection=prefs.connection.strip(),
            address=prefs.address.strip(),
            user=prefs.user.strip(),
            password=prefs.password,
            ca_fingerprint=prefs.ca_fingerprint.strip(),
            binary=prefs_module.find_binary(prefs.binary),
            agents=prefs.local_agents,
            threads=prefs.agent_threads,
            blender=bpy.path.abspath(prefs.blender) if prefs.blender else "",
            timeout=prefs.timeout,
            idle_stop_minutes=prefs.idle_stop_minutes,
            missing_files=missing if missing in {"ABORT", "RENDER"} else prefs.missing_files,
            cloud_config=bpy.path.abspath(prefs.cloud_config) if prefs.cloud_config else "",
        )


def connect(settings: Settings) -> Any:
    """A `blendfleet_py.Client` for the configured farm; starts the local farm when that is
    the farm. Blocking: call from a worker thread."""
    module = fleetpy.load()
    if settings.provider == "LOCAL":
        local = farm.ensure(require_binary(settings), settings.agents, settings.threads, settings.blender)
        local.last_used = time.monotonic()
        assert local.connection is not None
        c = local.connection
        return module.Client(c.url, c.user, c.password, c.ca_fingerprint, timeout=settings.timeout)
    if settings.provider == "REMOTE":
        if not settings.password:
            raise SetupError("no password: enter the manager's password in the add-on's preferences")
        if settings.connection:
            return module.Client.from_connection_string(
                settings.connection, settings.password, timeout=settings.timeout
            )
        if not (settings.address and settings.user and settings.ca_fingerprint):
            raise SetupError(
                "the manager is not configured: paste its connection string, or fill address, "
                "user and CA fingerprint in the add-on's preferences"
            )
        return module.Client(settings.address, settings.user, settings.password,
                             settings.ca_fingerprint, timeout=settings.timeout)
    saved = cloud_connection(settings)
    return module.Client.from_connection_string(
        saved["connection"], saved["password"], timeout=settings.timeout
    )


def require_binary(settings: Settings) -> str:
    if settings.binary is None:
        raise SetupError(
            "the `blendfleet` program was not found: set its path in the add-on's "
            "preferences or put it on PATH"
        )
    return settings.binary


def cloud_connection(settings: Settings) -> dict:
    """The connection `blendfleet cloud up` saved for the configured cloud farm."""
    binary = require_binary(settings)
    try:
        saved = cloud.saved_connection(binary, settings.cloud_config)
    except cloud.CloudError as error:
        raise SetupError(f"{error}; or press Start cloud farm in the add-on's preferences") from error
    chosen = settings.provider.lower()
    if saved.get("provider") != chosen:
        raise SetupError(
            f"the cloud config's farm `{saved.get('farm')}` runs on {saved.get('provider')}, "
            f"but {settings.provider} is chosen in the add-on's preferences"
        )
    return saved
