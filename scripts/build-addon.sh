#!/usr/bin/env bash
# Builds the Blender add-on twice into dist/ (or OUT_DIR):
#   blendfleet-extension-VERSION.zip  a Blender extension (4.2+): blender_manifest.toml with
#                                     the blendfleet_py wheel bundled under wheels/
#   blendfleet-addon-VERSION.zip      a legacy add-on (3.x, and 4.x's "Install from Disk"):
#                                     bl_info, with the wheel's contents in blendfleet/_vendor
# Usage: scripts/build-addon.sh [--dev] [OUT_DIR]
#   --dev  build the wheel with the dev profile (faster; the tests use it)
# BLENDFLEET_WHEEL=path/to/blendfleet_py-*.whl skips building the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=()
if [ "${1:-}" = "--dev" ]; then
    dev=(--dev)
    shift
fi
out=${1:-dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)

wheel=${BLENDFLEET_WHEEL:-}
if [ -z "$wheel" ]; then
    wheel=$(bash scripts/build-wheel.sh "${dev[@]}" "$out/wheel" | tail -n 1)
fi
if [ ! -f "$wheel" ]; then
    echo "no wheel at '$wheel'" >&2
    exit 1
fi

version=$(sed -n 's/^ *"version": (\([0-9]*\), \([0-9]*\), \([0-9]*\)),$/\1.\2.\3/p' addon/blendfleet/__init__.py)
if [ -z "$version" ]; then
    echo "cannot read the version from addon/blendfleet/__init__.py" >&2
    exit 1
fi
case "$(basename "$wheel")" in
    *manylinux*x86_64*|*linux_x86_64*) platform=linux-x64 ;;
    *manylinux*aarch64*|*linux_aarch64*) platform=linux-arm64 ;;
    *macosx*arm64*) platform=macos-arm64 ;;
    *macosx*x86_64*) platform=macos-x64 ;;
    *win_amd64*) platform=windows-x64 ;;
    *) echo "unknown platform of $wheel" >&2; exit 1 ;;
esac

python3 - "$wheel" "$out" "$version" "$platform" <<'PY'
import os
import sys
import zipfile

wheel, out, version, platform = sys.argv[1:]
source = os.path.join("addon", "blendfleet")
modules = sorted(
    name for name in os.listdir(source)
    if name.endswith(".py") and os.path.isfile(os.path.join(source, name))
)
wheel_name = os.path.basename(wheel)


def write(archive, arcname, path):
    info = zipfile.ZipInfo(arcname, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with open(path, "rb") as data:
        archive.writestr(info, data.read())


# (a) the extension: package files at the root of the zip, the wheel under wheels/.
manifest = open(os.path.join("addon", "packaging", "blender_manifest.toml.in")).read()
manifest = (manifest.replace("@VERSION@", version).replace("@PLATFORM@", platform)
            .replace("@WHEEL@", wheel_name))
extension = os.path.join(out, f"blendfleet-extension-{version}.zip")
with zipfile.ZipFile(extension, "w") as archive:
    for name in modules:
        write(archive, name, os.path.join(source, name))
    info = zipfile.ZipInfo("blender_manifest.toml", date_time=(2024, 1, 1, 0, 0, 0))
    archive.writestr(info, manifest)
    write(archive, f"wheels/{wheel_name}", wheel)

# (b) the legacy add-on: a blendfleet/ folder, the wheel's files in blendfleet/_vendor/.
legacy = os.path.join(out, f"blendfleet-addon-{version}.zip")
with zipfile.ZipFile(legacy, "w") as archive, zipfile.ZipFile(wheel) as whl:
    for name in modules:
        write(archive, f"blendfleet/{name}", os.path.join(source, name))
    for member in whl.infolist():
        if member.is_dir() or ".dist-info/" in member.filename:
            continue
        info = zipfile.ZipInfo(f"blendfleet/_vendor/{member.filename}", date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = member.external_attr
        archive.writestr(info, whl.read(member.filename))
print(extension)
print(legacy)
PY
