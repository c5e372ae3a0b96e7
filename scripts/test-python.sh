#!/usr/bin/env bash
# The Python module's checks: lints of the bindings, the wheel built with maturin and
# installed into a test environment, and the pytest suite against real managers, inside
# Debian's Blender 3.4 and pip bpy 4.5 included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
ensure_cargo
ensure_blender
ensure_bpy

# The bindings are behind the `python` feature, which the workspace lints do not enable.
cargo clippy -p fleet-py --features python --all-targets --locked -- -D warnings
# The manager binary the tests start: BLENDFLEET_BIN, or the one the workspace tests build
# (after `cargo test --workspace` in scripts/test.sh this builds nothing).
if [ -z "${BLENDFLEET_BIN:-}" ]; then
    cargo test --workspace --locked --no-run
    BLENDFLEET_BIN="$CARGO_TARGET_DIR/debug/blendfleet"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
wheel=$(scripts/build-wheel.sh --dev "$out" | tail -n 1)
echo "built $wheel"

venv=$BLENDFLEET_CACHE/pytest
if ! "$venv/bin/python" -c "import pytest, mypy" >/dev/null 2>&1; then
    echo "installing pytest and mypy into $venv" >&2
    rm -rf "$venv"
    "${BLENDFLEET_PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "pytest>=8,<10" "mypy>=1.10,<3"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheel"

BLENDFLEET_PY_WHEEL="$wheel" BLENDFLEET_BIN="$BLENDFLEET_BIN" \
    "$venv/bin/python" -m pytest -p no:cacheprovider crates/fleet-py/tests -ra "$@"
