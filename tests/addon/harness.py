"""A small test runner for scripts that run inside Blender (no pytest there).

Run a test script with Debian's Blender or with a Python that has pip `bpy`:
    blender -b --factory-startup --python-exit-code 1 --python tests/addon/test_deps.py
    $BPY_PYTHON tests/addon/test_deps.py
The process exits with 0 when every test passed and 1 otherwise (through os._exit: pip bpy
can hang at interpreter exit).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ADDON_SRC = os.path.join(REPO, "addon")


def use_source_addon() -> None:
    """Makes `import blendfleet` find the add-on in the source tree."""
    if ADDON_SRC not in sys.path:
        sys.path.insert(0, ADDON_SRC)


def finish(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(tests: list[Callable[[str], None]], name: str) -> None:
    """Runs each test with a fresh temporary directory and exits with the outcome."""
    import bpy

    only = os.environ.get("BLENDFLEET_TEST_ONLY")
    failed = []
    print(f"{name}: Blender {bpy.app.version_string}", flush=True)
    for test in tests:
        if only and only not in test.__name__:
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="bf-addon-") as tmp:
            try:
                test(tmp)
            except BaseException:  # noqa: BLE001 - report everything, keep going
                failed.append(test.__name__)
                print(f"FAIL {test.__name__}", flush=True)
                traceback.print_exc()
                continue
        print(f"ok   {test.__name__} ({time.monotonic() - started:.1f}s)", flush=True)
    if failed:
        print(f"{name}: {len(failed)} failed: {', '.join(failed)}", flush=True)
        finish(1)
    print(f"{name}: all passed", flush=True)
    finish(0)


def blender_version() -> tuple[int, int]:
    import bpy

    return tuple(bpy.app.version[:2])  # type: ignore[return-value]
