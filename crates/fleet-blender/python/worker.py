# BlendFleet's Blender-side script.
#
# Runs inside Blender in two ways, with the same arguments after the script:
#   blender -b --factory-startup -noaudio --python worker.py -- MODE ARGS...
#   python worker.py MODE ARGS...            (a Python with pip `bpy`)
#
# Modes:
#   serve SOCKET             resident worker: connects to the Unix socket SOCKET and
#                            answers JSON-line requests until told to stop or until the
#                            connection closes (then it exits at once, even mid-render);
#                            the protocol is described in src/protocol.rs
#   inspect REQUEST RESULT   describe a .blend
#   reference REQUEST RESULT one plain render of a frame, no persistent data
#   version REQUEST RESULT   report the Blender version
#
# One-shot modes read a JSON request from the file REQUEST and write one JSON object,
# {"ok": true, ...} or {"ok": false, "error": "..."}, to the file RESULT.
#
# The process always ends with os._exit: pip bpy hangs at interpreter exit while a
# daemon thread is alive, and Blender's own exit path adds nothing we need.

import json
import os
import socket
import sys
import threading
import time
import traceback

import bpy


class FleetError(Exception):
    """An error whose message is meant for the user as it is."""


def script_args():
    argv = sys.argv
    if "--" in argv:
        return argv[argv.index("--") + 1:]
    return argv[1:]


def blender_version():
    return "%d.%d.%d" % tuple(bpy.app.version[:3])


def error_text(exc):
    """The message to show for an exception raised while talking to Blender."""
    if isinstance(exc, FleetError):
        return str(exc)
    if isinstance(exc, RuntimeError):
        # bpy operators raise RuntimeError carrying Blender's own report, e.g.
        # "Error: Cannot render, no camera".
        return str(exc).strip()
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text.strip()


def stdlib_ok():
    """Whether Blender found a usable Python standard library (see the PATH note in the crate)."""
    try:
        import ssl  # noqa: F401
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------
# Scene settings shared by chunks and reference renders
# ---------------------------------------------------------------------------

# Image settings `configure` changes, in the order they must be set back.
FORMAT_SETTINGS = ("media_type", "file_format", "color_mode", "color_depth", "exr_codec", "quality", "compression")


def snapshot(scene):
    """Settings a request may override and that must come back when it does not."""
    return {
        "seed": scene.cycles.seed,
        "sampling_pattern": scene.cycles.sampling_pattern,
        "resolution_x": scene.render.resolution_x,
        "resolution_y": scene.render.resolution_y,
        "resolution_percentage": scene.render.resolution_percentage,
    }


def set_if_present(owner, name, value):
    if hasattr(owner, name):
        setattr(owner, name, value)


# Blender 4.x sampling patterns whose sequence does not depend on the total sample count.
COUNT_INDEPENDENT_PATTERNS = {"TABULATED_SOBOL"}


def set_sample_range(cycles, start, count, frame_samples):
    """Render samples [start, start + count) of the frame.

    Blender 3.x renders `samples` samples starting at `sample_offset`. Blender 4.x
    ignores `sample_offset` unless `use_sample_subset` is on, and then renders
    `sample_subset_length` samples from `sample_offset` out of `samples`; its default
    blue-noise pattern (4.2+) depends on `samples`, so every chunk of a frame must give
    the same `samples`. Without the frame's total (`frame_samples`), the
    count-independent Tabulated Sobol pattern is used instead, which a single render with
    the same settings reproduces exactly.
    """
    if frame_samples and start + count > int(frame_samples):
        raise FleetError("samples %d to %d lie beyond the frame's %d samples"
                         % (start, start + count, int(frame_samples)))
    if hasattr(cycles, "use_sample_subset"):
        if frame_samples:
            total = int(frame_samples)
        else:
            total = start + count
            if cycles.sampling_pattern not in COUNT_INDEPENDENT_PATTERNS:
                cycles.sampling_pattern = "TABULATED_SOBOL"
        cycles.use_sample_subset = True
        cycles.samples = total
        cycles.sample_offset = start
        cycles.sample_subset_length = count
    else:
        cycles.sample_offset = start
        cycles.samples = count


def samples_rendered(cycles):
    if getattr(cycles, "use_sample_subset", False):
        return cycles.sample_subset_length
    return cycles.samples


def configure(scene, req, original, persistent):
    """Apply the split-render settings. Every chunk of a frame gets the same seed and
    its own sample range; nothing non-linear (denoising, compositing) runs here."""
    engine = scene.render.engine
    if engine != "CYCLES":
        raise FleetError("BlendFleet splits Cycles renders; this scene uses %s" % engine)

    cycles = scene.cycles
    seed = req.get("seed")
    cycles.seed = original["seed"] if seed is None else int(seed)
    cycles.sampling_pattern = original["sampling_pattern"]
    set_sample_range(cycles, int(req["sample_start"]), int(req["sample_count"]), req.get("frame_samples"))
    # Per-view-layer sample counts would override the range.
    set_if_present(cycles, "use_layer_samples", "IGNORE")
    # Path guiding learns from the samples a render has taken so far, so a chunk that
    # starts late would trace different paths than a single render does.
    set_if_present(cycles, "use_guiding", False)
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False
    set_if_present(cycles, "use_preview_denoising", False)
    cycles.time_limit = 0.0

    render = scene.render
    render.use_compositing = False
    render.use_sequencer = False
    render.use_persistent_data = persistent

    threads = int(req.get("threads") or 0)
    if threads > 0:
        render.threads_mode = "FIXED"
        render.threads = threads
    else:
        render.threads_mode = "AUTO"

    resolution = req.get("resolution")
    if resolution is not None:
        render.resolution_x = int(resolution[0])
        render.resolution_y = int(resolution[1])
        render.resolution_percentage = 100
    else:
        render.resolution_x = original["resolution_x"]
        render.resolution_y = original["resolution_y"]
        render.resolution_percentage = original["resolution_percentage"]

    for view_layer in scene.view_layers:
        view_layer.cycles.denoising_store_passes = True

    settings = render.image_settings
    if hasattr(settings, "media_type"):
        # Blender 5.0 groups formats by media type.
        settings.media_type = "MULTI_LAYER_IMAGE"
    settings.file_format = "OPEN_EXR_MULTILAYER"
    settings.color_depth = "32"
    settings.exr_codec = "ZIP"

    scene.frame_set(int(req["frame"]))


def render_and_save(scene, output):
    """Render the configured scene; returns (render seconds, save seconds)."""
    if os.path.exists(output):
        os.remove(output)
    started = time.perf_counter()
    bpy.ops.render.render(write_still=False)
    rendered = time.perf_counter()
    image = bpy.data.images.get("Render Result")
    if image is None:
        raise FleetError("Blender rendered no image (no Render Result)")
    image.save_render(filepath=output, scene=scene)
    saved = time.perf_counter()
    if not os.path.isfile(output):
        raise FleetError("Blender did not write %s" % output)
    return rendered - started, saved - rendered


def open_blend(path):
    bpy.ops.wm.open_mainfile(filepath=path)
    return bpy.context.scene


# ---------------------------------------------------------------------------
# Resident worker
# ---------------------------------------------------------------------------

class Connection:
    """JSON lines over the control socket. A reader thread hands requests to the main
    thread and ends the process when the socket closes, so a dead parent never leaves
    this Blender behind (the thread runs while Cycles renders: it releases the GIL)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.queue = []
        self.reader = threading.Thread(target=self._read, name="blendfleet-control", daemon=True)
        self.reader.start()

    def _read(self):
        stream = self.sock.makefile("r", encoding="utf-8")
        try:
            for line in stream:
                line = line.strip()
                if not line:
                    continue
                with self.cond:
                    self.queue.append(line)
                    self.cond.notify()
        except Exception:
            pass
        # The controlling process went away: stop now, whatever is running.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def receive(self):
        with self.cond:
            while not self.queue:
                self.cond.wait()
            return self.queue.pop(0)

    def send(self, message):
        data = (json.dumps(message) + "\n").encode("utf-8")
        with self.lock:
            self.sock.sendall(data)


class Worker:
    def __init__(self):
        self.path = None
        self.stamp = None
        self.original = None

    def ensure_loaded(self, path):
        """Open `path` unless it is the loaded file, unchanged. Returns True if opened."""
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp is not None and self.path == path and self.stamp == stamp:
            return False
        self.path = None
        scene = open_blend(path)
        self.path = path
        self.stamp = stamp
        self.original = snapshot(scene)
        return True

    def render(self, req):
        started = time.perf_counter()
        loaded = self.ensure_loaded(req["blend"])
        scene = bpy.context.scene
        configure(scene, req, self.original, persistent=True)
        prepared = time.perf_counter()
        render_seconds, save_seconds = render_and_save(scene, req["output"])
        return {
            "samples": samples_rendered(scene.cycles),
            "loaded_scene": loaded,
            "prepare_seconds": prepared - started,
            "render_seconds": render_seconds,
            "save_seconds": save_seconds,
        }

    def serve(self, conn):
        while True:
            line = conn.receive()
            try:
                req = json.loads(line)
            except ValueError as exc:
                conn.send({"id": None, "ok": False, "error": "bad request: %s" % exc})
                continue
            ident = req.get("id")
            op = req.get("op")
            if op == "shutdown":
                conn.send({"id": ident, "ok": True})
                return
            if op != "render":
                conn.send({"id": ident, "ok": False, "error": "unknown op %r" % op})
                continue
            try:
                result = self.render(req)
                conn.send({"id": ident, "ok": True, "result": result})
            except Exception as exc:
                # After a failure the loaded state is not trusted: reopen next time.
                self.path = None
                conn.send({"id": ident, "ok": False, "error": error_text(exc)})


def serve(socket_path):
    conn = Connection(socket_path)
    conn.send({
        "event": "ready",
        "pid": os.getpid(),
        "blender_version": blender_version(),
        "python_version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "stdlib_ok": stdlib_ok(),
    })
    Worker().serve(conn)


# ---------------------------------------------------------------------------
# One-shot modes
# ---------------------------------------------------------------------------

PASS_FLAGS = [
    ("use_pass_combined", "Combined"),
    ("use_pass_z", "Depth"),
    ("use_pass_mist", "Mist"),
    ("use_pass_position", "Position"),
    ("use_pass_normal", "Normal"),
    ("use_pass_vector", "Vector"),
    ("use_pass_uv", "UV"),
    ("use_pass_object_index", "IndexOB"),
    ("use_pass_material_index", "IndexMA"),
    ("use_pass_diffuse_direct", "DiffDir"),
    ("use_pass_diffuse_indirect", "DiffInd"),
    ("use_pass_diffuse_color", "DiffCol"),
    ("use_pass_glossy_direct", "GlossDir"),
    ("use_pass_glossy_indirect", "GlossInd"),
    ("use_pass_glossy_color", "GlossCol"),
    ("use_pass_transmission_direct", "TransDir"),
    ("use_pass_transmission_indirect", "TransInd"),
    ("use_pass_transmission_color", "TransCol"),
    ("use_pass_emit", "Emit"),
    ("use_pass_environment", "Env"),
    ("use_pass_ambient_occlusion", "AO"),
    ("use_pass_shadow", "Shadow"),
]

CYCLES_PASS_FLAGS = [
    ("use_pass_volume_direct", "VolumeDir"),
    ("use_pass_volume_indirect", "VolumeInd"),
    ("use_pass_shadow_catcher", "Shadow Catcher"),
    ("pass_debug_sample_count", "Debug Sample Count"),
]


def passes_of(view_layer):
    names = [name for flag, name in PASS_FLAGS if getattr(view_layer, flag, False)]
    names += [name for flag, name in CYCLES_PASS_FLAGS if getattr(view_layer.cycles, flag, False)]
    if getattr(view_layer.cycles, "denoising_store_passes", False):
        names += ["Denoising Normal", "Denoising Albedo", "Denoising Depth"]
    for kind, flag in (("Object", "object"), ("Material", "material"), ("Asset", "asset")):
        if getattr(view_layer, "use_pass_cryptomatte_" + flag, False):
            names.append("Crypto" + kind)
    names += [aov.name for aov in getattr(view_layer, "aovs", [])]
    return names


def inspect(req):
    scene = open_blend(req["blend"])
    render = scene.render
    engine = render.engine
    if engine == "CYCLES":
        samples = scene.cycles.samples
    elif hasattr(scene, "eevee"):
        samples = scene.eevee.taa_render_samples
    else:
        samples = 0
    percentage = render.resolution_percentage
    passes = []
    layers = [layer for layer in scene.view_layers if layer.use]
    for layer in layers:
        for name in passes_of(layer):
            if name not in passes:
                passes.append(name)
    dependencies = sorted({
        os.path.normpath(path)
        for path in bpy.utils.blend_paths(absolute=True, packed=True, local=False)
    })
    return {
        "engine": engine,
        "samples": samples,
        "frame_start": scene.frame_start,
        "frame_end": scene.frame_end,
        "frame_step": scene.frame_step,
        "frame_current": scene.frame_current,
        "resolution": [
            render.resolution_x * percentage // 100,
            render.resolution_y * percentage // 100,
        ],
        "view_layers": [layer.name for layer in layers],
        "passes": passes,
        "camera": scene.camera.name if scene.camera else None,
        "blender_version": blender_version(),
        "dependencies": dependencies,
    }


def reference(req):
    scene = open_blend(req["blend"])
    finished = bool(req.get("finished"))
    if finished:
        # What the scene itself would deliver: its denoiser, compositor and file format.
        settings = scene.render.image_settings
        kept = {
            "use_denoising": scene.cycles.use_denoising,
            "use_compositing": scene.render.use_compositing,
            "format": {name: getattr(settings, name) for name in FORMAT_SETTINGS if hasattr(settings, name)},
        }
    configure(scene, req, snapshot(scene), persistent=False)
    if finished:
        scene.cycles.use_denoising = kept["use_denoising"]
        scene.render.use_compositing = kept["use_compositing"]
        for name, value in kept["format"].items():
            try:
                setattr(settings, name, value)
            except (TypeError, ValueError):
                pass  # not valid for this format; Blender's default for it stays
    render_seconds, save_seconds = render_and_save(scene, req["output"])
    return {"render_seconds": render_seconds, "save_seconds": save_seconds}


def version(_req):
    return {"blender_version": blender_version(), "stdlib_ok": stdlib_ok()}


ONE_SHOT = {"inspect": inspect, "reference": reference, "version": version}


def write_result(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(payload, out)
    os.replace(tmp, path)


def one_shot(mode, request_path, result_path):
    try:
        with open(request_path, encoding="utf-8") as source:
            req = json.load(source)
        payload = {"ok": True, "result": ONE_SHOT[mode](req)}
    except Exception as exc:
        payload = {"ok": False, "error": error_text(exc)}
    write_result(result_path, payload)
    return 0 if payload["ok"] else 1


def main():
    args = script_args()
    code = 2
    try:
        if len(args) == 2 and args[0] == "serve":
            serve(args[1])
            code = 0
        elif len(args) == 3 and args[0] in ONE_SHOT:
            code = one_shot(*args)
        else:
            print("blendfleet worker: bad arguments %r" % (args,), file=sys.stderr)
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


main()
