"""A job rendered end to end by a local agent (Debian's Blender), read back through the module."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import blendfleet_py
from conftest import Manager, start_manager

SCENE = """
import bpy, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = 'CYCLES'
scene.cycles.device = 'CPU'
scene.render.resolution_x, scene.render.resolution_y = 32, 24
bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))
bpy.ops.object.camera_add(location=(4, -4, 3), rotation=(1.1, 0, 0.785))
scene.camera = bpy.context.object
bpy.ops.object.light_add(type='SUN', location=(0, 0, 5))
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[sys.argv.index('--') + 1])
"""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXR_MAGIC = b"\x76\x2f\x31\x01"


@pytest.fixture
def farm(blender: str, tmp_path: Path) -> Iterator[Manager]:
    running = start_manager(tmp_path, ["--local-agents", "1", "--agent-threads", "1",
                                       "--blender", blender])
    yield running
    running.stop()


def make_scene(blender: str, path: Path) -> None:
    script = path.with_suffix(".py")
    script.write_text(SCENE)
    subprocess.run([blender, "-b", "--factory-startup", "--python-exit-code", "1",
                    "--python", str(script), "--", str(path)],
                   check=True, capture_output=True, timeout=120)
    assert path.is_file()


def test_render_and_download(blender: str, farm: Manager, tmp_path: Path) -> None:
    scene = tmp_path / "cube.blend"
    make_scene(blender, scene)
    client = farm.client()
    job_id = client.submit({"main_file": "cube.blend", "frames": {"start": 1, "end": 1},
                            "samples": 8}, {"cube.blend": str(scene)})
    deadline = time.monotonic() + 240
    job = client.job(job_id)
    while job["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"the job did not finish: {job}"
        time.sleep(0.5)
        job = client.job(job_id)
    assert job["state"] == "done", job
    assert job["frames"][0]["samples_done"] == 8

    preview = client.preview(job_id, 1)
    assert preview is not None and preview.startswith(PNG_MAGIC)
    client.download_exr(job_id, 1, str(tmp_path / "frame.exr"))
    assert (tmp_path / "frame.exr").read_bytes()[:4] == EXR_MAGIC
    client.download_image(job_id, 1, tmp_path / "frame.png")
    assert (tmp_path / "frame.png").read_bytes()[:8] == PNG_MAGIC

    agents = client.agents()
    assert len(agents) == 1
    assert client.info()["agents_online"] == 1
    with pytest.raises(blendfleet_py.NotFound):
        client.download_exr(job_id, 2, str(tmp_path / "none.exr"))
