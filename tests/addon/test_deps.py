"""Dependency collection and the remapped copy, one test per kind of dependency.

    blender -b --factory-startup --python-exit-code 1 --python tests/addon/test_deps.py
    $BLENDFLEET_TEST_BPY_PYTHON tests/addon/test_deps.py
"""

from __future__ import annotations

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

harness.use_source_addon()

import bpy  # noqa: E402

import assets  # noqa: E402
from blendfleet import deps, snapshot  # noqa: E402


def paths_of(found: deps.Collection, kind: str | None = None) -> set[str]:
    return {d.path for d in found.dependencies if kind is None or d.kind == kind}


def real(path: str) -> str:
    return os.path.normpath(path)


def test_image_and_missing_image(tmp: str) -> None:
    assets.empty_file()
    tex = assets.write_png(os.path.join(tmp, "proj", "tex", "wood.png"), (0.8, 0.4, 0.1))
    image = bpy.data.images.load(tex)
    assets.textured_material("M", image).use_fake_user = True
    gone = bpy.data.images.load(tex, check_existing=False)
    gone_path = os.path.join(tmp, "proj", "tex", "gone.png")
    gone.filepath = gone_path
    assets.textured_material("M2", gone).use_fake_user = True
    assets.save(os.path.join(tmp, "proj", "scene.blend"))
    found = deps.collect()
    assert paths_of(found, "image") == {real(tex), real(gone_path)}, found.dependencies
    assert [d.path for d in found.missing] == [real(gone_path)], found.missing
    # A generated image needs no file; a packed one neither.
    bpy.data.images.new("generated", 4, 4)
    image.pack()
    found = deps.collect()
    assert real(tex) not in paths_of(found), "a packed image needs no file"


def test_udim_tiles(tmp: str) -> None:
    assets.empty_file()
    directory = os.path.join(tmp, "udim")
    tiles = [assets.write_png(os.path.join(directory, f"skin.{n}.png"), (0.2, 0.3, 0.9)) for n in (1001, 1002, 1011)]
    image = bpy.data.images.load(tiles[0])
    image.source = "TILED"
    image.tiles.new(tile_number=1002)
    image.tiles.new(tile_number=1011)
    image.use_fake_user = True
    found = deps.collect()
    assert paths_of(found, "udim") == {real(t) for t in tiles}, found.dependencies
    assert not found.missing


def test_image_sequence_and_movie_clip(tmp: str) -> None:
    assets.empty_file()
    directory = os.path.join(tmp, "seq")
    frames = [assets.write_png(os.path.join(directory, f"fire_{n:04d}.png"), (1, 0.5, 0)) for n in (1, 2, 3)]
    assets.write_png(os.path.join(directory, "other_0001.png"), (0, 0, 0))
    image = bpy.data.images.load(frames[0])
    image.source = "SEQUENCE"
    image.use_fake_user = True
    found = deps.collect()
    assert paths_of(found, "sequence") == {real(f) for f in frames}, found.dependencies
    bpy.data.images.remove(image)
    clip = bpy.data.movieclips.load(frames[0])
    clip.use_fake_user = True
    found = deps.collect()
    assert paths_of(found, "movie clip") == {real(f) for f in frames}, found.dependencies


def test_sound_only_when_the_sequencer_renders_it(tmp: str) -> None:
    assets.empty_file()
    sound_path = assets.write_wav(os.path.join(tmp, "audio", "beep.wav"))
    sound = bpy.data.sounds.load(sound_path)
    sound.use_fake_user = True
    scene = bpy.context.scene
    assert paths_of(deps.collect(), "sound") == set(), "no strip: pictures need no sound"
    editor = scene.sequence_editor_create()
    strips = getattr(editor, "strips", None) or editor.sequences
    strips.new_sound("beep", sound_path, 1, 1)
    scene.render.use_sequencer = True
    assert paths_of(deps.collect(), "sound") == {real(sound_path)}
    assert paths_of(deps.collect(include_sounds=False), "sound") == set()


def test_font(tmp: str) -> None:
    assets.empty_file()
    font_path = assets.font_file(os.path.join(tmp, "fonts"))
    font = bpy.data.fonts.load(font_path)
    curve = bpy.data.curves.new("Text", "FONT")
    curve.font = font
    bpy.context.scene.collection.objects.link(bpy.data.objects.new("Text", curve))
    found = deps.collect()
    assert paths_of(found, "font") == {real(font_path)}, found.dependencies


def _fluid_domain(tmp: str) -> str:
    """A gas domain whose cache directory holds files named as Mantaflow writes them.

    Baking cannot be used here: Mantaflow fails inside both Blender builds this project
    tests with (Debian 3.4: `'NoneType' object has no attribute 'getDataPointer'`; pip bpy
    4.5: `'LevelsetGrid' object has no attribute 'setConst'`), and nothing else in Blender
    writes OpenVDB. The collector reads only names, so the files hold placeholder bytes."""
    assets.empty_file()
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 2
    assets.save(os.path.join(tmp, "proj", "smoke.blend"))
    domain = assets.plane("Domain")
    modifier = domain.modifiers.new("Fluid", "FLUID")
    modifier.fluid_type = "DOMAIN"
    modifier.domain_settings.domain_type = "GAS"
    modifier.domain_settings.cache_directory = "//cache_fluid"
    cache = os.path.join(tmp, "proj", "cache_fluid")
    names = ["config/config_0001.uni", "config/config_0002.uni", "config/config_0009.uni",
             "data/fluid_data_0001.vdb", "data/fluid_data_0002.vdb", "data/fluid_data_0009.vdb",
             "noise/fluid_noise_0001.vdb"]
    for name in names:
        os.makedirs(os.path.dirname(os.path.join(cache, name)), exist_ok=True)
        with open(os.path.join(cache, name), "wb") as out:
            out.write(b"placeholder " + name.encode())
    return cache


def test_fluid_cache_and_volume_sequence(tmp: str) -> None:
    cache = _fluid_domain(tmp)
    written = sorted(os.path.join(root, name) for root, _d, names in os.walk(cache) for name in names)
    in_range = {real(p) for p in written if not p.endswith("_0009.uni") and not p.endswith("_0009.vdb")}
    found = deps.collect()
    assert paths_of(found, "fluid cache") == in_range, (found.dependencies, written)
    # A volume object reading VDB files as a sequence takes the frames it renders.
    vdbs = sorted(p for p in written if "fluid_data_" in p)
    volume = bpy.data.volumes.new("Smoke")
    volume.filepath = vdbs[0]
    volume.is_sequence = True
    volume.frame_duration = 9
    bpy.context.scene.collection.objects.link(bpy.data.objects.new("SmokeVolume", volume))
    found = deps.collect()
    assert paths_of(found, "volume") == {real(p) for p in vdbs if "_0009" not in p}, (found.dependencies, vdbs)
    assert paths_of(deps.collect(frames=range(1, 10)), "volume") == {real(p) for p in vdbs}
    volume.is_sequence = False
    assert paths_of(deps.collect(), "volume") == {real(vdbs[0])}


def _bake_point_caches(tmp: str) -> str:
    assets.empty_file()
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 3
    cloth_obj = assets.plane("Cloth", size=1.0, location=(0, 0, 1))
    cloth = cloth_obj.modifiers.new("Cloth", "CLOTH")
    cloth.point_cache.frame_start, cloth.point_cache.frame_end = 1, 3
    emitter = assets.plane("Emitter", size=1.0)
    emitter.modifiers.new("Particles", "PARTICLE_SYSTEM")
    system = emitter.particle_systems[0]
    system.settings.count = 10
    system.settings.frame_start, system.settings.frame_end = 1, 2
    system.point_cache.frame_start, system.point_cache.frame_end = 1, 3
    system.point_cache.name = "sparks"
    path = assets.save(os.path.join(tmp, "proj", "physics.blend"))
    # Disk caches need a saved file: Blender ignores the switch before.
    cloth.point_cache.use_disk_cache = True
    system.point_cache.use_disk_cache = True
    result = bpy.ops.ptcache.bake_all(bake=True)
    assert "FINISHED" in result, result
    return path


def test_point_caches_on_disk(tmp: str) -> None:
    blend = _bake_point_caches(tmp)
    cache_dir = os.path.join(os.path.dirname(blend), "blendcache_physics")
    written = sorted(os.listdir(cache_dir))
    cloth_prefix = "".join("%02X" % b for b in b"Cloth")
    assert any(n.startswith(cloth_prefix) for n in written), written
    assert any(n.startswith("sparks_") for n in written), written
    found = deps.collect()
    assert paths_of(found, "point cache") == {real(os.path.join(cache_dir, n)) for n in written}, (
        found.dependencies,
        written,
    )
    assert not found.missing


def test_alembic_cache_file(tmp: str) -> None:
    if not getattr(bpy.app.build_options, "alembic", False):
        print("  (this Blender is built without Alembic: nothing to export or read)")
        return
    assets.empty_file()
    bpy.ops.mesh.primitive_cube_add(size=1.0)
    abc = os.path.join(tmp, "caches", "cube.abc")
    os.makedirs(os.path.dirname(abc))
    assert "FINISHED" in bpy.ops.wm.alembic_export(filepath=abc, start=1, end=2)
    assets.empty_file()
    assert "FINISHED" in bpy.ops.wm.alembic_import(filepath=abc, as_background_job=False)
    assert len(bpy.data.cache_files) == 1
    # A static mesh imports without a reader; give it one, as an animated import has.
    obj = next(o for o in bpy.data.objects if o.type == "MESH")
    if not any(m.type == "MESH_SEQUENCE_CACHE" for m in obj.modifiers):
        reader = obj.modifiers.new("Cache", "MESH_SEQUENCE_CACHE")
        reader.cache_file = bpy.data.cache_files[0]
        reader.object_path = "/Cube/Cube" if bpy.app.version >= (4, 0, 0) else "/Cube/CubeShape"
    found = deps.collect()
    assert paths_of(found, "cache file") == {real(abc)}, found.dependencies
    if getattr(bpy.app.build_options, "usd", False):
        usd = os.path.join(tmp, "caches", "cube.usdc")
        assert "FINISHED" in bpy.ops.wm.usd_export(filepath=usd)
        cache = bpy.data.cache_files[0]
        cache.filepath = usd
        assert paths_of(deps.collect(), "cache file") == {real(usd)}


def _library_project(tmp: str) -> dict[str, str]:
    """proj/scene.blend links libs/lib.blend, which links deep/inner.blend; textures live
    next to each library (relative paths inside them), and the main scene uses a texture
    outside the project by absolute path."""
    inner_tex = assets.write_png(os.path.join(tmp, "deep", "inner.png"), (0.1, 0.9, 0.1))
    inner = assets.make_inner_library(os.path.join(tmp, "deep", "inner.blend"), inner_tex)
    lib_tex = assets.write_png(os.path.join(tmp, "proj", "libs", "lib.png"), (0.9, 0.1, 0.1))
    lib = assets.make_library(os.path.join(tmp, "proj", "libs", "lib.blend"), lib_tex, inner)
    shared_tex = assets.write_png(os.path.join(tmp, "shared", "floor.png"), (0.2, 0.2, 0.9))
    assets.empty_file()
    assets.link_collection(lib, "Asset")
    floor = assets.plane("Floor")
    floor.data.materials.append(assets.textured_material("Floor", bpy.data.images.load(shared_tex)))
    main = assets.save(os.path.join(tmp, "proj", "scene.blend"))
    return {"inner_tex": inner_tex, "inner": inner, "lib_tex": lib_tex, "lib": lib,
            "shared_tex": shared_tex, "main": main}


def test_linked_libraries_recursively(tmp: str) -> None:
    files = _library_project(tmp)
    bpy.ops.wm.open_mainfile(filepath=files["main"])
    found = deps.collect()
    assert paths_of(found, "library") == {real(files["lib"]), real(files["inner"])}, found.dependencies
    assert paths_of(found, "image") == {real(files[k]) for k in ("inner_tex", "lib_tex", "shared_tex")}, (
        found.dependencies
    )
    assert not found.missing


def test_snapshot_map_and_copy_resolve_on_a_fresh_tree(tmp: str) -> None:
    import blendfleet

    blendfleet.register()
    try:
        files = _library_project(tmp)
        bpy.ops.wm.open_mainfile(filepath=files["main"])
        bpy.context.scene.render.engine = snapshot.ENGINE_ID
        floor_image = next(i for i in bpy.data.images if i.library is None)
        before = floor_image.filepath
        assert os.path.isabs(before), before
        out = os.path.join(tmp, "out")
        os.makedirs(out)
        snap = snapshot.write(deps.collect(), out, render_missing=False)
        # The user's data is as it was.
        assert floor_image.filepath == before
        assert bpy.context.scene.render.engine == snapshot.ENGINE_ID
        assert snap.main_file == "proj/scene.blend", snap.main_file
        assert set(snap.files) == {
            "proj/scene.blend", "proj/libs/lib.blend", "proj/libs/lib.png",
            "deep/inner.blend", "deep/inner.png", "shared/floor.png",
        }, snap.files
        # Recreate the tree elsewhere, as an agent does, and open the copy there.
        agent = os.path.join(tmp, "agent", "job")
        for job_path, local in snap.files.items():
            target = os.path.join(agent, *job_path.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(local, target)
        shutil.rmtree(os.path.join(tmp, "proj"))
        shutil.rmtree(os.path.join(tmp, "deep"))
        shutil.rmtree(os.path.join(tmp, "shared"))
        bpy.ops.wm.open_mainfile(filepath=os.path.join(agent, "proj", "scene.blend"))
        assert bpy.context.scene.render.engine == "CYCLES"
        found = deps.collect()
        assert not found.missing, found.missing
        assert all(p.startswith(agent) for p in paths_of(found)), found.dependencies
        assert len(found.dependencies) == 5, found.dependencies
        floor = next(i for i in bpy.data.images if i.library is None)
        assert floor.filepath == "//../shared/floor.png", floor.filepath
        for image in bpy.data.images:
            assert image.has_data or image.size[0] > 0, image.name
    finally:
        blendfleet.unregister()


def test_missing_file_stops_the_snapshot_unless_allowed(tmp: str) -> None:
    assets.empty_file()
    tex = assets.write_png(os.path.join(tmp, "proj", "tex.png"), (1, 1, 1))
    image = bpy.data.images.load(tex)
    image.use_fake_user = True
    assets.save(os.path.join(tmp, "proj", "scene.blend"))
    os.remove(tex)
    out = os.path.join(tmp, "out")
    os.makedirs(out)
    try:
        snapshot.write(deps.collect(), out, render_missing=False)
    except snapshot.SnapshotError as error:
        assert "tex.png" in str(error) and "missing" in str(error), str(error)
    else:
        raise AssertionError("a missing texture must stop the snapshot")
    snap = snapshot.write(deps.collect(), out, render_missing=True)
    assert [d.path for d in snap.left_out] == [real(tex)]
    assert set(snap.files) == {"scene.blend"}, snap.files


TESTS = [
    test_image_and_missing_image,
    test_udim_tiles,
    test_image_sequence_and_movie_clip,
    test_sound_only_when_the_sequencer_renders_it,
    test_font,
    test_fluid_cache_and_volume_sequence,
    test_point_caches_on_disk,
    test_alembic_cache_file,
    test_linked_libraries_recursively,
    test_snapshot_map_and_copy_resolve_on_a_fresh_tree,
    test_missing_file_stops_the_snapshot_unless_allowed,
]

if __name__ == "__main__":
    harness.run(TESTS, "dependency collection")
