#!/usr/bin/env bash
# The main job: a local farm of three agents renders the bundled demo scene.
# Installs Blender when it is missing, builds blendfleet, and writes the merged frame
# (multilayer EXR and PNG) to ./blendfleet-demo/. Extra arguments go to `blendfleet demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
ensure_cargo
ensure_blender
cargo build --release --locked -p blendfleet
"$CARGO_TARGET_DIR/release/blendfleet" demo --agents 3 --output blendfleet-demo "$@"
