"""Asking the user what to do about missing files, before anything is uploaded."""

from __future__ import annotations

import bpy

from . import deps, jobs

_pending: dict[str, object] = {}


def ask(missing: list[deps.Dependency]) -> jobs.Outcome:
    """Opens the dialog (main thread); the outcome becomes True (render without them) or
    False (stop) when the user answers."""
    outcome = jobs.Outcome()
    _pending["outcome"] = outcome
    _pending["files"] = [f"{d.path}  ({d.owner})" for d in missing]
    wm = bpy.context.window_manager
    window = wm.windows[0] if wm and wm.windows else None
    try:
        if window is not None and hasattr(bpy.context, "temp_override"):
            with bpy.context.temp_override(window=window, screen=window.screen):
                bpy.ops.blendfleet.missing_files("INVOKE_DEFAULT")
        else:
            bpy.ops.blendfleet.missing_files("INVOKE_DEFAULT")
    except Exception as error:  # no window to ask in: stop, as in background mode
        print(f"BlendFleet: cannot ask about missing files ({error}); stopping")
        answer(False)
    return outcome


def answer(render_without: bool) -> None:
    outcome = _pending.pop("outcome", None)
    if isinstance(outcome, jobs.Outcome) and not outcome.done.is_set():
        outcome.value = render_without
        outcome.done.set()


class BLENDFLEET_OT_missing_files(bpy.types.Operator):
    """Files the scene uses are missing: render without them, or stop"""

    bl_idname = "blendfleet.missing_files"
    bl_label = "Missing files"
    bl_options = {"INTERNAL"}

    def invoke(self, context, event):  # noqa: ANN001
        return context.window_manager.invoke_props_dialog(self, width=600)

    def draw(self, context):  # noqa: ANN001
        layout = self.layout
        files = _pending.get("files") or []
        layout.label(text=f"{len(files)} file(s) the scene uses are missing; nothing has been uploaded:", icon="ERROR")
        for line in files[:20]:
            layout.label(text=line)
        if len(files) > 20:
            layout.label(text=f"... and {len(files) - 20} more")
        layout.label(text="OK renders without them; press Esc or move away to stop.")

    def execute(self, context):  # noqa: ANN001
        answer(True)
        return {"FINISHED"}

    def cancel(self, context):  # noqa: ANN001
        answer(False)


class BLENDFLEET_OT_check_files(bpy.types.Operator):
    """List the files a farm render of this scene would upload, and any that are missing"""

    bl_idname = "blendfleet.check_files"
    bl_label = "Check files"

    def execute(self, context):  # noqa: ANN001
        found = deps.collect(context.scene)
        for dep in found.missing:
            self.report({"WARNING"}, f"missing: {dep.path} ({dep.owner})")
        for note in found.notes:
            self.report({"WARNING"}, note)
        self.report({"INFO"}, f"{len(found.present)} file(s) to upload, {len(found.missing)} missing")
        return {"FINISHED"}


CLASSES = (BLENDFLEET_OT_missing_files, BLENDFLEET_OT_check_files)
