#!/usr/bin/env bash
# Cloud checks, all through the real SDK clients with an endpoint override:
#   - fleet-cloud: AWS EC2 (aws-sdk-ec2) against moto_server, GCP Compute Engine
#     (google-cloud-compute-v1) against a local server the tests run;
#   - the manager's scaler against moto_server;
#   - `blendfleet cloud up | status | connection | down` against moto_server;
#   - the Blender add-on's cloud buttons (Blender 3.4 and pip bpy 4.5) driving that binary
#     against moto_server.
# Installs moto[server] into a virtual environment under the cache directory when it is
# missing. Every cargo command builds with the same features, so aws-sdk-ec2 compiles once.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
ensure_cargo
ensure_blender
ensure_bpy
cache="${BLENDFLEET_CACHE:-$HOME/.cache/blendfleet}"
venv="$cache/moto"
if ! "$venv/bin/moto_server" --help >/dev/null 2>&1; then
    echo "installing moto[server] into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
export BLENDFLEET_MOTO_SERVER="$venv/bin/moto_server"
start=$(date +%s)
features=(--features "fleet-cloud/aws fleet-cloud/gcp fleet-manager/aws fleet-manager/gcp blendfleet/aws blendfleet/gcp")
cargo test --locked -p fleet-cloud -p fleet-manager -p blendfleet "${features[@]}" \
    --lib --bins --test aws_moto --test gcp_fake --test scaler_aws --test cloud
cargo build --locked -p blendfleet "${features[@]}"
bin=$CARGO_TARGET_DIR/debug/blendfleet

work=$(mktemp -d "${TMPDIR:-/tmp}/bf-cloud-addon.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Each run gets its own home: Blender's user directories and the saved connections.
in_home() {
    local home=$work/$1
    shift
    mkdir -p "$home"
    HOME=$home XDG_CONFIG_HOME=$home/.config XDG_DATA_HOME=$home/.local/share \
        BLENDFLEET_CLOUD_BIN=$bin "$@"
}
echo "== the add-on's cloud buttons, Blender 3.4" >&2
in_home blender34 blender -b --factory-startup --python-exit-code 1 --python tests/addon/test_cloud.py
echo "== the add-on's cloud buttons, bpy 4.5" >&2
in_home bpy45 "$BLENDFLEET_TEST_BPY_PYTHON" tests/addon/test_cloud.py

cargo clippy --locked -p fleet-cloud -p fleet-manager -p blendfleet "${features[@]}" \
    --all-targets -- -D warnings
echo "cloud checks passed in $(( $(date +%s) - start ))s"
