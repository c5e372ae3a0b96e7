"""The "BlendFleet" render engine: F12 and Ctrl+F12 render on the farm.

Blender calls `render` once per frame, in a render thread when it has a user interface and
on the main thread in background mode. Saving the copy of the .blend is done on the main
thread (`jobs.call_on_main`); every farm call runs in a worker thread that the render thread
waits for in short steps, so Esc (`test_break`) is seen within a tenth of a second and a
manager that stops answering ends the render after the configured timeout.

An animation render submits one job for the whole frame range on its first frame; the later
frames wait for their frame of that job. Scene settings and panels are Cycles': the farm
renders Cycles.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import bpy

from . import connection, deps, exr, jobs, snapshot

POLL_INTERVAL = 0.5
CANCEL_WAIT = 5.0
ENGINE_ID = snapshot.ENGINE_ID


class FarmRenderError(Exception):
    """Ends a render with this message for the user."""


class Cancelled(Exception):
    pass


@dataclass
class ActiveJob:
    client: Any
    job_id: int
    frames: list[int]
    settings: connection.Settings
    workdir: str
    url: str = ""
    notes: list[str] = field(default_factory=list)


_active: dict[str, ActiveJob] = {}  # scene name -> the job an animation render follows
_reattach: dict[str, int] = {}  # scene name -> job id the next render of it follows
last_error: str | None = None  # the last render's error message, for panels and tests
last_missing_channels: list[str] = []  # channels the scene has that the last result lacked


def request_reattach(scene_name: str, job_id: int) -> None:
    _reattach[scene_name] = job_id


def frames_of(scene: bpy.types.Scene, animation: bool) -> list[int]:
    if animation:
        return list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))
    return [scene.frame_current]


def build_spec(scene: bpy.types.Scene, main_file: str, frames: list[int], width: int, height: int) -> dict:
    step = frames[1] - frames[0] if len(frames) > 1 else 1
    return {
        "name": os.path.splitext(os.path.basename(main_file))[0] + f" {scene.name}",
        "main_file": main_file,
        "frames": {"start": frames[0], "end": frames[-1], "step": step},
        "samples": int(scene.cycles.samples),
        "resolution": {"width": width, "height": height},
        "output_format": "exr",
    }


def _persist(scene_name: str, job: ActiveJob) -> None:
    def write() -> None:
        scene = bpy.data.scenes.get(scene_name)
        if scene is not None:
            scene.blendfleet.job_id = job.job_id
            scene.blendfleet.job_url = job.url
            scene.blendfleet.job_frames = ",".join(str(f) for f in job.frames)

    jobs.post_to_main(write)


class FarmRender:
    """One call of `render`: one frame, on the farm."""

    def __init__(self, engine: "BlendFleetEngine", depsgraph: bpy.types.Depsgraph) -> None:
        self.engine = engine
        scene = depsgraph.scene
        self.scene_name = scene.name
        self.frame = scene.frame_current
        self.animation = bool(engine.is_animation)
        self.first_frame = scene.frame_start
        self.width = engine.resolution_x
        self.height = engine.resolution_y

    # -- waiting without blocking --------------------------------------------------------

    def stopped(self) -> bool:
        return bool(self.engine.test_break())

    def farm_call(self, what: str, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """Runs a farm call in a thread; waits for it while watching Esc."""
        outcome = jobs.run_in_thread(fn, *args, name=f"blendfleet-{what}")
        if not jobs.wait(outcome, timeout, self.stopped):
            if self.stopped():
                raise Cancelled()
            raise FarmRenderError(f"the manager did not answer ({what}) within {timeout:.0f} s")
        try:
            return outcome.result()
        except connection.SetupError as error:
            raise FarmRenderError(str(error)) from None
        except Exception as error:  # the module's exceptions carry sentences for the user
            raise FarmRenderError(f"{what}: {error}") from None

    # -- the job -------------------------------------------------------------------------

    def run(self) -> None:
        settings = jobs.call_on_main(lambda: connection.Settings.from_prefs(_prefs()), self.stopped)
        job = self.job(settings)
        try:
            self.follow(job)
        except Cancelled:
            self.cancel(job)
            raise
        finally:
            if not self.animation or self.frame == job.frames[-1]:
                _active.pop(self.scene_name, None)
                shutil.rmtree(job.workdir, ignore_errors=True)

    def job(self, settings: connection.Settings) -> ActiveJob:
        reattach = _reattach.pop(self.scene_name, None)
        if reattach is not None:
            return self.reattach(settings, reattach)
        active = _active.get(self.scene_name)
        if (self.animation and active is not None and self.frame != self.first_frame
                and self.frame in active.frames):
            return active
        return self.submit(settings)

    def connect(self, settings: connection.Settings) -> Any:
        self.engine.update_stats("", "Connecting to the farm")
        from . import farm

        startup = farm.STARTUP_TIMEOUT if settings.provider == "LOCAL" else 0.0
        return self.farm_call("connecting", connection.connect, settings,
                              timeout=startup + settings.timeout + 5)

    def reattach(self, settings: connection.Settings, job_id: int) -> ActiveJob:
        client = self.connect(settings)
        status = self.farm_call("reading the job", client.job, job_id, timeout=settings.timeout + 5)
        frames = [f["frame"] for f in status["frames"]]
        job = ActiveJob(client, job_id, frames, settings, tempfile.mkdtemp(prefix="blendfleet-"),
                        url=client.url)
        _active[self.scene_name] = job
        return job

    def submit(self, settings: connection.Settings) -> ActiveJob:
        workdir = tempfile.mkdtemp(prefix="blendfleet-")
        try:
            snap, spec = self.prepare(settings, workdir)
            client = self.connect(settings)
            progress = {"done": 0, "total": 0}

            def on_progress(done: int, total: int) -> None:
                progress["done"], progress["total"] = done, total

            outcome = jobs.run_in_thread(client.submit, spec, snap.files, on_progress, name="blendfleet-submit")
            last_change, last_done = time.monotonic(), -1
            while not outcome.done.wait(0.1):
                if self.stopped():
                    # A job created after Esc would render for nobody: cancel it too.
                    if jobs.wait(outcome, CANCEL_WAIT) and outcome.error is None:
                        jobs.run_in_thread(client.cancel, int(outcome.value), name="blendfleet-cancel")
                    raise Cancelled()
                if progress["done"] != last_done:
                    last_done, last_change = progress["done"], time.monotonic()
                    total = max(progress["total"], 1)
                    self.engine.update_stats("", "Uploading %.1f of %.1f MB" % (
                        progress["done"] / 1e6, progress["total"] / 1e6))
                    self.engine.update_progress(min(progress["done"] / total, 1.0) * 0.05)
                elif time.monotonic() - last_change > settings.timeout + 5:
                    raise FarmRenderError(
                        f"the upload made no progress for {settings.timeout:.0f} s; is the manager reachable?"
                    )
            try:
                job_id = int(outcome.result())
            except Exception as error:
                raise FarmRenderError(f"submitting the job: {error}") from None
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        job = ActiveJob(client, job_id, frames_of_spec(spec), settings, workdir, url=client.url,
                        notes=snap.notes)
        for note in snap.notes:
            self.engine.report({"WARNING"}, note)
        if snap.left_out:
            self.engine.report({"WARNING"}, "rendering without %d missing file(s): %s" % (
                len(snap.left_out), ", ".join(os.path.basename(d.path) for d in snap.left_out)))
        _active[self.scene_name] = job
        _persist(self.scene_name, job)
        return job

    def prepare(self, settings: connection.Settings, workdir: str) -> tuple[snapshot.Snapshot, dict]:
        """Collects the files and saves the copy (main thread); asks about missing files."""
        self.engine.update_stats("", "Collecting the scene's files")
        frames = None

        def collect() -> deps.Collection:
            nonlocal frames
            scene = bpy.data.scenes[self.scene_name]
            frames = frames_of(scene, self.animation)
            found = deps.collect(scene, range(frames[0], frames[-1] + 1))
            if scene.cycles.use_denoising:
                found.notes.append(
                    "render-time denoising is not applied to farm renders (a denoiser is not "
                    "linear); use a Denoise node in the compositor, which runs on the merged result"
                )
            return found

        found = jobs.call_on_main(collect, self.stopped)
        render_missing = False
        if found.missing:
            render_missing = self.decide_missing(found, settings)

        def write() -> tuple[snapshot.Snapshot, dict]:
            scene = bpy.data.scenes[self.scene_name]
            snap = snapshot.write(found, workdir, render_missing)
            assert frames is not None
            return snap, build_spec(scene, snap.main_file, frames, self.width, self.height)

        try:
            return jobs.call_on_main(write, self.stopped)
        except snapshot.SnapshotError as error:
            raise FarmRenderError(str(error)) from None

    def decide_missing(self, found: deps.Collection, settings: connection.Settings) -> bool:
        from . import missing

        names = ", ".join(d.path for d in found.missing)
        if bpy.app.background:
            if settings.missing_files == "RENDER":
                self.engine.report({"WARNING"}, f"rendering without missing files: {names}")
                return True
            raise FarmRenderError(
                f"{len(found.missing)} file(s) the scene uses are missing: {names}. Nothing was "
                "uploaded. Set BLENDFLEET_MISSING=render (or the add-on's preference) to render without them."
            )
        answer = jobs.call_on_main(lambda: missing.ask(found.missing), self.stopped)
        if not jobs.wait(answer, 3600, self.stopped):
            raise Cancelled()
        if not answer.result():
            raise FarmRenderError(f"stopped: {len(found.missing)} missing file(s): {names}")
        return True

    def cancel(self, job: ActiveJob) -> None:
        self.engine.update_stats("", f"Cancelling job {job.job_id}")
        outcome = jobs.run_in_thread(job.client.cancel, job.job_id, name="blendfleet-cancel")
        outcome.done.wait(CANCEL_WAIT)
        _active.pop(self.scene_name, None)

    # -- following a frame ---------------------------------------------------------------

    def follow(self, job: ActiveJob) -> None:
        if self.frame not in job.frames:
            raise FarmRenderError(f"job {job.job_id} does not render frame {self.frame}")
        engine = self.engine
        result = engine.begin_result(0, 0, self.width, self.height)
        try:
            self._follow(job, result)
        finally:
            engine.end_result(result)

    def _follow(self, job: ActiveJob, result: Any) -> None:
        engine, timeout = self.engine, job.settings.timeout
        last_answer = time.monotonic()
        pending: jobs.Outcome | None = None
        preview: jobs.Outcome | None = None
        preview_samples = -1
        rate = Rate()
        while True:
            if self.stopped():
                raise Cancelled()
            if pending is None:
                pending = jobs.run_in_thread(job.client.job, job.job_id, name="blendfleet-status")
            if not pending.done.wait(POLL_INTERVAL):
                silent = time.monotonic() - last_answer
                if silent > timeout:
                    raise FarmRenderError(self.unreachable(job, silent))
                continue
            outcome, pending = pending, None
            if outcome.error is not None:
                if _is_connection_error(outcome.error):
                    silent = time.monotonic() - last_answer
                    if silent > timeout:
                        raise FarmRenderError(self.unreachable(job, silent, outcome.error))
                    time.sleep(POLL_INTERVAL)
                    continue
                raise FarmRenderError(f"job {job.job_id}: {outcome.error}")
            last_answer = time.monotonic()
            status = outcome.value
            state = status["state"]
            if state == "failed":
                raise FarmRenderError(f"job {job.job_id} failed on the farm: {status.get('error') or 'no message'}")
            if state == "cancelled":
                raise FarmRenderError(f"job {job.job_id} was cancelled on the farm")
            frame = next((f for f in status["frames"] if f["frame"] == self.frame), None)
            if frame is None:
                raise FarmRenderError(f"job {job.job_id} has no frame {self.frame}")
            self.show_progress(job, status, frame, rate)
            if frame["state"] == "done":
                self.load_final(job, result)
                return
            if preview is not None and preview.done.is_set():
                self.show_preview(result, preview)
                preview = None
            if (preview is None and frame.get("preview_available")
                    and frame["samples_done"] != preview_samples):
                preview_samples = frame["samples_done"]
                preview = jobs.run_in_thread(job.client.preview, job.job_id, self.frame,
                                             name="blendfleet-preview")
            time.sleep(POLL_INTERVAL)

    def unreachable(self, job: ActiveJob, silent: float, error: BaseException | None = None) -> str:
        why = f" ({error})" if error else ""
        return (
            f"the manager at {job.url} has not answered for {silent:.0f} s{why}. Job {job.job_id} "
            "stays on the farm: reattach to it from the BlendFleet panel when the manager is back."
        )

    def show_progress(self, job: ActiveJob, status: dict, frame: dict, rate: "Rate") -> None:
        total = max(int(status.get("samples_total") or 0), 1)
        done = int(status.get("samples_done") or 0)
        rate.add(done)
        eta = rate.eta(total - done)
        parts = [f"Job {job.job_id}", f"frame {self.frame}: {frame['samples_done']}/{frame['samples']} samples"]
        if len(job.frames) > 1:
            parts.append(f"all frames {done}/{total}")
        agents = status.get("agents") or []
        if agents:
            parts.append(f"{len(agents)} agent(s)")
        if eta is not None:
            parts.append(f"ETA {format_seconds(eta)}")
        self.engine.update_stats("", " | ".join(parts))
        frame_part = frame["samples_done"] / max(frame["samples"], 1)
        self.engine.update_progress(0.05 + 0.95 * frame_part)

    def show_preview(self, result: Any, preview: jobs.Outcome) -> None:
        data = preview.value if preview.error is None else None
        if not data:
            return
        path = os.path.join(tempfile.gettempdir(), f"blendfleet-preview-{os.getpid()}-{id(self)}.png")
        try:
            with open(path, "wb") as out:
                out.write(data)
            if exr.png_size(data) != (self.width, self.height):
                path = jobs.call_on_main(lambda: scale_png(path, self.width, self.height), self.stopped)
            result.layers[0].load_from_file(path)
            self.engine.update_result(result)
        except Exception as error:  # a preview is a nicety; the render goes on
            print(f"BlendFleet: preview not shown: {error}")
        finally:
            if os.path.exists(path):
                os.remove(path)

    def load_final(self, job: ActiveJob, result: Any) -> None:
        self.engine.update_stats("", f"Job {job.job_id}: downloading frame {self.frame}")
        path = os.path.join(job.workdir, f"frame_{self.frame:06d}.exr")
        self.farm_call("downloading the frame", job.client.download_exr, job.job_id, self.frame, path,
                       timeout=max(job.settings.timeout, 30.0) * 4)
        global last_missing_channels
        missing = sorted(set(exr.expected_channels(result)) - set(exr.exr_channels(path)))
        last_missing_channels = missing
        result.load_from_file(path)
        self.engine.update_result(result)
        self.engine.update_progress(1.0)
        if missing:
            self.engine.report({"WARNING"}, "the farm's result lacks %d channel(s) the scene has: %s"
                               % (len(missing), ", ".join(missing[:12])))


class Rate:
    """Samples per second over the last minute, for the ETA."""

    def __init__(self) -> None:
        self.points: list[tuple[float, int]] = []

    def add(self, done: int) -> None:
        now = time.monotonic()
        self.points.append((now, done))
        self.points = [p for p in self.points if now - p[0] <= 60.0]

    def eta(self, remaining: int) -> float | None:
        if len(self.points) < 2 or remaining <= 0:
            return None
        (t0, d0), (t1, d1) = self.points[0], self.points[-1]
        if d1 <= d0 or t1 <= t0:
            return None
        return remaining / ((d1 - d0) / (t1 - t0))


def format_seconds(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)
    return "%d:%02d" % (seconds // 60, seconds % 60)


def frames_of_spec(spec: dict) -> list[int]:
    frames = spec["frames"]
    return list(range(frames["start"], frames["end"] + 1, frames["step"]))


def scale_png(path: str, width: int, height: int) -> str:
    """The preview resized to the render's size (main thread: uses Blender's images)."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        image.scale(width, height)
        scaled = path[:-4] + "-scaled.png"
        image.filepath_raw = scaled
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)
    os.remove(path)
    return scaled


def _is_connection_error(error: BaseException) -> bool:
    try:
        from . import fleetpy

        return isinstance(error, fleetpy.load().ConnectionFailed)
    except Exception:
        return False


def _prefs() -> Any:
    from . import prefs

    return prefs.get()


class BlendFleetEngine(bpy.types.RenderEngine):
    bl_idname = ENGINE_ID
    bl_label = "BlendFleet"
    bl_use_preview = False
    bl_use_postprocess = True
    bl_use_shading_nodes_custom = False

    def update_render_passes(self, scene=None, renderlayer=None):  # noqa: ANN001 - Blender's API
        import cycles.engine

        cycles.engine.register_passes(self, scene, renderlayer)

    def render(self, depsgraph):  # noqa: ANN001
        global last_error
        if self.is_preview:
            return
        last_error = None
        try:
            FarmRender(self, depsgraph).run()
        except Cancelled:
            self.update_stats("", "Cancelled; the farm job was cancelled")
        except FarmRenderError as error:
            last_error = str(error)
            self.report({"ERROR"}, f"BlendFleet: {error}")
            if hasattr(self, "error_set"):
                self.error_set(f"BlendFleet: {error}")
            print(f"BlendFleet: {error}", flush=True)


def compatible_panels() -> list[type]:
    """Cycles' panels, which BlendFleet shows as its own."""
    panels = []
    for panel in bpy.types.Panel.__subclasses__():
        engines = getattr(panel, "COMPAT_ENGINES", None)
        if isinstance(engines, set) and "CYCLES" in engines:
            panels.append(panel)
    return panels


def register() -> None:
    bpy.utils.register_class(BlendFleetEngine)
    for panel in compatible_panels():
        panel.COMPAT_ENGINES.add(ENGINE_ID)


def unregister() -> None:
    for panel in compatible_panels():
        panel.COMPAT_ENGINES.discard(ENGINE_ID)
    bpy.utils.unregister_class(BlendFleetEngine)
