"""The wheel as the add-on uses it: unpacked on sys.path inside Blender's own Python."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

from conftest import PASSWORD, Manager

# Imports the module from the unpacked wheel, hashes a file and asks the manager for its
# info, printing one JSON line. Arguments come in the environment.
PROBE = """
import hashlib, json, os, sys
sys.path.insert(0, os.environ["PROBE_WHEEL_DIR"])
import blendfleet_py
client = blendfleet_py.Client(os.environ["PROBE_URL"], "admin", os.environ["PROBE_PASSWORD"],
                              os.environ["PROBE_FINGERPRINT"], timeout=20.0)
data = open(os.environ["PROBE_FILE"], "rb").read()
result = {
    "python": list(sys.version_info[:2]),
    "module_file": blendfleet_py.__file__,
    "version": blendfleet_py.__version__,
    "hash_ok": blendfleet_py.hash_file(os.environ["PROBE_FILE"])
               == "sha256:" + hashlib.sha256(data).hexdigest(),
    "info": client.info(),
}
try:
    client.job(424242)
except blendfleet_py.NotFound as error:
    result["not_found"] = str(error)
try:
    import bpy
    result["blender"] = list(bpy.app.version)
except ImportError:
    pass
print("PROBE " + json.dumps(result), flush=True)
"""


def probe_env(manager: Manager, unpacked: Path, tmp_path: Path) -> dict[str, str]:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(100_000))
    env = dict(os.environ)
    env.update(PROBE_WHEEL_DIR=str(unpacked), PROBE_URL=manager.url, PROBE_PASSWORD=PASSWORD,
               PROBE_FINGERPRINT=manager.fingerprint, PROBE_FILE=str(sample))
    # The module must come from the unpacked wheel, not from a virtual environment.
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def parse_probe(output: subprocess.CompletedProcess[str]) -> dict[str, object]:
    lines = [line for line in output.stdout.splitlines() if line.startswith("PROBE ")]
    assert output.returncode == 0 and lines, (
        f"exit {output.returncode}\nstdout:\n{output.stdout}\nstderr:\n{output.stderr}")
    result: dict[str, object] = json.loads(lines[-1].removeprefix("PROBE "))
    return result


def check(result: dict[str, object], unpacked: Path) -> None:
    assert result["python"] == [3, 11]
    assert str(result["module_file"]).startswith(str(unpacked))
    assert result["hash_ok"] is True
    info = result["info"]
    assert isinstance(info, dict) and info["agents_online"] == 0
    assert "424242" in str(result["not_found"])


def test_wheel_is_abi3_and_typed(wheel: Path) -> None:
    assert "-cp311-abi3-" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(name.endswith(".abi3.so") for name in names), names
    assert "blendfleet_py/py.typed" in names, names
    assert any(name.startswith("blendfleet_py/") and name.endswith(".pyi") for name in names)


def test_imports_in_debian_blender(blender: str, manager: Manager, unpacked_wheel: Path,
                                   tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    output = subprocess.run(
        [blender, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script)],
        env=probe_env(manager, unpacked_wheel, tmp_path), capture_output=True, text=True,
        timeout=120, check=False)
    result = parse_probe(output)
    check(result, unpacked_wheel)
    assert isinstance(result["blender"], list) and result["blender"][0] >= 3


def test_imports_with_pip_bpy(bpy_python: str, manager: Manager, unpacked_wheel: Path,
                              tmp_path: Path) -> None:
    output = subprocess.run([bpy_python, "-c", PROBE],
                            env=probe_env(manager, unpacked_wheel, tmp_path),
                            capture_output=True, text=True, timeout=120, check=False)
    result = parse_probe(output)
    check(result, unpacked_wheel)
    assert isinstance(result["blender"], list) and result["blender"][0] >= 4
