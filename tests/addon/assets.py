"""Tiny test assets, made with Blender at test time: textures, libraries, scenes."""

from __future__ import annotations

import os
import struct
import wave

import bpy


def empty_file() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)


def write_png(path: str, color: tuple[float, float, float], size: int = 8, checker: bool = True) -> str:
    """An 8-bit PNG with a two-colour checker (so a wrong texture shows), written by Blender."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = bpy.data.images.new("tmp_png", size, size, alpha=False)
    pixels = []
    for y in range(size):
        for x in range(size):
            dark = checker and ((x // 2 + y // 2) % 2 == 0)
            scale = 0.25 if dark else 1.0
            pixels += [color[0] * scale, color[1] * scale, color[2] * scale, 1.0]
    image.pixels = pixels
    image.filepath_raw = path
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return path


def write_wav(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", (i * 300) % 20000) for i in range(800)))
    return path


def font_file(directory: str) -> str:
    """A copy of one of Blender's own font files."""
    import shutil

    fonts = bpy.utils.system_resource("DATAFILES", path="fonts")
    for name in sorted(os.listdir(fonts)):
        if name.lower().endswith((".ttf", ".otf", ".woff", ".woff2", ".ttf.gz")):
            os.makedirs(directory, exist_ok=True)
            target = os.path.join(directory, name)
            shutil.copyfile(os.path.join(fonts, name), target)
            return target
    raise RuntimeError(f"no font file in {fonts}")


def textured_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes = material.node_tree.nodes
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    emission = nodes.new("ShaderNodeEmission")
    output = nodes["Material Output"]
    for node in list(nodes):
        if node not in (texture, emission, output):
            nodes.remove(node)
    material.node_tree.links.new(texture.outputs["Color"], emission.inputs["Color"])
    material.node_tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def plane(name: str, size: float = 2.0, location=(0.0, 0.0, 0.0)) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    h = size / 2
    mesh.from_pydata([(-h, -h, 0), (h, -h, 0), (h, h, 0), (-h, h, 0)], [], [(0, 1, 2, 3)])
    mesh.uv_layers.new(name="UVMap")
    uvs = mesh.uv_layers[0].data
    for loop, uv in zip(mesh.loops, [(0, 0), (1, 0), (1, 1), (0, 1)]):
        uvs[loop.index].uv = uv
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    bpy.context.scene.collection.objects.link(obj)
    return obj


def save(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=path)
    return path


def make_library(path: str, texture: str, inner_library: str | None = None) -> str:
    """A .blend with a collection "Asset" holding a textured plane whose image path is
    relative to the library (`//...`); optionally it links "Inner" from `inner_library`."""
    empty_file()
    scene = bpy.context.scene
    collection = bpy.data.collections.new("Asset")
    scene.collection.children.link(collection)
    image = bpy.data.images.load(texture)
    obj = plane("LibPlane", size=1.0, location=(0.6, 0.0, 0.01))
    scene.collection.objects.unlink(obj)
    collection.objects.link(obj)
    obj.data.materials.append(textured_material("LibMaterial", image))
    if inner_library:
        with bpy.data.libraries.load(inner_library, link=True) as (_src, dst):
            dst.collections = ["Inner"]
        for inner in dst.collections:
            collection.children.link(inner)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=path, relative_remap=True)
    image.filepath = bpy.path.relpath(texture)
    bpy.ops.wm.save_mainfile()
    return path


def make_inner_library(path: str, texture: str) -> str:
    empty_file()
    scene = bpy.context.scene
    collection = bpy.data.collections.new("Inner")
    scene.collection.children.link(collection)
    image = bpy.data.images.load(texture)
    obj = plane("InnerPlane", size=0.5, location=(-0.6, 0.0, 0.01))
    scene.collection.objects.unlink(obj)
    collection.objects.link(obj)
    obj.data.materials.append(textured_material("InnerMaterial", image))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=path)
    image.filepath = bpy.path.relpath(texture)
    bpy.ops.wm.save_mainfile()
    return path


def link_collection(library: str, name: str) -> None:
    with bpy.data.libraries.load(library, link=True) as (_src, dst):
        dst.collections = [name]
    for collection in dst.collections:
        instance = bpy.data.objects.new(name + "_instance", None)
        instance.instance_type = "COLLECTION"
        instance.instance_collection = collection
        bpy.context.scene.collection.objects.link(instance)


def camera_scene(resolution: int = 32, samples: int = 8) -> bpy.types.Scene:
    """The current scene with a camera looking down at the origin and Cycles settings that
    a farm render reproduces (no denoising, no adaptive sampling, CPU)."""
    scene = bpy.context.scene
    camera_data = bpy.data.cameras.new("Camera")
    camera_data.type = "ORTHO"
    camera_data.ortho_scale = 2.2
    camera = bpy.data.objects.new("Camera", camera_data)
    camera.location = (0.0, 0.0, 3.0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.render.resolution_x = resolution
    scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.cycles.samples = samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.cycles.device = "CPU"
    scene.frame_start = 1
    scene.frame_end = 1
    scene.frame_current = 1
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    return scene
