"""Small pieces of the add-on: the manager's banner, connection strings, image headers, ETA.

    blender -b --factory-startup --python-exit-code 1 --python tests/addon/test_units.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

harness.use_source_addon()

import bpy  # noqa: E402

import assets  # noqa: E402
from blendfleet import engine, exr, farm  # noqa: E402

FP = "sha256:" + "ab" * 32


def test_banner_and_connection_string(_tmp: str) -> None:
    lines = [
        "BlendFleet manager listening on https://127.0.0.1:40001",
        f"  CA fingerprint: {FP}",
        "  user:           admin",
    ]
    assert farm.parse_banner(lines) is None, "no connection line yet"
    lines.append(f"  connection:     https://admin@127.0.0.1:40001/#ca={FP}")
    assert farm.parse_banner(lines) == ("https://127.0.0.1:40001", f"https://admin@127.0.0.1:40001/#ca={FP}")
    assert farm.split_connection_string(f" https://render@box.lan:8443/#ca={FP}\n") == (
        "https://box.lan:8443", "render", FP)
    for bad, why in [("https://box.lan:8443/", "#ca="), (f"https://box.lan:8443/#ca={FP}", "names no user"),
                     (f"https://box.lan:8443/#fp={FP}", "#ca=")]:
        try:
            farm.split_connection_string(bad)
        except ValueError as error:
            assert why in str(error), (bad, str(error))
        else:
            raise AssertionError(f"accepted {bad!r}")


def test_exr_channels_and_png_size(tmp: str) -> None:
    assets.empty_file()
    scene = assets.camera_scene(resolution=8, samples=1)
    scene.view_layers[0].use_pass_normal = True
    scene.render.image_settings.file_format = "OPEN_EXR_MULTILAYER"
    bpy.ops.render.render()
    path = os.path.join(tmp, "layers.exr")
    bpy.data.images["Render Result"].save_render(filepath=path)
    channels = exr.exr_channels(path)
    layer = scene.view_layers[0].name
    for name in ("Combined.R", "Combined.A", "Normal.X", "Normal.Z"):
        assert f"{layer}.{name}" in channels, channels
    not_exr = os.path.join(tmp, "x.png")
    assets.write_png(not_exr, (1, 0, 0), size=6)
    try:
        exr.exr_channels(not_exr)
    except exr.HeaderError as error:
        assert "not an OpenEXR file" in str(error)
    else:
        raise AssertionError("a PNG read as EXR")
    with open(not_exr, "rb") as png:
        assert exr.png_size(png.read()) == (6, 6)
    truncated = os.path.join(tmp, "cut.exr")
    with open(path, "rb") as whole, open(truncated, "wb") as cut:
        cut.write(whole.read()[:40])
    try:
        exr.exr_channels(truncated)
    except exr.HeaderError:
        pass
    else:
        raise AssertionError("a truncated header was read")


def test_eta(_tmp: str) -> None:
    rate = engine.Rate()
    assert rate.eta(100) is None
    rate.points = [(0.0, 0), (10.0, 50)]
    assert abs(rate.eta(100) - 20.0) < 1e-9
    assert engine.format_seconds(59.6) == "1:00"
    assert engine.format_seconds(3725) == "1:02:05"


if __name__ == "__main__":
    harness.run([test_banner_and_connection_string, test_exr_channels_and_png_size, test_eta], "add-on units")
