#!/usr/bin/env bash
# Builds the blendfleet_py wheel (crates/fleet-py, abi3 for CPython 3.11 and later) and
# prints its path as the last line of output.
#
# Usage: scripts/build-wheel.sh [--dev] [OUT_DIR]
#   OUT_DIR  where the wheel goes (default: dist/); older blendfleet_py wheels there are removed
#   --dev    build with the dev profile instead of --release (faster; used by the tests)
# Installs maturin into a virtual environment under ${BLENDFLEET_CACHE:-~/.cache/blendfleet}/maturin
# when it is missing. BLENDFLEET_PYTHON picks the Python used for that environment (python3).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=(--release)
if [ "${1:-}" = "--dev" ]; then
    profile=()
    shift
fi
out=${1:-dist}

cache=${BLENDFLEET_CACHE:-$HOME/.cache/blendfleet}
venv=$cache/maturin
if ! "$venv/bin/maturin" --version >/dev/null 2>&1; then
    echo "installing maturin into $venv" >&2
    rm -rf "$venv"
    "${BLENDFLEET_PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9.4,<2"
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/blendfleet_py-*.whl
# Progress goes to stderr so that stdout ends with the wheel's path.
"$venv/bin/maturin" build "${profile[@]}" --manifest-path crates/fleet-py/Cargo.toml \
    --out "$out" --compatibility linux >&2
wheels=("$out"/blendfleet_py-*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "expected one blendfleet_py wheel in $out, found: ${wheels[*]}" >&2
    exit 1
fi
echo "${wheels[0]}"
