# Builds BlendFleet's demo scene and saves it as a .blend.
#
#   blender -b --factory-startup -noaudio --python make_demo.py -- OUT.blend [RESULT.json]
#   python make_demo.py OUT.blend [RESULT.json]          (a Python with pip `bpy`)
#
# The scene is deterministic and small: a checkered floor, a diffuse, a glossy, an
# emissive and a principled ("plastic") object, an area light and a camera; Cycles on
# the CPU, 320x240, 64 samples, no adaptive sampling, no denoising, frames 1-6 with the
# camera and the glossy sphere moving. The view layer stores the passes the merge has
# to handle: Combined, Depth, Normal, Diffuse/Glossy Direct/Indirect/Color, Emit, AO.
# Works with Blender 3.4 and 4.x/5.x.

import json
import os
import sys
import traceback

import bpy

VERSION = tuple(bpy.app.version[:3])


def script_args():
    argv = sys.argv
    if "--" in argv:
        return argv[argv.index("--") + 1:]
    return argv[1:]


def node_tree_material(name):
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    tree = material.node_tree
    for node in list(tree.nodes):
        tree.nodes.remove(node)
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    output.location = (300, 0)
    return material, tree, output


def diffuse_material(name, color):
    material, tree, output = node_tree_material(name)
    bsdf = tree.nodes.new("ShaderNodeBsdfDiffuse")
    bsdf.inputs["Color"].default_value = color
    tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    return material


def glossy_material(name, color, roughness):
    material, tree, output = node_tree_material(name)
    bsdf = tree.nodes.new("ShaderNodeBsdfGlossy")
    bsdf.inputs["Color"].default_value = color
    bsdf.inputs["Roughness"].default_value = roughness
    tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    return material


def emission_material(name, color, strength):
    material, tree, output = node_tree_material(name)
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = color
    emission.inputs["Strength"].default_value = strength
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def checker_material(name):
    material, tree, output = node_tree_material(name)
    coords = tree.nodes.new("ShaderNodeTexCoord")
    checker = tree.nodes.new("ShaderNodeTexChecker")
    checker.inputs["Scale"].default_value = 6.0
    checker.inputs["Color1"].default_value = (0.8, 0.8, 0.75, 1.0)
    checker.inputs["Color2"].default_value = (0.15, 0.2, 0.3, 1.0)
    bsdf = tree.nodes.new("ShaderNodeBsdfDiffuse")
    tree.links.new(coords.outputs["UV"], checker.inputs["Vector"])
    tree.links.new(checker.outputs["Color"], bsdf.inputs["Color"])
    tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    return material


def principled_material(name, color):
    material, tree, output = node_tree_material(name)
    bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
    # Blender 4.0 renamed several Principled BSDF inputs.
    if VERSION >= (4, 0, 0):
        specular, emission = "Specular IOR Level", "Emission Color"
    else:
        specular, emission = "Specular", "Emission"
    bsdf.inputs["Base Color"].default_value = color
    bsdf.inputs["Roughness"].default_value = 0.35
    bsdf.inputs[specular].default_value = 0.5
    bsdf.inputs[emission].default_value = (0.0, 0.0, 0.0, 1.0)
    tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    return material


def add_object(kind, name, material, location, **size):
    operators = {
        "plane": bpy.ops.mesh.primitive_plane_add,
        "sphere": bpy.ops.mesh.primitive_uv_sphere_add,
        "cube": bpy.ops.mesh.primitive_cube_add,
        "torus": bpy.ops.mesh.primitive_torus_add,
    }
    operators[kind](location=location, **size)
    obj = bpy.context.active_object
    obj.name = name
    obj.data.materials.append(material)
    if kind in ("sphere", "torus"):
        for polygon in obj.data.polygons:
            polygon.use_smooth = True
    return obj


def build(scene):
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = 64
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False
    cycles.use_preview_denoising = False
    cycles.seed = 0
    cycles.max_bounces = 6

    render = scene.render
    render.resolution_x = 320
    render.resolution_y = 240
    render.resolution_percentage = 100
    render.use_compositing = False
    render.use_sequencer = False
    settings = render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "MULTI_LAYER_IMAGE"
    settings.file_format = "OPEN_EXR_MULTILAYER"
    settings.color_depth = "32"
    settings.exr_codec = "ZIP"
    scene.frame_start = 1
    scene.frame_end = 6
    scene.frame_step = 1

    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (0.05, 0.06, 0.08, 1.0)
    background.inputs["Strength"].default_value = 1.0
    scene.world = world

    add_object("plane", "Floor", checker_material("Checker"), (0, 0, 0), size=12)
    add_object("sphere", "DiffuseSphere", diffuse_material("Diffuse", (0.8, 0.1, 0.08, 1.0)),
               (-1.6, 0.2, 0.8), radius=0.8, segments=32, ring_count=16)
    glossy = add_object("sphere", "GlossySphere", glossy_material("Glossy", (0.9, 0.9, 0.9, 1.0), 0.15),
                        (0.4, -0.6, 0.7), radius=0.7, segments=32, ring_count=16)
    add_object("cube", "EmissiveCube", emission_material("Emissive", (1.0, 0.55, 0.2, 1.0), 8.0),
               (1.9, 0.9, 0.35), size=0.7)
    plastic = add_object("torus", "PlasticTorus", principled_material("Plastic", (0.1, 0.35, 0.8, 1.0)),
                         (-0.2, 1.6, 0.25), major_radius=0.6, minor_radius=0.22)
    plastic.rotation_euler = (0.0, 0.0, 0.4)

    light_data = bpy.data.lights.new("AreaLight", type="AREA")
    light_data.energy = 600.0
    light_data.size = 3.0
    light = bpy.data.objects.new("AreaLight", light_data)
    scene.collection.objects.link(light)
    light.location = (-2.5, -2.0, 4.5)
    light.rotation_euler = (0.5, -0.4, 0.0)

    camera_data = bpy.data.cameras.new("Camera")
    camera_data.lens = 50.0
    camera = bpy.data.objects.new("Camera", camera_data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    target = bpy.data.objects.new("CameraTarget", None)
    scene.collection.objects.link(target)
    target.location = (0.0, 0.3, 0.5)
    track = camera.constraints.new("TRACK_TO")
    track.target = target
    track.track_axis = "TRACK_NEGATIVE_Z"
    track.up_axis = "UP_Y"

    # A little animation so that frames differ.
    for frame, (x, y) in zip(range(1, 7), [(6.5, -6.0), (6.0, -6.5), (5.4, -7.0),
                                            (4.7, -7.4), (4.0, -7.7), (3.2, -8.0)]):
        camera.location = (x, y, 3.6)
        camera.keyframe_insert("location", frame=frame)
    for frame, z in ((1, 0.7), (3, 1.6), (6, 0.9)):
        glossy.location.z = z
        glossy.keyframe_insert("location", index=2, frame=frame)

    view_layer = scene.view_layers[0]
    for flag in ("use_pass_combined", "use_pass_z", "use_pass_normal",
                 "use_pass_diffuse_direct", "use_pass_diffuse_indirect", "use_pass_diffuse_color",
                 "use_pass_glossy_direct", "use_pass_glossy_indirect", "use_pass_glossy_color",
                 "use_pass_emit", "use_pass_ambient_occlusion"):
        setattr(view_layer, flag, True)

    scene.frame_set(1)


def main():
    args = script_args()
    if not args:
        print("usage: make_demo.py OUT.blend [RESULT.json]", file=sys.stderr)
        sys.stdout.flush()
        os._exit(2)
    out = os.path.abspath(args[0])
    result = args[1] if len(args) > 1 else None
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        build(bpy.context.scene)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        bpy.ops.wm.save_as_mainfile(filepath=out, check_existing=False)
        payload = {"ok": True, "result": {"path": out}}
    except Exception as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        payload = {"ok": False, "error": text.strip()}
        print(text, file=sys.stderr)
    if result:
        with open(result + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(payload, handle)
        os.replace(result + ".tmp", result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if payload["ok"] else 1)


main()
