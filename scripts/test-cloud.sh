#!/usr/bin/env bash
# Cloud provider tests: AWS EC2 through aws-sdk-ec2 against moto_server, GCP Compute Engine
# through google-cloud-compute-v1 against a local server the tests run. Installs moto[server]
# into a virtual environment under the cache directory when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${BLENDFLEET_CACHE:-$HOME/.cache/blendfleet}"
venv="$cache/moto"
if ! "$venv/bin/moto_server" --help >/dev/null 2>&1; then
    echo "installing moto[server] into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
export BLENDFLEET_MOTO_SERVER="$venv/bin/moto_server"
start=$(date +%s)
cargo test --locked -p fleet-cloud --features aws,gcp
cargo clippy --locked -p fleet-cloud --features aws,gcp --all-targets -- -D warnings
echo "cloud checks passed in $(( $(date +%s) - start ))s"
