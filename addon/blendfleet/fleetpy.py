"""Loads the `blendfleet_py` module: installed from the extension's wheel (Blender 4.2+) or
vendored into the add-on's `_vendor` directory (legacy add-on zip for Blender 3.x)."""

from __future__ import annotations

import os
import sys
from types import ModuleType

VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")


class ModuleMissing(Exception):
    """The native module is not installed; the message says what to do."""


def load() -> ModuleType:
    try:
        import blendfleet_py
    except ImportError:
        if os.path.isdir(VENDOR) and VENDOR not in sys.path:
            sys.path.insert(0, VENDOR)
        try:
            import blendfleet_py
        except ImportError as error:
            raise ModuleMissing(
                "the blendfleet_py module is not installed (%s). Install the add-on from a zip "
                "made by scripts/build-addon.sh, which bundles it." % error
            ) from None
    return blendfleet_py
