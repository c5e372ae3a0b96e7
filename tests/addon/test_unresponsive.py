"""The manager stops answering in the middle of a job (SIGSTOP): Blender's main thread keeps
running and the render ends with a clear message after the configured timeout.

Runs Blender with its user interface (render jobs run in their own thread only there):
    xvfb-run -a blender --factory-startup --python tests/addon/test_unresponsive.py
Environment as for test_render.py. The script drives itself from a timer and exits with
0 (pass) or 1 (fail).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import bpy  # noqa: E402

import assets  # noqa: E402

TIMEOUT = 10.0  # the add-on's network timeout for this test
DEADLINE = 300.0  # the whole test
# A farm call made on the main thread would block it until the client's timeout (TIMEOUT)
# against a stopped manager; so no gap between two ticks of our 0.1 s timer may reach it.
# Gaps are not held to a tighter bound: software OpenGL under Xvfb on a loaded machine
# alone makes gaps of several seconds (4-6 s measured with a plain Cycles render).
MAX_MAIN_THREAD_GAP = TIMEOUT
MIN_TICKS_WHILE_STALLED = 3

state: dict = {"phase": "start", "ticks": [], "t0": time.monotonic()}


def fail(message: str) -> None:
    print(f"FAIL unresponsive manager: {message}", flush=True)
    cleanup()
    harness.finish(1)


def cleanup() -> None:
    pid = state.get("pid")
    if pid:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    farm = state.get("farm")
    if farm is not None:
        farm.shutdown()


def setup() -> None:
    tmp = tempfile.mkdtemp(prefix="bf-unresponsive-")
    zip_path = os.environ["BLENDFLEET_ADDON_ZIP"]
    bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
    bpy.ops.preferences.addon_enable(module="blendfleet")
    prefs = bpy.context.preferences.addons["blendfleet"].preferences
    prefs.provider = "LOCAL"
    prefs.binary = os.environ["BLENDFLEET_BIN"]
    prefs.blender = os.environ.get("BLENDFLEET_AGENT_BLENDER", "")
    prefs.local_agents = 1
    prefs.agent_threads = 1
    prefs.timeout = TIMEOUT
    tex = assets.write_png(os.path.join(tmp, "proj", "tex.png"), (0.5, 0.5, 0.5))
    # A render long enough to be caught in the middle: many samples, one thread.
    scene = assets.camera_scene(resolution=64, samples=4000)
    floor = assets.plane("Floor", size=2.2)
    floor.data.materials.append(assets.textured_material("Floor", bpy.data.images.load(tex)))
    assets.save(os.path.join(tmp, "proj", "scene.blend"))
    scene.render.engine = "BLENDFLEET"
    # Keep drawing cheap under software OpenGL: no render window, no film LUT to build.
    scene.view_settings.view_transform = "Standard"
    bpy.context.preferences.view.render_display_type = "NONE"
    state["engine"] = sys.modules["blendfleet.engine"]
    state["farm"] = sys.modules["blendfleet.farm"]


def drive() -> float | None:
    now = time.monotonic()
    state["ticks"].append(now)
    if now - state["t0"] > DEADLINE:
        fail(f"no outcome within {DEADLINE:.0f} s (phase {state['phase']})")
    engine, farm = state.get("engine"), state.get("farm")
    phase = state["phase"]
    if phase == "start":
        setup()
        window = bpy.context.window_manager.windows[0]
        with bpy.context.temp_override(window=window, screen=window.screen, area=window.screen.areas[0]):
            bpy.ops.render.render("INVOKE_DEFAULT")
        state["phase"] = "rendering"
        state["ticks"] = [time.monotonic()]
    elif phase == "rendering":
        scene_job = bpy.context.scene.blendfleet.job_id
        local = farm.current()
        if engine.last_error:
            fail(f"the render failed before the manager was stopped: {engine.last_error}")
        if scene_job and local is not None and local.pid and engine._active:
            time.sleep(1.0)  # let the job start rendering on the agent
            state["pid"] = local.pid
            os.kill(local.pid, signal.SIGSTOP)
            state["stopped_at"] = time.monotonic()
            state["phase"] = "stalled"
            print(f"  job {scene_job}: manager {local.pid} stopped", flush=True)
    elif phase == "stalled":
        if engine.last_error:
            waited = now - state["stopped_at"]
            print(f"  render ended after {waited:.1f} s: {engine.last_error}", flush=True)
            ticks = [t for t in state["ticks"] if t >= state["stopped_at"]]
            gaps = [b - a for a, b in zip(ticks, ticks[1:])]
            worst = max(gaps) if gaps else float("inf")
            print(f"  main thread: {len(ticks)} timer ticks while stalled, longest gap {worst:.2f} s", flush=True)
            if "has not answered" not in engine.last_error:
                fail(f"unclear message: {engine.last_error}")
            # The last answer came up to one poll (0.5 s) before the stop; the main thread
            # notices the end up to one (slow) tick late.
            if not TIMEOUT - 1 <= waited <= TIMEOUT + 15:
                fail(f"the render gave up after {waited:.1f} s; the timeout is {TIMEOUT} s")
            if worst >= MAX_MAIN_THREAD_GAP or len(ticks) < MIN_TICKS_WHILE_STALLED:
                fail(f"the main thread stalled: longest gap {worst:.2f} s, {len(ticks)} ticks")
            all_gaps = [b - a for a, b in zip(state["ticks"], state["ticks"][1:])]
            print(f"  longest gap since the render started: {max(all_gaps):.2f} s", flush=True)
            if max(all_gaps) >= MAX_MAIN_THREAD_GAP:
                fail(f"the main thread stalled during submission: {max(all_gaps):.2f} s")
            cleanup()
            print("ok   unresponsive manager", flush=True)
            harness.finish(0)
    return 0.1


bpy.app.timers.register(drive, first_interval=1.0)
