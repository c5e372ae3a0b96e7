"""Takes the screenshots in docs/img/ with a real local farm (not a test).

    blender -b --factory-startup --python-expr \
        "import bpy; bpy.ops.wm.save_as_mainfile(filepath='/tmp/start.blend')"
    xvfb-run -a -s "-screen 0 1200x800x24" blender --factory-startup /tmp/start.blend \
        --python tests/addon/screenshots.py -- OUT_DIR
(opening a file on the command line keeps the splash screen away)
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
    tex = assets.write_png(os.path.join(tmp, "proj", "tex.png"), (0.9, 0.5, 0.1), size=16)
    bpy.ops.preferences.addon_install(filepath=os.environ["BLENDFLEET_ADDON_ZIP"], overwrite=True)
    bpy.ops.preferences.addon_enable(module="blendfleet")
    prefs = bpy.context.preferences.addons["blendfleet"].preferences
    prefs.binary = os.environ["BLENDFLEET_BIN"]
    prefs.local_agents = 2
    prefs.agent_threads = 1
    scene = bpy.context.scene
    cube = bpy.data.objects.get("Cube")
    cube.data.materials.clear()
    cube.data.materials.append(assets.textured_material("Tex", bpy.data.images.load(tex)))
    scene.cycles.samples = 64
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = 320, 240
    scene.view_settings.view_transform = "Standard"
    assets.save(os.path.join(tmp, "proj", "shot.blend"))
    scene.render.engine = "BLENDFLEET"
    bpy.context.preferences.view.render_display_type = "NONE"
    window, props = areas("PROPERTIES")
    for space in props[0].spaces:
        if space.type == "PROPERTIES":
            space.context = "RENDER"


def drive() -> float | None:
    try:
        return step()
    except Exception:
        import traceback

        traceback.print_exc()
        harness.finish(1)
    return None


def full_window_shot(area, name: str) -> None:
    """Maximises `area`, and the next step shoots the whole window."""
    window = bpy.context.window_manager.windows[0]
    with bpy.context.temp_override(window=window, screen=window.screen, area=area):
        bpy.ops.screen.screen_full_area()
    state["shot"] = name


def shoot_window(name: str) -> None:
    window = bpy.context.window_manager.windows[0]
    path = os.path.abspath(os.path.join(OUT, name))
    with bpy.context.temp_override(window=window, screen=window.screen):
        bpy.ops.screen.screenshot(filepath=path)
        bpy.ops.screen.back_to_previous()
    print("screenshot", path, flush=True)


def step() -> float | None:
    now = time.monotonic()
    if now - state["t0"] > 240:
        print("screenshots: timed out", flush=True)
        harness.finish(1)
    phase = state["phase"]
    if now < state["at"]:
        return 0.2
    state["at"] = now + 2.0
    if phase == "setup":
        setup()
        state["phase"] = "render"
    elif phase == "render":
        window = bpy.context.window_manager.windows[0]
        for space in areas("PROPERTIES")[1][0].spaces:
            if space.type == "PROPERTIES":
                space.context = "RENDER"
        view3d = areas("VIEW_3D")[1][0]
        view3d.ui_type = "IMAGE_EDITOR"
        with bpy.context.temp_override(window=window, screen=window.screen, area=view3d):
            bpy.ops.render.render("INVOKE_DEFAULT")
        state["phase"] = "wait"
    elif phase == "wait":
        engine = sys.modules["blendfleet.engine"]
        if bpy.context.scene.blendfleet.job_id and not engine._active and not bpy.app.is_job_running("RENDER"):
            bpy.ops.blendfleet.refresh()
            image_area = areas("IMAGE_EDITOR")[1][0]
            image_area.spaces[0].image = bpy.data.images["Render Result"]
            state["phase"] = "result"
        else:
            state["at"] = now + 0.5
    elif phase == "result":
        full_window_shot(areas("IMAGE_EDITOR")[1][0], "addon-render-result.png")
        state["phase"] = "result-shot"
    elif phase == "result-shot":
        shoot_window(state["shot"])
        state["phase"] = "panel"
    elif phase == "panel":
        full_window_shot(areas("PROPERTIES")[1][0], "addon-panel.png")
        state["phase"] = "panel-scroll"
    elif phase == "panel-scroll":
        window = bpy.context.window_manager.windows[0]
        area = next(a for a in window.screen.areas if a.type == "PROPERTIES")
        region = next(r for r in area.regions if r.type == "WINDOW")
        with bpy.context.temp_override(window=window, screen=window.screen, area=area, region=region):
            for _ in range(3):
                bpy.ops.view2d.scroll_down(page=True)
        state["phase"] = "panel-shot"
    elif phase == "panel-shot":
        shoot_window(state["shot"])
        state["phase"] = "prefs"
    elif phase == "prefs":
        area = areas("PROPERTIES")[1][0]
        area.ui_type = "PREFERENCES"
        bpy.context.preferences.active_section = "ADDONS"
        bpy.context.window_manager.addon_search = "BlendFleet"
        bpy.ops.preferences.addon_expand(module="blendfleet")
        full_window_shot(area, "addon-preferences.png")
        state["phase"] = "prefs-shot"
    elif phase == "prefs-shot":
        shoot_window(state["shot"])
        sys.modules["blendfleet.farm"].shutdown()
        harness.finish(0)
    return 0.2


bpy.app.timers.register(drive, first_interval=1.0, persistent=True)
