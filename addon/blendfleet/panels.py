"""The BlendFleet panel (Render properties) and its operators: the farm's jobs and agents,
refresh, cancel, download, reattach, and the local farm's start and stop.

Every farm call runs in a worker thread; results land in `STATE` on the main thread and
the panel redraws."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import bpy
from bpy.props import IntProperty, StringProperty

from . import cloud, connection, engine, farm, jobs
from . import prefs as prefs_module


@dataclass
class FarmState:
    jobs: list[dict] = field(default_factory=list)
    agents: list[dict] = field(default_factory=list)
    message: str = "Not connected yet: press Refresh"
    busy: str = ""
    refreshed_at: float = 0.0
    saved_job: dict | None = None  # status of the scene's saved job, after a refresh


STATE = FarmState()


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in wm.windows if wm else []:
        for area in window.screen.areas:
            if area.type in {"PROPERTIES", "IMAGE_EDITOR"}:
                area.tag_redraw()


def _settings(context: bpy.types.Context) -> connection.Settings:
    return connection.Settings.from_prefs(prefs_module.get(context))


def refresh(context: bpy.types.Context, saved_job: int = 0) -> None:
    """Reads jobs and agents in a thread; the panel shows them when they arrive."""
    if STATE.busy:
        return
    settings = _settings(context)
    STATE.busy = "Reading the farm"

    def work() -> tuple[list, list, Any]:
        client = connection.connect(settings)
        saved = None
        if saved_job:
            try:
                saved = client.job(saved_job)
            except Exception as error:  # noqa: BLE001 - shown to the user
                saved = {"id": saved_job, "state": "unknown", "error": str(error)}
        return client.jobs(), client.agents(), saved

    def done(outcome: jobs.Outcome) -> None:
        STATE.busy = ""
        STATE.refreshed_at = time.time()
        if outcome.error is not None:
            STATE.message = f"Farm not reachable: {outcome.error}"
        else:
            STATE.jobs, STATE.agents, STATE.saved_job = outcome.value
            STATE.message = f"{len(STATE.jobs)} job(s), {len(STATE.agents)} agent(s)"
        _redraw()

    jobs.run_in_thread(work, on_done=done, name="blendfleet-refresh")


class BLENDFLEET_OT_refresh(bpy.types.Operator):
    """Read the farm's jobs and agents"""

    bl_idname = "blendfleet.refresh"
    bl_label = "Refresh"

    def execute(self, context):  # noqa: ANN001
        refresh(context, context.scene.blendfleet.job_id)
        return {"FINISHED"}


class BLENDFLEET_OT_cancel_job(bpy.types.Operator):
    """Cancel this job on the farm"""

    bl_idname = "blendfleet.cancel_job"
    bl_label = "Cancel job"
    job_id: IntProperty()  # type: ignore[valid-type]

    def execute(self, context):  # noqa: ANN001
        settings, job_id = _settings(context), self.job_id
        STATE.busy = f"Cancelling job {job_id}"

        def done(outcome: jobs.Outcome) -> None:
            STATE.busy = ""
            STATE.message = f"Job {job_id} cancelled" if outcome.error is None else f"Cancel failed: {outcome.error}"
            refresh(bpy.context, bpy.context.scene.blendfleet.job_id)

        jobs.run_in_thread(lambda: connection.connect(settings).cancel(job_id), on_done=done)
        return {"FINISHED"}


class BLENDFLEET_OT_download_job(bpy.types.Operator):
    """Download every finished frame of this job as multilayer EXR next to the scene's output"""

    bl_idname = "blendfleet.download_job"
    bl_label = "Download frames"
    job_id: IntProperty()  # type: ignore[valid-type]

    def execute(self, context):  # noqa: ANN001
        settings, job_id = _settings(context), self.job_id
        base = bpy.path.abspath(os.path.dirname(context.scene.render.filepath) or "//")
        target = os.path.join(base or os.getcwd(), f"blendfleet_job_{job_id}")
        STATE.busy = f"Downloading job {job_id}"

        def work() -> int:
            client = connection.connect(settings)
            status = client.job(job_id)
            os.makedirs(target, exist_ok=True)
            count = 0
            for frame in status["frames"]:
                if frame["state"] == "done":
                    client.download_exr(job_id, frame["frame"], os.path.join(target, "frame_%04d.exr" % frame["frame"]))
                    count += 1
            return count

        def done(outcome: jobs.Outcome) -> None:
            STATE.busy = ""
            STATE.message = (f"Downloaded {outcome.value} frame(s) to {target}" if outcome.error is None
                             else f"Download failed: {outcome.error}")
            _redraw()

        jobs.run_in_thread(work, on_done=done, name="blendfleet-download")
        return {"FINISHED"}


class BLENDFLEET_OT_reattach(bpy.types.Operator):
    """Follow the scene's farm job again: its preview, progress and result come into the render window"""

    bl_idname = "blendfleet.reattach"
    bl_label = "Reattach"
    job_id: IntProperty()  # type: ignore[valid-type]

    def execute(self, context):  # noqa: ANN001
        scene = context.scene
        job_id = self.job_id or scene.blendfleet.job_id
        if not job_id:
            self.report({"ERROR"}, "this scene has no farm job to reattach to")
            return {"CANCELLED"}
        if scene.render.engine != engine.ENGINE_ID:
            scene.render.engine = engine.ENGINE_ID
        frames = [int(f) for f in scene.blendfleet.job_frames.split(",") if f.strip()] or [scene.frame_current]
        engine.request_reattach(scene.name, job_id)
        animation = len(frames) > 1
        if not animation:
            scene.frame_current = frames[0]
        mode = "EXEC_DEFAULT" if bpy.app.background else "INVOKE_DEFAULT"
        bpy.ops.render.render(mode, animation=animation)
        return {"FINISHED"}


class BLENDFLEET_OT_forget_job(bpy.types.Operator):
    """Forget the scene's saved farm job (the job stays on the farm)"""

    bl_idname = "blendfleet.forget_job"
    bl_label = "Forget"

    def execute(self, context):  # noqa: ANN001
        context.scene.blendfleet.job_id = 0
        context.scene.blendfleet.job_frames = ""
        STATE.saved_job = None
        return {"FINISHED"}


class BLENDFLEET_OT_farm_start(bpy.types.Operator):
    """Start the local farm (a manager and its agents on this computer)"""

    bl_idname = "blendfleet.farm_start"
    bl_label = "Start local farm"

    def execute(self, context):  # noqa: ANN001
        settings = _settings(context)
        STATE.busy = "Starting the local farm"

        def done(outcome: jobs.Outcome) -> None:
            STATE.busy = ""
            STATE.message = "Local farm started" if outcome.error is None else f"Local farm: {outcome.error}"
            if outcome.error is None:
                refresh(bpy.context)
            _redraw()

        jobs.run_in_thread(connection.connect, settings, on_done=done, name="blendfleet-farm")
        return {"FINISHED"}


class BLENDFLEET_OT_farm_stop(bpy.types.Operator):
    """Stop the local farm; jobs stay in its state and continue at the next start"""

    bl_idname = "blendfleet.farm_stop"
    bl_label = "Stop local farm"

    def execute(self, context):  # noqa: ANN001
        STATE.busy = "Stopping the local farm"

        def done(_outcome: jobs.Outcome) -> None:
            STATE.busy = ""
            STATE.message = "Local farm stopped"
            STATE.agents = []
            _redraw()

        jobs.run_in_thread(farm.shutdown, on_done=done, name="blendfleet-farm-stop")
        return {"FINISHED"}


class BLENDFLEET_OT_test_connection(bpy.types.Operator):
    """Connect to the farm and show what it says"""

    bl_idname = "blendfleet.test_connection"
    bl_label = "Test connection"

    def execute(self, context):  # noqa: ANN001
        settings = _settings(context)
        STATE.busy = "Testing the connection"

        def done(outcome: jobs.Outcome) -> None:
            STATE.busy = ""
            if outcome.error is None:
                info = outcome.value
                STATE.message = f"Connected: {info.get('server')} {info.get('version')}, {info.get('agents_online')} agent(s) online"
            else:
                STATE.message = f"Connection failed: {outcome.error}"
            _redraw()

        jobs.run_in_thread(lambda: connection.connect(settings).info(), on_done=done)
        return {"FINISHED"}


class BLENDFLEET_OT_apply_connection(bpy.types.Operator):
    """Fill address, user and CA fingerprint from the connection string"""

    bl_idname = "blendfleet.apply_connection"
    bl_label = "Use connection string"

    def execute(self, context):  # noqa: ANN001
        p = prefs_module.get(context)
        try:
            url, user, fingerprint = farm.split_connection_string(p.connection)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        p.address, p.user, p.ca_fingerprint = url, user, fingerprint
        return {"FINISHED"}


def _progress(job: dict) -> str:
    total = job.get("samples_total") or 0
    return "%d%%" % (100 * (job.get("samples_done") or 0) // total) if total else "-"


class BLENDFLEET_PT_farm(bpy.types.Panel):
    bl_label = "BlendFleet Farm"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    COMPAT_ENGINES = {engine.ENGINE_ID}

    @classmethod
    def poll(cls, context):  # noqa: ANN001
        return context.engine in cls.COMPAT_ENGINES

    def draw(self, context):  # noqa: ANN001
        layout = self.layout
        p = prefs_module.get(context)
        row = layout.row()
        row.label(text=f"Farm: {dict((k, n) for k, n, _ in prefs_module.PROVIDERS)[p.provider]}")
        if p.provider == "LOCAL":
            local = farm.current()
            if local is not None and local.running and local.connection:
                row.label(text=f"running at {local.connection.url}", icon="CHECKMARK")
                row.operator("blendfleet.farm_stop", text="", icon="CANCEL")
            else:
                row.label(text="stopped")
                row.operator("blendfleet.farm_start", text="", icon="PLAY")
        elif p.provider in {"AWS", "GCP"}:
            row.operator("blendfleet.cloud_up", text="", icon="PLAY")
            row.operator("blendfleet.cloud_status", text="", icon="WORLD")
            row.operator("blendfleet.cloud_down", text="", icon="CANCEL")
        row.operator("blendfleet.refresh", text="", icon="FILE_REFRESH")
        layout.label(text=STATE.busy or STATE.message, icon="TIME" if STATE.busy else "INFO")
        if engine.last_error:
            layout.label(text=engine.last_error[:200], icon="ERROR")

        saved = context.scene.blendfleet.job_id
        if saved:
            box = layout.box()
            status = STATE.saved_job or {}
            state = status.get("state", "press Refresh for its state")
            box.label(text=f"This scene's farm job: {saved} ({state})", icon="RENDER_RESULT")
            spend = cloud.job_spend(status)
            if spend:
                box.label(text=spend, icon="FUND")
            row = box.row()
            op = row.operator("blendfleet.reattach", icon="LINKED")
            op.job_id = saved
            op = row.operator("blendfleet.download_job", icon="IMPORT")
            op.job_id = saved
            row.operator("blendfleet.forget_job", icon="X")

        box = layout.box()
        box.label(text="Jobs")
        if not STATE.jobs:
            box.label(text="none")
        for job in STATE.jobs[:12]:
            row = box.row(align=True)
            row.label(text=f"{job['id']}  {job['name']}")
            row.label(text=f"{job['state']} {_progress(job)}")
            if job["state"] in {"created", "queued", "running"}:
                row.operator("blendfleet.cancel_job", text="", icon="X").job_id = job["id"]
            row.operator("blendfleet.download_job", text="", icon="IMPORT").job_id = job["id"]
        box = layout.box()
        box.label(text="Agents")
        if not STATE.agents:
            box.label(text="none")
        for agent in STATE.agents[:16]:
            row = box.row()
            row.label(text=str(agent.get("name", agent.get("id"))))
            row.label(text=str(agent.get("state", "")))
            row.label(text=f"{agent.get('threads', '')} threads")
        layout.operator("blendfleet.check_files", icon="FILE_FOLDER")


class BlendFleetSceneSettings(bpy.types.PropertyGroup):
    job_id: IntProperty(name="Farm job", description="The farm job this scene last rendered with", min=0)  # type: ignore[valid-type]
    job_url: StringProperty(name="Manager")  # type: ignore[valid-type]
    job_frames: StringProperty(name="Frames")  # type: ignore[valid-type]


CLASSES = (
    BlendFleetSceneSettings,
    BLENDFLEET_OT_refresh,
    BLENDFLEET_OT_cancel_job,
    BLENDFLEET_OT_download_job,
    BLENDFLEET_OT_reattach,
    BLENDFLEET_OT_forget_job,
    BLENDFLEET_OT_farm_start,
    BLENDFLEET_OT_farm_stop,
    BLENDFLEET_OT_test_connection,
    BLENDFLEET_OT_apply_connection,
    BLENDFLEET_PT_farm,
)
