"""A copy of the open .blend and the job's file map, ready to upload.

The job's file tree mirrors the user's disk below the deepest directory that holds the
.blend and every dependency (the "root"). Relative paths (`//tex/wood.png`,
`//../shared/lib.blend`) therefore resolve on the agent as they do here, also inside linked
libraries, which cannot be rewritten from the main file. Absolute paths of the main file's
own datablocks are rewritten as relative ones in the copy. The user's file on disk is never
written: the copy is saved with `save_as_mainfile(copy=True, relative_remap=False)`, and the
paths and render engine changed for it are put back at once.

Must run on Blender's main thread.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import bpy

from . import deps

ENGINE_ID = "BLENDFLEET"
UNTITLED = "untitled.blend"


class SnapshotError(Exception):
    """The copy could not be made; the message is for the user."""


@dataclass
class Snapshot:
    directory: str  # temporary directory holding the copy
    main_file: str  # the .blend's path in the job
    files: dict[str, str] = field(default_factory=dict)  # job path -> local path
    left_out: list[deps.Dependency] = field(default_factory=list)  # missing, rendered without
    notes: list[str] = field(default_factory=list)


def job_root(paths: list[str]) -> str:
    """The deepest directory holding every path in `paths` (absolute file paths)."""
    directories = [os.path.dirname(path) for path in paths]
    try:
        return os.path.commonpath(directories)
    except ValueError as error:  # Windows paths on different drives
        raise SnapshotError(
            "the scene's files lie on different drives; move them to one drive: %s" % error
        ) from None


def job_path(path: str, root: str) -> str:
    """`path`'s name in the job: relative to `root`, with forward slashes."""
    relative = os.path.relpath(path, root)
    return relative.replace(os.sep, "/")


def _relative_to(path: str, directory: str) -> str | None:
    try:
        return "//" + os.path.relpath(path, directory).replace(os.sep, "/")
    except ValueError:
        return None


def _path_owners() -> Iterator[tuple[object, str, bpy.types.ID]]:
    """(owner, attribute, ID it belongs to) for every local file path in the open file."""
    for collection in ("images", "movieclips", "sounds", "fonts", "volumes", "cache_files"):
        for idblock in getattr(bpy.data, collection, []):
            if idblock.library is None:
                yield idblock, "filepath", idblock
    for lib in bpy.data.libraries:
        if lib.parent is None:  # indirect libraries' paths live in their parent library
            yield lib, "filepath", lib
    for obj in bpy.data.objects:
        if obj.library is not None:
            continue
        for modifier in obj.modifiers:
            if modifier.type == "FLUID" and modifier.fluid_type == "DOMAIN":
                yield modifier.domain_settings, "cache_directory", obj
            for cache, _what in deps._point_caches_of_modifier(modifier):
                if cache.use_external:
                    yield cache, "filepath", obj


@contextmanager
def _relative_paths(main_dir: str) -> Iterator[list[str]]:
    """Rewrites absolute paths of local datablocks relative to `main_dir` until the block
    ends. Yields notes about paths that could not be made relative."""
    changed: list[tuple[object, str, str]] = []
    notes: list[str] = []
    try:
        for owner, attribute, idblock in _path_owners():
            value = getattr(owner, attribute)
            if not value or value.startswith("//") or value == "<builtin>":
                continue
            if deps._is_packed(idblock):
                continue
            relative = _relative_to(os.path.normpath(value), main_dir)
            if relative is None:
                notes.append(f"{deps._label(idblock)}: `{value}` cannot be made relative")
                continue
            changed.append((owner, attribute, value))
            setattr(owner, attribute, relative)
        yield notes
    finally:
        for owner, attribute, value in reversed(changed):
            setattr(owner, attribute, value)


@contextmanager
def _engine_cycles() -> Iterator[None]:
    """The farm renders Cycles: scenes set to BlendFleet are saved as Cycles scenes."""
    changed = []
    try:
        for scene in bpy.data.scenes:
            if scene.library is None and scene.render.engine == ENGINE_ID:
                changed.append(scene)
                scene.render.engine = "CYCLES"
        yield
    finally:
        for scene in changed:
            scene.render.engine = ENGINE_ID


def write(collection: deps.Collection, directory: str, render_missing: bool) -> Snapshot:
    """Saves the copy into `directory` and returns the job's file map.

    A missing dependency raises `SnapshotError` unless `render_missing`; then the job is
    made without it and it is listed in `left_out`."""
    missing = collection.missing
    if missing and not render_missing:
        names = "\n".join(f"  {dep.path} ({dep.owner})" for dep in missing)
        raise SnapshotError("%d file(s) the scene uses are missing:\n%s" % (len(missing), names))
    present = collection.present
    original = bpy.data.filepath
    name = os.path.basename(original) if original else UNTITLED
    anchors = [dep.path for dep in present]
    if original:
        anchors.append(os.path.normpath(original))
    root = job_root(anchors) if anchors else directory
    main_dir = os.path.dirname(os.path.normpath(original)) if original else root
    copy = os.path.join(directory, name)
    snapshot = Snapshot(directory=directory, main_file=job_path(os.path.join(main_dir, name), root))
    snapshot.left_out = missing
    snapshot.notes = list(collection.notes)
    with _relative_paths(main_dir) as notes, _engine_cycles():
        snapshot.notes += notes
        result = bpy.ops.wm.save_as_mainfile(
            filepath=copy, copy=True, relative_remap=False, compress=False
        )
    if "FINISHED" not in result or not os.path.isfile(copy):
        raise SnapshotError(f"Blender could not save a copy of the scene to {copy}")
    snapshot.files[snapshot.main_file] = copy
    for dep in present:
        snapshot.files[job_path(dep.path, root)] = dep.path
    return snapshot
