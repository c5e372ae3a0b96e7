#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: installs what a fresh Debian machine
# lacks and exports the paths the build and the tests use. Source it; do not run it.

# Build outputs and the bpy virtual environment live outside the clone, so that later runs
# on the same machine reuse them.
export BLENDFLEET_CACHE="${BLENDFLEET_CACHE:-$HOME/.cache/blendfleet}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BLENDFLEET_CACHE/target}"
mkdir -p "$BLENDFLEET_CACHE"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian's Blender 3.4: the `blender` executable agents render with.
ensure_blender() {
    if command -v blender >/dev/null 2>&1; then
        return
    fi
    echo "installing Blender (apt-get install blender)" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq blender >/dev/null
}

# Blender 4.5 as a Python module (pip bpy) in a virtual environment, for the tests that
# check a second Blender version.
ensure_bpy() {
    local venv="$BLENDFLEET_CACHE/bpy45"
    if ! "$venv/bin/python" -c "import bpy" >/dev/null 2>&1; then
        echo "installing bpy 4.5 into $venv" >&2
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "bpy==4.5.*"
    fi
    export BLENDFLEET_TEST_BPY_PYTHON="$venv/bin/python"
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is missing: install Rust from https://rustup.rs" >&2
        exit 1
    fi
}
