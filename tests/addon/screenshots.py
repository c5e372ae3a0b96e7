"""Takes the screenshots in docs/img/ with a real local farm (not a test).

    xvfb-run -a -s "-screen 0 1400x900x24" blender --factory-startup \
        --python tests/addon/screenshots.py -- OUT_DIR
Environment: BLENDFLEET_ADDON_ZIP (legacy zip), BLENDFLEET_BIN.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import bpy  # noqa: E402

import assets  # noqa: E402

OUT = sys.argv[sys.argv.index("--") + 1] if "--" in sys.argv else "docs/img"
state: dict = {"phase": "setup", "t0": time.monotonic(), "at": 0.0}


def areas(kind: str):
    window = bpy.context.window_manager.windows[0]
    return window, [a for a in window.screen.areas if a.type == kind]


def shoot(area, name: str) -> None:
    window = bpy.context.window_manager.windows[0]
    path = os.path.abspath(os.path.join(OUT, name))
    with bpy.context.temp_override(window=window, screen=window.screen, area=area,
                                   region=[r for r in area.regions if r.type == "WINDOW"][0]):
        bpy.ops.screen.screenshot_area(filepath=path)
    print("screenshot", path, flush=True)


def setup() -> None:
    tmp = tempfile.mkdtemp(prefix="bf-shots-")
    bpy.ops.preferences.addon_install(filepath=os.environ["BLENDFLEET_ADDON_ZIP"], overwrite=True)
    bpy.ops.preferences.addon_enable(module="blendfleet")
    prefs = bpy.context.preferences.addons["blendfleet"].preferences
    prefs.binary = os.environ["BLENDFLEET_BIN"]
    prefs.local_agents = 2
    prefs.agent_threads = 1
    tex = assets.write_png(os.path.join(tmp, "proj", "tex.png"), (0.9, 0.5, 0.1), size=16)
    bpy.ops.wm.read_factory_settings(use_empty=False)
    scene = bpy.context.scene
    cube = bpy.data.objects.get("Cube")
    cube.data.materials.clear()
    cube.data.materials.append(assets.textured_material("Tex", bpy.data.images.load(tex)))
    scene.cycles.samples = 64
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = 320, 240
    assets.save(os.path.join(tmp, "proj", "shot.blend"))
    scene.render.engine = "BLENDFLEET"
    bpy.context.preferences.view.render_display_type = "NONE"
    window, props = areas("PROPERTIES")
    for space in props[0].spaces:
        if space.type == "PROPERTIES":
            space.context = "RENDER"


def drive() -> float | None:
    now = time.monotonic()
    if now - state["t0"] > 240:
        print("screenshots: timed out", flush=True)
        harness.finish(1)
    phase = state["phase"]
    if phase == "setup":
        setup()
        state["phase"] = "render"
    elif phase == "render":
        window = bpy.context.window_manager.windows[0]
        view3d = areas("VIEW_3D")[1][0]
        view3d.ui_type = "IMAGE_EDITOR"
        with bpy.context.temp_override(window=window, screen=window.screen, area=view3d):
            bpy.ops.render.render("INVOKE_DEFAULT")
        state["phase"] = "wait"
    elif phase == "wait":
        engine = sys.modules["blendfleet.engine"]
        if bpy.context.scene.blendfleet.job_id and not engine._active and not bpy.app.is_job_running("RENDER"):
            bpy.ops.blendfleet.refresh()
            state["phase"], state["at"] = "shoot", now + 3.0
    elif phase == "shoot" and now >= state["at"]:
        image_area = areas("IMAGE_EDITOR")[1][0]
        image_area.spaces[0].image = bpy.data.images["Render Result"]
        shoot(image_area, "addon-render-result.png")
        shoot(areas("PROPERTIES")[1][0], "addon-panel.png")
        window, outliner = areas("OUTLINER")
        area = outliner[0]
        area.ui_type = "PREFERENCES"
        bpy.context.preferences.active_section = "ADDONS"
        bpy.context.window_manager.addon_search = "BlendFleet"
        bpy.ops.preferences.addon_expand(module="blendfleet")
        state["phase"], state["at"], state["area"] = "prefs", now + 1.0, area
    elif phase == "prefs" and now >= state["at"]:
        shoot(state["area"], "addon-preferences.png")
        sys.modules["blendfleet.farm"].shutdown()
        harness.finish(0)
    return 0.2


bpy.app.timers.register(drive, first_interval=1.0)
