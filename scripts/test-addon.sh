#!/usr/bin/env bash
# The Blender add-on's checks:
#   - dependency collection and the remapped copy, with Debian's Blender 3.4 and pip bpy 4.5;
#   - the add-on installed from its zips (legacy zip in 3.4, extension zip in bpy 4.5)
#     renders a scene on a local farm through the BlendFleet engine, compared with a plain
#     Cycles render, and reattaches to the job after the farm restarted;
#   - a manager that stops answering mid-job (SIGSTOP), in Blender 3.4 with its user
#     interface under Xvfb: the main thread keeps running, the render ends with a message.
# Installs what is missing (Blender, bpy, xvfb, maturin), builds `blendfleet` and the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
ensure_cargo
ensure_blender
ensure_bpy
if ! command -v xvfb-run >/dev/null 2>&1; then
    echo "installing xvfb" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb >/dev/null
fi

start=$(date +%s)
cargo build -p blendfleet --locked
bin=$CARGO_TARGET_DIR/debug/blendfleet
work=$(mktemp -d "${TMPDIR:-/tmp}/bf-addon-checks.XXXXXX")
trap 'rm -rf "$work"' EXIT
bash scripts/build-addon.sh --dev "$work/dist" >"$work/zips"
extension=$(grep '/blendfleet-extension-[^/]*\.zip$' "$work/zips")
legacy=$(grep '/blendfleet-addon-[^/]*\.zip$' "$work/zips")
bpy_python=$BLENDFLEET_TEST_BPY_PYTHON
failed=0

# Each run gets its own home: Blender's user directories and the local farm's state.
in_home() {
    local home=$work/home-$1
    shift
    mkdir -p "$home"
    HOME=$home XDG_CONFIG_HOME=$home/.config XDG_DATA_HOME=$home/.local/share \
        BLENDFLEET_BIN=$bin "$@"
}

run() {
    local name=$1
    shift
    echo "== $name" >&2
    if ! "$@"; then
        echo "FAILED: $name" >&2
        failed=1
    fi
}

blender34=(blender -b --factory-startup --python-exit-code 1 --python)
run "small pieces, Blender 3.4" in_home units "${blender34[@]}" tests/addon/test_units.py
run "dependencies, Blender 3.4" in_home deps34 "${blender34[@]}" tests/addon/test_deps.py
run "dependencies, bpy 4.5" in_home deps45 "$bpy_python" tests/addon/test_deps.py
run "render on a local farm, Blender 3.4, legacy zip" \
    in_home render34 env BLENDFLEET_ADDON_ZIP="$legacy" BLENDFLEET_AGENT_BLENDER=blender \
    "${blender34[@]}" tests/addon/test_render.py
run "render on a local farm, bpy 4.5, extension zip" \
    in_home render45 env BLENDFLEET_ADDON_ZIP="$extension" BLENDFLEET_AGENT_BLENDER="$bpy_python" \
    "$bpy_python" tests/addon/test_render.py
run "manager stops answering, Blender 3.4 with its UI under Xvfb" \
    in_home stall env BLENDFLEET_ADDON_ZIP="$legacy" BLENDFLEET_AGENT_BLENDER=blender \
    timeout 300 xvfb-run -a -s "-screen 0 1280x800x24" \
    blender --factory-startup --python tests/addon/test_unresponsive.py

if [ "$failed" -ne 0 ]; then
    echo "add-on checks failed" >&2
    exit 1
fi
echo "add-on checks passed in $(( $(date +%s) - start ))s"
