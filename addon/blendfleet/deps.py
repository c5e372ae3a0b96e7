"""Which files a render of the open scene reads from disk.

Everything here reads Blender data and the file system only: no network, no writes. The
result is a list of `Dependency` records, each with the absolute path of one file (or of a
file that should exist and does not), the datablock that needs it and whether it is there.
`snapshot.py` turns that list into the job's file map and a remapped copy of the .blend.

Kinds collected: linked libraries (with the libraries they link, to any depth), images
(single files, UDIM tiles, image sequences), movie clips, sounds (only when the sequencer
renders them), fonts, volumes (single files and sequences), point caches written to disk
(cloth, soft body, dynamic paint, particles, rigid body world), fluid (Mantaflow) caches,
and Alembic/USD cache files (`CacheFile`, single files and sequences). Packed data needs
nothing and is skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import bpy

# Frames around the rendered range whose cache files are taken too: motion blur and
# sub-frame interpolation read the neighbours.
CACHE_FRAME_MARGIN = 1


@dataclass(frozen=True)
class Dependency:
    """One file a render needs."""

    path: str  # absolute, normalised
    kind: str  # "library", "image", "udim", "sequence", "movie", "sound", "font", ...
    owner: str  # the datablock that needs it, e.g. "Image 'wood'"
    exists: bool


@dataclass
class Collection:
    """What `collect` found."""

    dependencies: list[Dependency] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things the user should know

    @property
    def missing(self) -> list[Dependency]:
        return [dep for dep in self.dependencies if not dep.exists]

    @property
    def present(self) -> list[Dependency]:
        return [dep for dep in self.dependencies if dep.exists]

    def add(self, path: str, kind: str, owner: str) -> None:
        path = os.path.normpath(path)
        for dep in self.dependencies:
            if dep.path == path:
                return
        self.dependencies.append(Dependency(path, kind, owner, os.path.isfile(path)))


def _abspath(path: str, library: bpy.types.Library | None = None) -> str:
    """An absolute path for a datablock path; `//` is relative to the file that holds it."""
    absolute = bpy.path.abspath(path, library=library) if library else bpy.path.abspath(path)
    return os.path.normpath(absolute)


def _label(idblock: bpy.types.ID) -> str:
    kind = type(idblock).__name__
    lib = f" (from {idblock.library.filepath})" if getattr(idblock, "library", None) else ""
    return f"{kind} '{idblock.name}'{lib}"


def _is_packed(idblock: bpy.types.ID) -> bool:
    return getattr(idblock, "packed_file", None) is not None or bool(
        getattr(idblock, "packed_files", None)
    )


# -- numbered files ----------------------------------------------------------------------

_DIGITS_AT_END = re.compile(r"^(.*?)(\d+)(\D*)$")


def numbered_siblings(path: str) -> list[str]:
    """Files next to `path` that differ from it only in the last group of digits of the
    name (`fire_0012.vdb` -> `fire_0001.vdb`, `fire_0002.vdb`, ...), `path` included when
    it exists. Used for image, volume and cache-file sequences."""
    directory, name = os.path.split(path)
    match = _DIGITS_AT_END.match(name)
    if match is None:
        return [path] if os.path.isfile(path) else []
    head, _digits, tail = match.groups()
    pattern = re.compile(re.escape(head) + r"\d+" + re.escape(tail) + r"$")
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names if pattern.match(n))


def frame_of(path: str) -> int | None:
    match = _DIGITS_AT_END.match(os.path.basename(path))
    return int(match.group(2)) if match else None


# -- kinds -----------------------------------------------------------------------------


def _libraries(found: Collection) -> None:
    # bpy.data.libraries holds indirectly linked libraries too; Blender shows their paths
    # relative to the main file, like the direct ones.
    for lib in bpy.data.libraries:
        if _is_packed(lib):
            continue
        found.add(_abspath(lib.filepath), "library", _label(lib))


def udim_tiles(image: bpy.types.Image) -> list[str]:
    """The tile files of a UDIM image, from its tile list."""
    path = _abspath(image.filepath, image.library)
    tiles = [tile.number for tile in image.tiles]
    if "<UDIM>" in path:
        return [path.replace("<UDIM>", str(number)) for number in tiles]
    # Older files store the first tile's path (`wood.1001.png`).
    directory, name = os.path.split(path)
    match = re.match(r"^(.*?)(1\d\d\d)(\D*)$", name)
    if match is None:
        return [path]
    head, _first, tail = match.groups()
    return [os.path.join(directory, f"{head}{number}{tail}") for number in tiles]


def _images(found: Collection, frames: range) -> None:
    for image in bpy.data.images:
        if image.source not in {"FILE", "SEQUENCE", "MOVIE", "TILED"}:
            continue  # generated, viewer, render result
        if _is_packed(image) or not image.filepath:
            continue
        if image.users == 0:
            continue
        owner = _label(image)
        if image.source == "TILED":
            for tile in udim_tiles(image):
                found.add(tile, "udim", owner)
        elif image.source == "SEQUENCE":
            path = _abspath(image.filepath, image.library)
            siblings = numbered_siblings(path)
            if not siblings:
                found.add(path, "sequence", owner)
            for sibling in siblings:
                found.add(sibling, "sequence", owner)
        else:
            kind = "movie" if image.source == "MOVIE" else "image"
            found.add(_abspath(image.filepath, image.library), kind, owner)


def _movie_clips(found: Collection) -> None:
    for clip in bpy.data.movieclips:
        if not clip.filepath or clip.users == 0:
            continue
        path = _abspath(clip.filepath, clip.library)
        if clip.source == "SEQUENCE":
            for sibling in numbered_siblings(path) or [path]:
                found.add(sibling, "movie clip", _label(clip))
        else:
            found.add(path, "movie clip", _label(clip))


def _sequencer_renders(scene: bpy.types.Scene) -> bool:
    editor = scene.sequence_editor
    if editor is None or not scene.render.use_sequencer:
        return False
    strips = getattr(editor, "strips_all", None) or getattr(editor, "sequences_all", [])
    return len(strips) > 0


def _sounds(found: Collection, scene: bpy.types.Scene, include: bool | None) -> None:
    # Rendering pictures never reads sound; a sequencer that renders strips might (and the
    # farm renders with the sequencer off), so sounds are taken only when asked for or
    # when the scene's sequencer is in use.
    if include is None:
        include = _sequencer_renders(scene)
    if not include:
        return
    for sound in bpy.data.sounds:
        if _is_packed(sound) or not sound.filepath or sound.users == 0:
            continue
        found.add(_abspath(sound.filepath, sound.library), "sound", _label(sound))


def _fonts(found: Collection) -> None:
    for font in bpy.data.fonts:
        if _is_packed(font) or font.filepath in {"", "<builtin>"} or font.users == 0:
            continue
        found.add(_abspath(font.filepath, font.library), "font", _label(font))


def _volumes(found: Collection, frames: range) -> None:
    for volume in bpy.data.volumes:
        if _is_packed(volume) or not volume.filepath or volume.users == 0:
            continue
        path = _abspath(volume.filepath, volume.library)
        if volume.is_sequence:
            files = _in_frames(numbered_siblings(path), frames, volume.frame_offset)
            for sibling in files or [path]:
                found.add(sibling, "volume", _label(volume))
        else:
            found.add(path, "volume", _label(volume))


def _cache_files(found: Collection, frames: range) -> None:
    for cache in getattr(bpy.data, "cache_files", []):
        if not cache.filepath or cache.users == 0:
            continue
        path = _abspath(cache.filepath, cache.library)
        if cache.is_sequence:
            for sibling in numbered_siblings(path) or [path]:
                found.add(sibling, "cache file", _label(cache))
        else:
            found.add(path, "cache file", _label(cache))
        for layer in getattr(cache, "layers", []):  # Alembic override layers (3.0+)
            found.add(_abspath(layer.filepath, cache.library), "cache file", _label(cache))


def _in_frames(files: list[str], frames: range, offset: int = 0) -> list[str]:
    low, high = frames.start - CACHE_FRAME_MARGIN, frames.stop - 1 + CACHE_FRAME_MARGIN
    kept = []
    for path in files:
        number = frame_of(path)
        if number is None or low <= number - offset <= high:
            kept.append(path)
    return kept


# -- point caches ----------------------------------------------------------------------


def _point_caches_of_modifier(modifier) -> Iterator[tuple[bpy.types.PointCache, str]]:
    """(cache, what) for the point caches a modifier owns."""
    if modifier.type in {"CLOTH", "SOFT_BODY"} and getattr(modifier, "point_cache", None):
        yield modifier.point_cache, f"{modifier.type.lower()} '{modifier.name}'"
    if modifier.type == "DYNAMIC_PAINT" and modifier.canvas_settings:
        for surface in modifier.canvas_settings.canvas_surfaces:
            yield surface.point_cache, f"dynamic paint surface '{surface.name}'"
    if modifier.type == "PARTICLE_SYSTEM":
        system = modifier.particle_system
        if system.point_cache is not None:
            yield system.point_cache, f"particle system '{system.name}'"


def _point_caches(obj: bpy.types.Object) -> Iterator[tuple[bpy.types.PointCache, str]]:
    """(cache, what) for every point cache an object owns."""
    for modifier in obj.modifiers:
        yield from _point_caches_of_modifier(modifier)


def _ptcache_prefix(cache: bpy.types.PointCache, owner: bpy.types.ID) -> str:
    # Blender names disk caches after the cache's name, or the owner's name in hex.
    if cache.name and not cache.use_external:
        return cache.name
    return "".join("%02X" % byte for byte in owner.name.encode("utf-8"))


def _ptcache_dir(cache: bpy.types.PointCache, owner: bpy.types.ID) -> str | None:
    if cache.use_external:
        return _abspath(cache.filepath, owner.library)
    lib = owner.library
    blend = _abspath(lib.filepath, lib.parent) if lib else bpy.data.filepath
    if not blend:
        return None
    directory, name = os.path.split(blend)
    stem = name[:-6] if name.lower().endswith(".blend") else name
    return os.path.join(directory, "blendcache_" + stem)


def _disk_cache_files(found: Collection, cache, owner, what: str, frames: range) -> None:
    if not (cache.use_disk_cache or cache.use_external):
        return  # kept in the .blend
    directory = _ptcache_dir(cache, owner)
    label = f"{_label(owner)}, {what}"
    if directory is None:
        found.notes.append(f"{label}: a disk cache needs a saved .blend; not collected")
        return
    prefix = _ptcache_prefix(cache, owner)
    index = cache.index
    pattern = re.compile(
        re.escape(prefix) + r"_(\d{6})_(\d{2})\.bphys$"
    )
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    taken = 0
    for name in names:
        match = pattern.match(name)
        if match is None:
            continue
        if index >= 0 and int(match.group(2)) != index and not cache.use_external:
            continue
        taken += 1
        found.add(os.path.join(directory, name), "point cache", label)
    if taken == 0 and cache.is_baked:
        found.add(os.path.join(directory, f"{prefix}_{frames.start:06d}_{max(index, 0):02d}.bphys"),
                  "point cache", label)


def _fluid_caches(found: Collection, obj, frames: range) -> None:
    for modifier in obj.modifiers:
        if modifier.type != "FLUID" or modifier.fluid_type != "DOMAIN":
            continue
        settings = modifier.domain_settings
        directory = _abspath(settings.cache_directory, obj.library)
        label = f"{_label(obj)}, fluid cache"
        taken = 0
        for root, _dirs, names in os.walk(directory):
            for name in sorted(names):
                path = os.path.join(root, name)
                if _in_frames([path], frames):
                    found.add(path, "fluid cache", label)
                    taken += 1
        if taken == 0 and settings.cache_type != "REPLAY":
            found.notes.append(f"{label}: nothing baked in {directory}")


def _scene_objects(scene: bpy.types.Scene) -> Iterable[bpy.types.Object]:
    seen = set()
    for obj in scene.objects:
        if obj.name_full not in seen:
            seen.add(obj.name_full)
            yield obj


def _physics(found: Collection, scene: bpy.types.Scene, frames: range) -> None:
    for obj in _scene_objects(scene):
        for cache, what in _point_caches(obj):
            _disk_cache_files(found, cache, obj, what, frames)
        _fluid_caches(found, obj, frames)
    world = scene.rigidbody_world
    if world is not None and world.point_cache is not None:
        _disk_cache_files(found, world.point_cache, scene, "rigid body world", frames)


# -- entry point ------------------------------------------------------------------------


def collect(
    scene: bpy.types.Scene | None = None,
    frames: range | None = None,
    include_sounds: bool | None = None,
) -> Collection:
    """Every file a render of `scene` over `frames` (default: its frame range) reads."""
    scene = scene or bpy.context.scene
    if frames is None:
        frames = range(scene.frame_start, scene.frame_end + 1)
    found = Collection()
    _libraries(found)
    _images(found, frames)
    _movie_clips(found)
    _sounds(found, scene, include_sounds)
    _fonts(found)
    _volumes(found, frames)
    _cache_files(found, frames)
    _physics(found, scene, frames)
    return found
