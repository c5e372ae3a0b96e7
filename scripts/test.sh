#!/usr/bin/env bash
# Every check CI runs: formatting, lints, and all tests, the end-to-end renders with Debian's
# Blender 3.4 and with pip bpy 4.5 included. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
ensure_cargo
ensure_blender
ensure_bpy
start=$(date +%s)
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
bash scripts/test-python.sh
bash scripts/test-provider-scripts.sh
bash scripts/test-addon.sh
bash scripts/test-cloud.sh
echo "all checks passed in $(( $(date +%s) - start ))s"
