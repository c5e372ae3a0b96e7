"""Install the add-on from its zip, render a scene with an external texture and a linked
library on a local farm through the BlendFleet engine, and compare the Render Result with a
plain local Cycles render of the same samples. Then stop the farm, reopen the file and
reattach to the finished job: the result comes back into Render Result.

Environment (scripts/test-addon.sh sets it):
  BLENDFLEET_ADDON_ZIP   the zip to install (legacy zip for 3.x, extension zip for 4.2+)
  BLENDFLEET_BIN         the `blendfleet` executable
  BLENDFLEET_AGENT_BLENDER  the Blender the agents render with (a `blender` or a bpy Python)
  HOME/XDG_*/BLENDER_USER_*  pointed at a temporary directory by the caller
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import bpy  # noqa: E402

import assets  # noqa: E402

RESOLUTION = 24
SAMPLES = 16
# A farm render uses the same seed and sample range per pixel as a single render, so the
# merged image equals it up to float rounding (measured ~1e-6). PSNR over 60 dB (mean
# absolute error around 1e-4 or less on values near 0.5) leaves room for rounding and is
# far above a scene with one wrong texture (measured about 20 dB here).
MIN_PSNR_DB = 60.0


def install_addon() -> object:
    """Installs and enables the add-on from BLENDFLEET_ADDON_ZIP; returns its module."""
    zip_path = os.environ["BLENDFLEET_ADDON_ZIP"]
    if "extension" in os.path.basename(zip_path):
        bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                 enable_on_install=True)
        name = "bl_ext.user_default.blendfleet"
    else:
        bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
        bpy.ops.preferences.addon_enable(module="blendfleet")
        name = "blendfleet"
    assert name in bpy.context.preferences.addons, f"{name} is not enabled"
    module = sys.modules[name]
    assert os.path.abspath(module.__file__).startswith(os.environ["HOME"]), (
        f"the add-on must come from the installed zip, not the source tree: {module.__file__}"
    )
    return module


def configure(name: str) -> None:
    prefs = bpy.context.preferences.addons[name].preferences
    prefs.provider = "LOCAL"
    prefs.binary = os.environ["BLENDFLEET_BIN"]
    prefs.blender = os.environ.get("BLENDFLEET_AGENT_BLENDER", "")
    prefs.local_agents = 2
    prefs.agent_threads = 1
    prefs.timeout = 30.0


def build_scene(tmp: str) -> tuple[str, str]:
    """proj/scene.blend: a textured floor (external texture) and a linked library asset."""
    lib_tex = assets.write_png(os.path.join(tmp, "proj", "libs", "lib.png"), (0.9, 0.1, 0.1))
    lib = assets.make_library(os.path.join(tmp, "proj", "libs", "lib.blend"), lib_tex)
    floor_tex = assets.write_png(os.path.join(tmp, "proj", "tex", "floor.png"), (0.1, 0.4, 0.9))
    assets.empty_file()
    assets.camera_scene(RESOLUTION, SAMPLES)
    floor = assets.plane("Floor", size=2.2)
    floor.data.materials.append(assets.textured_material("Floor", bpy.data.images.load(floor_tex)))
    assets.link_collection(lib, "Asset")
    scene = bpy.context.scene
    scene.cycles.seed = 3
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_depth = "32"
    main = assets.save(os.path.join(tmp, "proj", "scene.blend"))
    return main, floor_tex


def render_pixels(tmp: str, label: str) -> list[float]:
    """Renders the current scene (blocking) and returns the Render Result's RGBA floats."""
    bpy.ops.render.render()
    path = os.path.join(tmp, f"{label}.exr")
    bpy.data.images["Render Result"].save_render(filepath=path)
    image = bpy.data.images.load(path, check_existing=False)
    pixels = list(image.pixels)
    bpy.data.images.remove(image)
    return pixels


def psnr(a: list[float], b: list[float]) -> tuple[float, float]:
    assert len(a) == len(b) and a, (len(a), len(b))
    rgb = [(x, y) for i, (x, y) in enumerate(zip(a, b)) if i % 4 != 3]
    mse = sum((x - y) ** 2 for x, y in rgb) / len(rgb)
    mean_abs = sum(abs(x - y) for x, y in rgb) / len(rgb)
    return (math.inf if mse == 0 else 10 * math.log10(1.0 / mse)), mean_abs


def test_render_on_local_farm_matches_local_cycles(tmp: str) -> None:
    # Scenes first: making them resets to factory settings, which disables add-ons.
    main, floor_tex = build_scene(tmp)
    module = install_addon()
    name = module.__name__
    configure(name)
    engine = sys.modules[name + ".engine"]
    farm = sys.modules[name + ".farm"]
    scene = bpy.context.scene

    scene.render.engine = "CYCLES"
    reference = render_pixels(tmp, "reference")
    # The same scene with the floor's texture missing: what a farm that lost a file renders.
    hidden = floor_tex + ".hidden"
    os.rename(floor_tex, hidden)
    for image in bpy.data.images:
        if image.library is None and image.source == "FILE":
            image.reload()
    broken = render_pixels(tmp, "broken")
    os.rename(hidden, floor_tex)
    for image in bpy.data.images:
        if image.library is None and image.source == "FILE":
            image.reload()
    broken_psnr, broken_mean = psnr(reference, broken)
    print(f"  reference vs missing texture: PSNR {broken_psnr:.1f} dB, mean abs {broken_mean:.4f}")
    assert broken_psnr < MIN_PSNR_DB, "the comparison must catch a missing texture"

    scene.render.engine = "BLENDFLEET"
    # A missing texture stops a background render before anything starts or uploads.
    os.rename(floor_tex, hidden)
    try:
        bpy.ops.render.render()
    except RuntimeError as error:
        print(f"  missing texture: {error}".rstrip())
    os.rename(hidden, floor_tex)
    assert engine.last_error and "missing" in engine.last_error and "floor.png" in engine.last_error, (
        engine.last_error
    )
    assert scene.blendfleet.job_id == 0 and farm.current() is None, "nothing may be submitted"

    started = time.monotonic()
    farm_pixels = render_pixels(tmp, "farm")
    seconds = time.monotonic() - started
    assert engine.last_error is None, engine.last_error
    job_id = scene.blendfleet.job_id
    assert job_id > 0, "the job id is kept in the scene"
    value, mean_abs = psnr(reference, farm_pixels)
    print(f"  farm render: {seconds:.1f}s, job {job_id}, PSNR {value:.1f} dB, mean abs {mean_abs:.2e}")
    assert value >= MIN_PSNR_DB, (value, mean_abs)
    assert engine.last_missing_channels == [], engine.last_missing_channels

    # Ctrl+F12: one job for the frame range; Blender writes each frame as usual.
    scene.frame_end = 2
    scene.render.filepath = os.path.join(tmp, "anim", "frame_")
    bpy.ops.render.render(animation=True)
    assert engine.last_error is None, engine.last_error
    animation_job = scene.blendfleet.job_id
    assert animation_job > job_id and scene.blendfleet.job_frames == "1,2", (
        animation_job, scene.blendfleet.job_frames)
    for frame in (1, 2):
        image = bpy.data.images.load(os.path.join(tmp, "anim", f"frame_{frame:04d}.exr"))
        value, _ = psnr(reference, list(image.pixels))
        bpy.data.images.remove(image)
        # Nothing moves and the seed is not animated: every frame is the reference image.
        assert value >= MIN_PSNR_DB, (frame, value)
    print(f"  animation: job {animation_job}, frames 1-2 written")
    scene.frame_end = 1
    scene.blendfleet.job_id = job_id
    scene.blendfleet.job_frames = "1"

    # Blender "restarts": the farm stops, the file is saved and opened again, and the
    # scene's job is reattached to; the farm starts again from its state directory.
    bpy.ops.wm.save_mainfile()
    local = farm.current()
    pid = local.pid
    farm.shutdown()
    assert local.process is None and not _alive(pid), "the local manager must have stopped"
    bpy.ops.wm.open_mainfile(filepath=main)
    scene = bpy.context.scene
    assert scene.blendfleet.job_id == job_id
    # No render result yet in the reopened file; reattaching brings the job's frame back.
    assert "FINISHED" in bpy.ops.blendfleet.reattach(job_id=job_id)
    assert engine.last_error is None, engine.last_error
    path = os.path.join(tmp, "reattached.exr")
    bpy.data.images["Render Result"].save_render(filepath=path)
    image = bpy.data.images.load(path, check_existing=False)
    value, _ = psnr(reference, list(image.pixels))
    assert value >= MIN_PSNR_DB, value
    farm.shutdown()
    shutil.rmtree(os.path.join(tmp, "proj"), ignore_errors=True)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive for this purpose.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    harness.run([test_render_on_local_farm_matches_local_cycles], "add-on render")
