"""Operators that start, inspect and stop a cloud farm from Blender, through `blendfleet
cloud` (see `cloud.py`). Each runs in a worker thread; its progress lines and outcome show
in the BlendFleet panel's status line."""

from __future__ import annotations

import bpy

from . import cloud, connection, jobs
from .panels import STATE, _redraw, _settings, refresh


def _progress(line: str) -> None:
    # A worker thread only hands the line over; the panel reads it on the main thread.
    jobs.post_to_main(lambda: _show_progress(line))


def _show_progress(line: str) -> None:
    STATE.busy = line[:200]
    _redraw()


def _start(operator: bpy.types.Operator, context: bpy.types.Context, busy: str, work, done) -> set:  # noqa: ANN001
    if STATE.busy:
        operator.report({"WARNING"}, f"BlendFleet is busy: {STATE.busy}")
        return {"CANCELLED"}
    settings = _settings(context)
    try:
        binary = connection.require_binary(settings)
    except connection.SetupError as error:
        operator.report({"ERROR"}, str(error))
        return {"CANCELLED"}
    STATE.busy = busy

    def finished(outcome: jobs.Outcome) -> None:
        STATE.busy = ""
        done(outcome)
        _redraw()

    jobs.run_in_thread(work, binary, settings.cloud_config, on_done=finished, name="blendfleet-cloud")
    return {"FINISHED"}


class BLENDFLEET_OT_cloud_up(bpy.types.Operator):
    """Start the cloud farm's manager (`blendfleet cloud up`); it starts agents while there is work"""

    bl_idname = "blendfleet.cloud_up"
    bl_label = "Start cloud farm"

    def execute(self, context):  # noqa: ANN001
        def done(outcome: jobs.Outcome) -> None:
            if outcome.error is not None:
                STATE.message = f"Cloud farm did not start: {outcome.error}"
                return
            saved = outcome.value
            STATE.message = f"Cloud farm `{saved.get('farm')}` is up: {saved.get('url')}"
            refresh(bpy.context)

        return _start(self, context, "Starting the cloud farm's manager (this takes minutes)",
                      lambda binary, config: cloud.up(binary, config, _progress), done)


class BLENDFLEET_OT_cloud_status(bpy.types.Operator):
    """Show the cloud farm's instances and spend (`blendfleet cloud status`)"""

    bl_idname = "blendfleet.cloud_status"
    bl_label = "Cloud farm status"

    def execute(self, context):  # noqa: ANN001
        def done(outcome: jobs.Outcome) -> None:
            STATE.message = (f"Cloud farm: {cloud.summary(outcome.value)}" if outcome.error is None
                             else f"Cloud farm status failed: {outcome.error}")

        return _start(self, context, "Reading the cloud farm", cloud.status, done)


class BLENDFLEET_OT_cloud_down(bpy.types.Operator):
    """Terminate every instance of the cloud farm, agents and manager (`blendfleet cloud down`)"""

    bl_idname = "blendfleet.cloud_down"
    bl_label = "Stop cloud farm"

    def invoke(self, context, event):  # noqa: ANN001
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):  # noqa: ANN001
        def done(outcome: jobs.Outcome) -> None:
            if outcome.error is not None:
                STATE.message = f"Stopping the cloud farm failed: {outcome.error}"
                return
            STATE.message = f"Cloud farm stopped: {len(outcome.value)} instance(s) terminated"
            STATE.jobs, STATE.agents = [], []

        return _start(self, context, "Stopping the cloud farm",
                      lambda binary, config: cloud.down(binary, config, _progress), done)


CLASSES = (BLENDFLEET_OT_cloud_up, BLENDFLEET_OT_cloud_status, BLENDFLEET_OT_cloud_down)
