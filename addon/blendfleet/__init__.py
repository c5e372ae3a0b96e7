"""BlendFleet: render on a BlendFleet farm from Blender (F12 / Ctrl+F12).

Choose "BlendFleet" as the render engine; the scene's settings are Cycles'. See
docs/addon.md in the BlendFleet repository.
"""

from __future__ import annotations

bl_info = {
    "name": "BlendFleet",
    "author": "BlendFleet developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Properties > Render > Render Engine: BlendFleet",
    "description": "Render Cycles scenes on a BlendFleet farm, with live preview",
    "doc_url": "https://github.com/blendfleet/blendfleet/blob/main/docs/addon.md",
    "category": "Render",
}

import time  # noqa: E402

import bpy  # noqa: E402
from bpy.app.handlers import persistent  # noqa: E402

from . import cloud_ops, engine, farm, jobs, missing, panels, prefs  # noqa: E402

IDLE_CHECK_SECONDS = 30.0


@persistent
def _on_load(_dummy=None) -> None:  # noqa: ANN001
    """After a file loads: offer to reattach to its running job; stop an idle local farm."""
    scene = bpy.context.scene
    job_id = scene.blendfleet.job_id if scene is not None else 0
    if job_id:
        panels.STATE.message = f"This file has farm job {job_id}: Reattach in Render properties > BlendFleet Farm"
        local = farm.current()
        try:
            local_farm = prefs.get().provider == "LOCAL"
        except RuntimeError:
            return
        # Reading the job's state would start a stopped local farm: leave that to Reattach.
        if not bpy.app.background and (not local_farm or (local is not None and local.running)):
            try:
                panels.refresh(bpy.context, job_id)
            except Exception as error:  # noqa: BLE001 - an offer, not a requirement
                print(f"BlendFleet: cannot read job {job_id}: {error}")


def _idle_check() -> float:
    """Stops the local farm after the configured idle time without a render."""
    local = farm.current()
    try:
        minutes = prefs.get().idle_stop_minutes
    except RuntimeError:
        return IDLE_CHECK_SECONDS
    if local is not None and local.running and minutes > 0 and not engine._active:
        if time.monotonic() - local.last_used > minutes * 60:
            jobs.run_in_thread(farm.shutdown, name="blendfleet-idle-stop")
    return IDLE_CHECK_SECONDS


def _on_quit() -> None:
    farm.shutdown(wait=True)


CLASSES = prefs.CLASSES + missing.CLASSES + panels.CLASSES + cloud_ops.CLASSES


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.blendfleet = bpy.props.PointerProperty(type=panels.BlendFleetSceneSettings)
    engine.register()
    jobs.register()
    bpy.app.handlers.load_post.append(_on_load)
    if hasattr(bpy.app.handlers, "exit_pre"):
        bpy.app.handlers.exit_pre.append(_exit_handler)
    bpy.app.timers.register(_idle_check, first_interval=IDLE_CHECK_SECONDS, persistent=True)


@persistent
def _exit_handler(_dummy=None) -> None:  # noqa: ANN001
    _on_quit()


def unregister() -> None:
    if bpy.app.timers.is_registered(_idle_check):
        bpy.app.timers.unregister(_idle_check)
    if _on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load)
    if hasattr(bpy.app.handlers, "exit_pre") and _exit_handler in bpy.app.handlers.exit_pre:
        bpy.app.handlers.exit_pre.remove(_exit_handler)
    jobs.unregister()
    engine.unregister()
    del bpy.types.Scene.blendfleet
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    farm.shutdown(wait=True)
