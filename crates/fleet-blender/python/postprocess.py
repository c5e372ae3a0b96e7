"""Post-processes a merged frame once: denoise, the scene's compositor, the scene's output format.

Run by BlendFleet's manager as
    blender -b --factory-startup --python postprocess.py -- REQUEST.json RESULT.json
or, with pip bpy, as `python postprocess.py REQUEST.json RESULT.json`.

The request names the job's .blend, the merged multilayer EXR and where the final image goes.
The scene is opened, every Render Layers node of its compositor is replaced by an Image node
that reads the merged EXR (so nothing is rendered again), the Combined pass is denoised with
OIDN from the merged Denoising Albedo and Normal passes when the scene asks for denoising and
this Blender has OIDN, and the result is written in the scene's output format. The result file
lists what was done and notes for the job status (denoising unavailable, ...).
"""

import json
import os
import sys
import traceback

import bpy

# Formats whose output the merged multilayer EXR already is, when nothing is post-processed.
EXR_FORMATS = {"OPEN_EXR_MULTILAYER", "OPEN_EXR"}

# Render Layers node outputs that the merged EXR names differently.
RL_TO_EXR = {"Image": "Combined", "Alpha": "Combined"}


def script_args():
    argv = sys.argv
    if "--" in argv:
        return argv[argv.index("--") + 1:]
    return argv[1:]


def has_oidn():
    try:
        import _cycles
    except ImportError:
        return False
    return bool(getattr(_cycles, "with_openimagedenoise", False))


def compositor_tree(scene):
    """The scene's compositor node tree (Blender 5 moved it to a node group)."""
    if hasattr(scene, "compositing_node_group"):
        return scene.compositing_node_group
    return scene.node_tree if scene.use_nodes else None


def new_compositor_tree(scene):
    if hasattr(scene, "compositing_node_group"):
        tree = bpy.data.node_groups.new("BlendFleet Post", "CompositorNodeTree")
        scene.compositing_node_group = tree
        return tree
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    return tree


def output_socket(node, name):
    """The output of an Image node reading a multilayer EXR that carries pass `name`."""
    for socket in node.outputs:
        if socket.name == name and socket.enabled:
            return socket
    return None


def uses_compositor(scene, tree):
    if tree is None or not scene.render.use_compositing:
        return False
    kinds = {node.bl_idname for node in tree.nodes}
    # The factory tree (Render Layers straight into Composite) changes nothing.
    interesting = kinds - {"CompositorNodeRLayers", "CompositorNodeComposite", "CompositorNodeViewer", "NodeReroute"}
    return bool(interesting)


def image_node(tree, image, layer_name, location):
    node = tree.nodes.new("CompositorNodeImage")
    node.image = image
    node.location = location
    if layer_name and hasattr(node, "layer"):
        try:
            node.layer = layer_name
        except TypeError:
            pass
    return node


def denoise_node(tree, source, location):
    """A Denoise node fed the merged Combined, Denoising Albedo and Denoising Normal."""
    node = tree.nodes.new("CompositorNodeDenoise")
    node.location = location
    links = tree.links
    links.new(output_socket(source, "Combined") or source.outputs[0], node.inputs["Image"])
    albedo = output_socket(source, "Denoising Albedo")
    normal = output_socket(source, "Denoising Normal")
    if albedo is not None:
        links.new(albedo, node.inputs["Albedo"])
    if normal is not None:
        links.new(normal, node.inputs["Normal"])
    return node, albedo is not None and normal is not None


def replace_render_layers(tree, image, denoise):
    """Swaps every Render Layers node for Image nodes reading the merged EXR."""
    denoised_any = False
    for rl in [node for node in tree.nodes if node.bl_idname == "CompositorNodeRLayers"]:
        source = image_node(tree, image, rl.layer, rl.location)
        denoised = None
        if denoise:
            denoised, _ = denoise_node(tree, source, (rl.location[0] + 200, rl.location[1]))
            denoised_any = True
        for link in list(tree.links):
            if link.from_node != rl:
                continue
            name = link.from_socket.name
            target = link.to_socket
            if name == "Image" and denoised is not None:
                tree.links.new(denoised.outputs["Image"], target)
            elif name == "Alpha":
                tree.links.new(output_socket(source, "Alpha") or source.outputs[1], target)
            else:
                socket = output_socket(source, RL_TO_EXR.get(name, name))
                if socket is None:
                    raise RuntimeError(
                        f"the compositor uses the pass `{name}`, which the merged image does not have"
                    )
                tree.links.new(socket, target)
        tree.nodes.remove(rl)
    return denoised_any


def simple_tree(scene, image, denoise):
    tree = new_compositor_tree(scene)
    source = image_node(tree, image, None, (0, 0))
    composite = tree.nodes.new("CompositorNodeComposite")
    composite.location = (500, 0)
    if hasattr(composite, "use_alpha"):
        composite.use_alpha = True
    combined = output_socket(source, "Combined") or source.outputs[0]
    if denoise:
        node, _ = denoise_node(tree, source, (250, 0))
        combined = node.outputs["Image"]
    tree.links.new(combined, composite.inputs["Image"])
    alpha = output_socket(source, "Alpha")
    if alpha is not None and "Alpha" in composite.inputs:
        tree.links.new(alpha, composite.inputs["Alpha"])


def postprocess(request):
    bpy.ops.wm.open_mainfile(filepath=request["blend"], load_ui=False)
    scene = bpy.context.scene
    render = scene.render
    notes = []

    wants_denoise = render.engine == "CYCLES" and bool(scene.cycles.use_denoising)
    denoise = wants_denoise and has_oidn()
    if wants_denoise and not denoise:
        notes.append(
            f"denoising unavailable: Blender {bpy.app.version_string} on the manager has no "
            "OpenImageDenoise; the image is not denoised"
        )
    tree = compositor_tree(scene)
    composite = uses_compositor(scene, tree)
    if not (denoise or composite) and render.image_settings.file_format in EXR_FORMATS:
        # The merged multilayer EXR already is what this scene delivers.
        return {
            "output": None,
            "file_format": render.image_settings.file_format,
            "denoised": False,
            "composited": False,
            "notes": notes,
            "blender_version": bpy.app.version_string,
        }

    image = bpy.data.images.load(request["merged"], check_existing=False)
    width, height = request["resolution"]
    render.resolution_x = width
    render.resolution_y = height
    render.resolution_percentage = 100
    render.use_border = False
    render.use_compositing = True
    render.use_sequencer = False
    render.use_file_extension = True

    if composite:
        replace_render_layers(tree, image, denoise)
    else:
        simple_tree(scene, image, denoise)

    if render.image_settings.file_format in {"FFMPEG", "AVI_JPEG", "AVI_RAW"}:
        notes.append("the scene writes a movie; frames are delivered as PNG images")
        render.image_settings.file_format = "PNG"
    # Nothing is rendered: the compositor has no Render Layers node left. Workbench keeps
    # the render step trivial in any case.
    render.engine = "BLENDER_WORKBENCH"
    bpy.ops.render.render(write_still=False)
    result = bpy.data.images["Render Result"]
    output = request["output_stem"] + render.file_extension
    result.save_render(filepath=output, scene=scene)
    if not os.path.exists(output):
        raise RuntimeError(f"Blender wrote no image to {output}")
    return {
        "output": output,
        "file_format": render.image_settings.file_format,
        "denoised": denoise,
        "composited": composite,
        "notes": notes,
        "blender_version": bpy.app.version_string,
    }


def main():
    request_path, result_path = script_args()[:2]
    with open(request_path, encoding="utf-8") as file:
        request = json.load(file)
    try:
        outcome = {"ok": True, "result": postprocess(request)}
    except Exception as error:  # reported to the manager, which keeps the merged result
        traceback.print_exc()
        outcome = {"ok": False, "error": str(error) or type(error).__name__}
    with open(result_path, "w", encoding="utf-8") as file:
        json.dump(outcome, file)


main()
