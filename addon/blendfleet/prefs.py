"""Add-on preferences: where the farm is and how the add-on talks to it."""

from __future__ import annotations

import os
import shutil

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

PACKAGE = __package__ or "blendfleet"

PROVIDERS = [
    ("LOCAL", "Local", "The add-on starts a manager and agents on this computer"),
    ("REMOTE", "Manager", "A manager running elsewhere (LAN, or a cloud farm started with `blendfleet cloud up`)"),
    ("AWS", "AWS", "A farm on AWS spot instances, started and stopped from Blender"),
    ("GCP", "GCP", "A farm on Google Cloud spot VMs, started and stopped from Blender"),
]

MISSING_CHOICES = [
    ("ABORT", "Stop", "Do not submit when a file the scene uses is missing"),
    ("RENDER", "Render without", "Submit anyway; the missing files render as Blender renders missing files"),
]

CLOUD_HELP = (
    "Start cloud farm runs `blendfleet cloud up` with this config: a manager on a small "
    "on-demand instance, which starts spot agents while there is work and stops them, and "
    "itself, when idle. Stop cloud farm terminates every instance of the farm. The program "
    "must be built with `--features aws,gcp`; credentials come from the provider's usual "
    "places. Set job_budget_usd in the config to cap each job's spend. See docs/cloud.md."
)


def get(context: bpy.types.Context | None = None) -> "BlendFleetPreferences":
    context = context or bpy.context
    addon = context.preferences.addons.get(PACKAGE)
    if addon is None:
        raise RuntimeError("the BlendFleet add-on is not enabled")
    return addon.preferences  # type: ignore[return-value]


def find_binary(configured: str) -> str | None:
    """The `blendfleet` executable: the configured path, else `PATH`."""
    if configured:
        path = bpy.path.abspath(configured)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which("blendfleet")


class BlendFleetPreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    provider: EnumProperty(name="Farm", items=PROVIDERS, default="LOCAL")  # type: ignore[valid-type]
    connection: StringProperty(  # type: ignore[valid-type]
        name="Connection string",
        description="What `blendfleet manager` prints as `connection:` "
        "(https://USER@HOST:PORT/#ca=sha256:...). Fills address, user and CA fingerprint",
    )
    address: StringProperty(name="Address", description="https://HOST:PORT of the manager")  # type: ignore[valid-type]
    user: StringProperty(name="User", default="admin")  # type: ignore[valid-type]
    password: StringProperty(name="Password", subtype="PASSWORD")  # type: ignore[valid-type]
    ca_fingerprint: StringProperty(  # type: ignore[valid-type]
        name="CA fingerprint", description="sha256:... of the manager's certificate authority"
    )
    local_agents: IntProperty(name="Local agents", default=2, min=1, max=64)  # type: ignore[valid-type]
    agent_threads: IntProperty(  # type: ignore[valid-type]
        name="Threads per agent", default=0, min=0, max=1024,
        description="Render threads of each local agent; 0 divides this computer's cores among them",
    )
    binary: StringProperty(  # type: ignore[valid-type]
        name="blendfleet binary", subtype="FILE_PATH",
        description="Path of the `blendfleet` executable; empty: find it on PATH",
    )
    blender: StringProperty(  # type: ignore[valid-type]
        name="Agents' Blender", subtype="FILE_PATH",
        description="Blender the local agents render with; empty: `blender` on PATH",
    )
    timeout: FloatProperty(  # type: ignore[valid-type]
        name="Network timeout", default=30.0, min=1.0, max=3600.0, unit="TIME_ABSOLUTE",
        description="A render gives up after the manager has not answered for this long",
    )
    idle_stop_minutes: FloatProperty(  # type: ignore[valid-type]
        name="Stop local farm when idle", default=15.0, min=0.0, max=24 * 60.0,
        description="Minutes without a job after which the local farm stops; 0 keeps it running",
    )
    cloud_config: StringProperty(  # type: ignore[valid-type]
        name="Cloud config", subtype="FILE_PATH",
        description="The farm's cloud config (TOML, see docs/cloud.md); empty: "
        "BLENDFLEET_CLOUD_CONFIG, else ~/.config/blendfleet/cloud.toml",
    )
    missing_files: EnumProperty(  # type: ignore[valid-type]
        name="Missing files (background)", items=MISSING_CHOICES, default="ABORT",
        description="What a render started without a user interface does when files are "
        "missing (BLENDFLEET_MISSING=abort|render overrides it); with a user interface, "
        "Blender asks",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "provider", expand=True)
        if self.provider in {"AWS", "GCP"}:
            box = layout.box()
            for index, line in enumerate(_wrap(CLOUD_HELP, 90)):
                box.label(text=line, icon="INFO" if index == 0 else "NONE")
            col = layout.column()
            col.prop(self, "cloud_config")
            row = col.row(align=True)
            row.operator("blendfleet.cloud_up", icon="PLAY")
            row.operator("blendfleet.cloud_status", icon="FILE_REFRESH")
            row.operator("blendfleet.cloud_down", icon="CANCEL")
        elif self.provider == "LOCAL":
            col = layout.column()
            col.prop(self, "local_agents")
            col.prop(self, "agent_threads")
            col.prop(self, "blender")
            col.prop(self, "idle_stop_minutes")
        else:
            col = layout.column()
            row = col.row(align=True)
            row.prop(self, "connection")
            row.operator("blendfleet.apply_connection", text="", icon="CHECKMARK")
            col.prop(self, "address")
            col.prop(self, "user")
            col.prop(self, "password")
            col.prop(self, "ca_fingerprint")
        col = layout.column()
        col.prop(self, "binary")
        if find_binary(self.binary) is None:
            col.label(text="blendfleet not found: set its path or put it on PATH", icon="ERROR")
        col.prop(self, "timeout")
        col.prop(self, "missing_files")
        layout.operator("blendfleet.test_connection", icon="LINKED")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return lines


CLASSES = (BlendFleetPreferences,)
