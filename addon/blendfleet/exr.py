"""Reading just enough of image headers: EXR channel names and PNG sizes."""

from __future__ import annotations

import struct

EXR_MAGIC = b"\x76\x2f\x31\x01"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class HeaderError(Exception):
    pass


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("utf-8", "replace"), end + 1


def exr_channels(path: str, limit: int = 1 << 20) -> list[str]:
    """The channel names of an OpenEXR file's first part, e.g. `ViewLayer.Combined.R`."""
    with open(path, "rb") as source:
        data = source.read(limit)
    if data[:4] != EXR_MAGIC:
        raise HeaderError(f"{path} is not an OpenEXR file")
    pos = 8
    try:
        while data[pos] != 0:
            name, pos = _cstring(data, pos)
            _kind, pos = _cstring(data, pos)
            (size,) = struct.unpack_from("<i", data, pos)
            pos += 4
            value = data[pos:pos + size]
            pos += size
            if name == "channels":
                channels, at = [], 0
                while value[at] != 0:
                    channel, at = _cstring(value, at)
                    channels.append(channel)
                    at += 16
                return channels
    except (IndexError, ValueError, struct.error) as error:
        raise HeaderError(f"{path}: unreadable EXR header ({error})") from None
    raise HeaderError(f"{path}: the EXR header lists no channels")


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != PNG_MAGIC or data[12:16] != b"IHDR":
        raise HeaderError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def expected_channels(result) -> list[str]:  # a bpy RenderResult
    """`Layer.Pass.Channel` names a render result holds, as a multilayer EXR names them."""
    names = []
    for layer in result.layers:
        for render_pass in layer.passes:
            ids = render_pass.channel_id or "RGBA"[: render_pass.channels]
            for channel in ids[: render_pass.channels]:
                names.append(f"{layer.name}.{render_pass.name}.{channel}")
    return names
