"""Renders a small test scene with Cycles as one chunk of a frame.

Usage: blender -b --factory-startup -t 1 --python scene.py -- OUT SAMPLES OFFSET TOTAL [VARIANT] [SUBSET]
   or: python-with-bpy scene.py OUT SAMPLES OFFSET TOTAL [VARIANT] [SUBSET]
VARIANT is `simple` (diffuse, glossy, emission) or `full` (adds a glass sphere and a volume).
SUBSET=subset renders even a full-frame chunk in Blender 4's sample-subset mode.
"""
import sys, bpy, math
argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
out, samples, offset, total = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
variant = argv[4] if len(argv) > 4 else 'simple'
force_subset = len(argv) > 5 and argv[5] == 'subset'
width, height = 40, 30
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = 'CYCLES'
c = scene.cycles
c.device = 'CPU'
if hasattr(c, 'use_sample_subset'):
    # Blender 4.x: `samples` is the frame's total, the chunk is a subset of it.
    c.samples = total
    c.use_sample_subset = samples != total or force_subset
    c.sample_offset = offset
    c.sample_subset_length = samples
else:
    # Blender 3.x: render `samples` samples starting at `sample_offset`.
    c.samples = samples
    c.sample_offset = offset
c.seed = 7
c.use_animated_seed = False
c.use_adaptive_sampling = False
c.use_denoising = False
scene.render.threads_mode = 'FIXED'
scene.render.threads = 1
scene.render.use_compositing = False
scene.render.use_sequencer = False
scene.render.resolution_x = width
scene.render.resolution_y = height
scene.render.resolution_percentage = 100
scene.render.film_transparent = True
scene.render.use_motion_blur = False

def mat(name, kind, color, strength=1.0, index=0):
    m = bpy.data.materials.new(name)
    m.use_nodes = True
    m.pass_index = index
    nt = m.node_tree
    for n in list(nt.nodes):
        nt.nodes.remove(n)
    o = nt.nodes.new('ShaderNodeOutputMaterial')
    if kind == 'diffuse':
        s = nt.nodes.new('ShaderNodeBsdfDiffuse')
    elif kind == 'glossy':
        s = nt.nodes.new('ShaderNodeBsdfGlossy'); s.inputs['Roughness'].default_value = 0.25
    elif kind == 'glass':
        s = nt.nodes.new('ShaderNodeBsdfGlass'); s.inputs['Roughness'].default_value = 0.1
    elif kind == 'emission':
        s = nt.nodes.new('ShaderNodeEmission'); s.inputs['Strength'].default_value = strength
    elif kind == 'volume':
        s = nt.nodes.new('ShaderNodeVolumeScatter'); s.inputs['Density'].default_value = 0.8
        s.inputs['Color'].default_value = color
        nt.links.new(s.outputs[0], o.inputs['Volume'])
        return m
    s.inputs['Color'].default_value = color
    nt.links.new(s.outputs[0], o.inputs['Surface'])
    return m

def add(obj_op, name, location, material, index, **kw):
    obj_op(location=location, **kw)
    ob = bpy.context.active_object
    ob.name = name
    ob.pass_index = index
    ob.data.materials.append(material)
    return ob

add(bpy.ops.mesh.primitive_plane_add, 'Floor', (0, 0, 0), mat('floor', 'diffuse', (0.8, 0.7, 0.5, 1), index=1), 1, size=12)
add(bpy.ops.mesh.primitive_uv_sphere_add, 'Chrome', (-1.2, 0.3, 1), mat('chrome', 'glossy', (0.9, 0.9, 0.9, 1), index=2), 2, radius=1)
add(bpy.ops.mesh.primitive_cube_add, 'Red', (1.3, -0.4, 0.6), mat('red', 'diffuse', (1.0, 0.0, 0.0, 1), index=3), 3, size=1.2)
if variant == 'full':
  add(bpy.ops.mesh.primitive_uv_sphere_add, 'Glass', (0.3, -1.6, 0.5), mat('glass', 'glass', (0.95, 1.0, 0.9, 1), index=4), 4, radius=0.5)
add(bpy.ops.mesh.primitive_ico_sphere_add, 'Lamp', (2.2, 1.5, 1.6), mat('lamp', 'emission', (1.0, 0.6, 0.3, 1), strength=12, index=5), 5, radius=0.35)
if variant == 'full':
  add(bpy.ops.mesh.primitive_cube_add, 'Fog', (-0.2, 2.0, 0.8), mat('fog', 'volume', (0.6, 0.8, 1.0, 1), index=6), 6, size=1.4)
for o in bpy.data.objects:
    bpy.context.view_layer.objects.active = o
    o.select_set(True)
    if o.type == 'MESH' and o.name in ('Chrome', 'Glass', 'Lamp'):
        bpy.ops.object.shade_smooth()
    o.select_set(False)

bpy.ops.object.light_add(type='AREA', location=(-2, -3, 4))
bpy.context.active_object.data.energy = 300
bpy.context.active_object.data.size = 1.5
world = bpy.data.worlds.new('World'); scene.world = world
world.use_nodes = True
world.node_tree.nodes['Background'].inputs['Color'].default_value = (0.2, 0.3, 0.5, 1)
world.node_tree.nodes['Background'].inputs['Strength'].default_value = 0.7
world.mist_settings.start = 2; world.mist_settings.depth = 12

bpy.ops.object.camera_add(location=(0, -7.5, 3.2))
cam = bpy.context.active_object
cam.rotation_euler = (math.radians(70), 0, 0)
scene.camera = cam

vl = scene.view_layers[0]
report = []
def enable(owner, prop):
    try:
        setattr(owner, prop, True); report.append(prop)
    except (AttributeError, TypeError) as e:
        print('PASS-UNAVAILABLE', prop, e)
for p in ['use_pass_combined', 'use_pass_z', 'use_pass_mist', 'use_pass_normal', 'use_pass_position', 'use_pass_uv',
          'use_pass_vector', 'use_pass_object_index', 'use_pass_material_index',
          'use_pass_diffuse_direct', 'use_pass_diffuse_indirect', 'use_pass_diffuse_color',
          'use_pass_glossy_direct', 'use_pass_glossy_indirect', 'use_pass_glossy_color',
          'use_pass_transmission_direct', 'use_pass_transmission_indirect', 'use_pass_transmission_color',
          'use_pass_emit', 'use_pass_environment', 'use_pass_ambient_occlusion',
          'use_pass_cryptomatte_object', 'use_pass_cryptomatte_material']:
    enable(vl, p)
for p in ['denoising_store_passes', 'use_pass_volume_direct', 'use_pass_volume_indirect']:
    enable(vl.cycles, p)
print('ENABLED', ' '.join(report))
img = scene.render.image_settings
img.file_format = 'OPEN_EXR_MULTILAYER'
img.color_depth = '32'
img.exr_codec = 'ZIP'
bpy.ops.render.render()
bpy.data.images['Render Result'].save_render(filepath=out)
print('WROTE', out)
