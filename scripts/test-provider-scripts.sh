#!/usr/bin/env bash
# Tests of provider-scripts/: shellcheck, the shared code copied in sync, and both start-up
# scripts run for real in a temporary fake root, with a fake systemctl and apt-get, a local
# stand-in for the GCP/AWS metadata servers and download hosts, the real `blendfleet`
# binary and a small fake Blender archive. Nothing leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
scripts=$repo/provider-scripts

failures=0
pass() { printf 'ok   %s\n' "$*"; }
fail() {
  printf 'FAIL %s\n' "$*"
  failures=$((failures + 1))
}
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
contains() { grep -qF -- "$2" "$1"; }
lacks() { ! grep -qF -- "$2" "$1"; }

# --- static checks ---
if ! command -v shellcheck >/dev/null; then
  if [[ $(id -u) == 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck >/dev/null; }
  else
    echo "shellcheck is not installed" >&2
    exit 1
  fi
fi
check "shellcheck is clean on every script" \
  shellcheck -x "$scripts"/*.sh "$repo/scripts/test-provider-scripts.sh"
check "the start-up scripts carry the current common.sh" "$scripts/sync.sh" --check

# --- the real binary, served with its checksum ---
binary=${BLENDFLEET_TEST_BINARY:-}
if [[ -z $binary ]]; then
  cargo build -q -p blendfleet
  binary=${CARGO_TARGET_DIR:-$repo/target}/debug/blendfleet
fi
[[ -x $binary ]] || { echo "no blendfleet binary at $binary" >&2; exit 1; }
binary_sha=$(sha256sum "$binary" | cut -d' ' -f1)

work=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
  if ((failures)); then
    echo "test files kept in $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# --- the fake metadata server and download host ---
meta=$work/meta
mkdir -p "$meta/files"
echo '{}' >"$meta/attributes.json"
python3 "$repo/scripts/provider-scripts-test/fake_metadata.py" "$meta" &
server_pid=$!
for _ in $(seq 100); do [[ -s $meta/port ]] && break; sleep 0.1; done
port=$(cat "$meta/port")
base=http://127.0.0.1:$port

# A fake Blender 4.5.4 release: a tarball laid out like the official one.
mkdir -p "$work/tarball/blender-4.5.4-linux-x64"
cat >"$work/tarball/blender-4.5.4-linux-x64/blender" <<'BLENDER'
#!/bin/sh
echo "Blender 4.5.4 (fake for tests)"
BLENDER
chmod +x "$work/tarball/blender-4.5.4-linux-x64/blender"
tar -cJf "$meta/files/blender.tar.xz" -C "$work/tarball" blender-4.5.4-linux-x64
blender_sha=$(sha256sum "$meta/files/blender.tar.xz" | cut -d' ' -f1)
# The same archive where the pinned release would be: its checksum is not the pinned one.
mkdir -p "$meta/files/release/Blender4.5"
cp "$meta/files/blender.tar.xz" "$meta/files/release/Blender4.5/blender-4.5.4-linux-x64.tar.xz"

# Fake system tools: they record what they were asked to do.
tools=$work/tools
mkdir -p "$tools"
cat >"$tools/systemctl" <<'TOOL'
#!/bin/bash
echo "$*" >>"$FAKE_LOG_DIR/systemctl.log"
case $1 in
  is-active) echo active ;;
  start | restart)
    # Stands in for the manager's unit: the real binary makes the CA in the fake root.
    if [[ $2 == blendfleet-manager.service ]]; then
      state=$BLENDFLEET_ROOT/var/lib/blendfleet-manager
      "$BLENDFLEET_ROOT/usr/local/bin/blendfleet" manager --state-dir "$state" \
        --listen 127.0.0.1:0 >"$FAKE_LOG_DIR/manager.out" 2>&1 &
      pid=$!
      for _ in $(seq 600); do [[ -s $state/tls/ca.pem ]] && break; sleep 0.1; done
      sleep 0.5
      kill "$pid" && wait "$pid" || true
    fi
    ;;
esac
exit 0
TOOL
cat >"$tools/apt-get" <<'TOOL'
#!/bin/bash
echo "$*" >>"$FAKE_LOG_DIR/apt-get.log"
if [[ $* == *install* ]]; then
  for arg in "$@"; do
    [[ $arg == -* || $arg == install ]] || echo "$arg" >>"$FAKE_LOG_DIR/installed-packages"
  done
fi
TOOL
cat >"$tools/dpkg-query" <<'TOOL'
#!/bin/bash
package=${*: -1}
if grep -qx "$package" "$FAKE_LOG_DIR/installed-packages" 2>/dev/null; then
  echo "install ok installed"
else
  echo "unknown ok not-installed"
  exit 1
fi
TOOL
chmod +x "$tools"/*

fingerprint=sha256:$(printf 'ca' | sha256sum | cut -d' ' -f1)
token=jt_Qm9vYmFyYmF6cXV4LTEyMzQ1Njc4OTA

# Runs a start-up script in a fresh or existing fake root: run_script NAME SCRIPT [VAR=VALUE...]
run_script() {
  local name=$1 script=$2
  shift 2
  local dir=$work/$name
  mkdir -p "$dir/root" "$dir/tmp"
  local status=0
  env -i PATH="$PATH" HOME="$dir" TMPDIR="$dir/tmp" \
    BLENDFLEET_ROOT="$dir/root" FAKE_LOG_DIR="$dir" \
    BLENDFLEET_SYSTEMCTL="$tools/systemctl" BLENDFLEET_APT_GET="$tools/apt-get" \
    BLENDFLEET_DPKG_QUERY="$tools/dpkg-query" BLENDFLEET_RETRY_PAUSE=0 \
    BLENDFLEET_METADATA_URL="$base/computeMetadata/v1" \
    BLENDFLEET_AWS_METADATA_URL="$base" \
    BLENDFLEET_BLENDER_DOWNLOAD_BASE="$base/files/release" \
    BLENDFLEET_CONSOLE="$dir/console" \
    "$@" bash "$scripts/$script" >>"$dir/out.log" 2>&1 || status=$?
  echo "$status" >"$dir/status"
}
status_of() { cat "$work/$1/status"; }
set_metadata() { printf '%s\n' "$1" >"$meta/attributes.json"; }

# --- 1. agent on GCP, settings from metadata, the pinned download refused ---
set_metadata "{\"BLENDFLEET_PROVIDER\": \"gcp\", \"BLENDFLEET_MANAGER\": \"https://10.128.0.2:8443\",
  \"BLENDFLEET_CA_FINGERPRINT\": \"$fingerprint\", \"BLENDFLEET_JOIN_TOKEN\": \"$token\",
  \"BLENDFLEET_AGENT_NAME\": \"bf-agent-7\", \"BLENDFLEET_BLENDER_VERSION\": \"4.5\",
  \"BLENDFLEET_BINARY_URL\": \"file://$binary#sha256=$binary_sha\"}"
: >"$meta/requests.log"
run_script gcp-agent agent-startup.sh
d=$work/gcp-agent
r=$d/root
check "gcp agent: stops with an error at the tampered Blender archive" test "$(status_of gcp-agent)" != 0
check "gcp agent: the checksum mismatch is named" contains "$d/out.log" "checksum mismatch for blender.tar.xz: expected 2e6ef8e99fc36327270429ddc8e7bad2859dd878a5a137d2e0bf0f02f6792505, got $blender_sha; refusing to use it"
check "gcp agent: the pinned 4.5 release was asked for at the official path" \
  contains "$meta/requests.log" "GET /files/release/Blender4.5/blender-4.5.4-linux-x64.tar.xz"
check "gcp agent: settings came from instance metadata" \
  contains "$d/out.log" "setting BLENDFLEET_MANAGER: https://10.128.0.2:8443 from instance metadata"
check "gcp agent: metadata was asked with Metadata-Flavor (no 403s)" lacks "$d/out.log" "HTTP 403"
check "gcp agent: the join credential is not logged" lacks "$d/out.log" "$token"
for package in libxi6 libxxf86vm1 libxfixes3 libxrender1 libgl1 libxkbcommon0 libsm6 xz-utils; do
  check "gcp agent: package $package installed" grep -qx "$package" "$d/installed-packages"
done
check "gcp agent: the blendfleet binary was installed, checksum verified" \
  cmp -s "$binary" "$r/usr/local/bin/blendfleet"
expected_exec="ExecStart=/usr/local/bin/blendfleet agent --manager https://10.128.0.2:8443 --ca-fingerprint $fingerprint --name bf-agent-7 --blender /opt/blendfleet/blender/4.5.4/blender --work-dir /var/lib/blendfleet-agent --stop-deadline 15 --preemption-notice gcp"
unit=$r/etc/systemd/system/blendfleet-agent.service
check "gcp agent: unit written with the agent command" grep -qxF -- "$expected_exec" "$unit"
for line in KillSignal=SIGTERM KillMode=mixed TimeoutStopSec=23 Restart=on-failure \
  EnvironmentFile=/etc/blendfleet/agent.env DynamicUser=yes StateDirectory=blendfleet-agent \
  WantedBy=multi-user.target; do
  check "gcp agent: unit has $line" grep -qxF -- "$line" "$unit"
done
check "gcp agent: the join credential is not in the unit" lacks "$unit" "$token"
check "gcp agent: the join credential is in a private environment file" \
  grep -qxF "BLENDFLEET_JOIN_TOKEN=$token" "$r/etc/blendfleet/agent.env"
check "gcp agent: that file is mode 600" test "$(stat -c %a "$r/etc/blendfleet/agent.env")" = 600
check "gcp agent: nothing unpacked from the refused archive" test ! -e "$r/opt/blendfleet/blender/4.5.4"
check "gcp agent: the agent was not started" test ! -e "$d/systemctl.log"
# Every flag of the unit's command is one the agent knows.
"$binary" agent --help >"$work/agent-help.txt"
mapfile -t flags < <(grep -o -- '--[a-z-]*' <<<"$expected_exec" | sort -u)
for flag in "${flags[@]}"; do
  check "the agent knows $flag" contains "$work/agent-help.txt" "$flag "
done

# --- 2. agent on AWS, settings in the user-data preamble, a full run, then a re-run ---
aws_env=(BLENDFLEET_PROVIDER=aws BLENDFLEET_MANAGER=https://manager.example.internal:8443
  BLENDFLEET_CA_FINGERPRINT="$fingerprint" BLENDFLEET_JOIN_TOKEN="$token"
  BLENDFLEET_AGENT_NAME=aws-agent-1 BLENDFLEET_BLENDER_VERSION=4.5.4
  BLENDFLEET_BINARY_URL="file://$binary" BLENDFLEET_BINARY_SHA256="$binary_sha"
  BLENDFLEET_BLENDER_URL="$base/files/blender.tar.xz" BLENDFLEET_BLENDER_SHA256="$blender_sha"
  BLENDFLEET_METADATA_URL=http://127.0.0.1:1/nothing-here)
run_script aws-agent agent-startup.sh "${aws_env[@]}"
d=$work/aws-agent
r=$d/root
check "aws agent: the script completes" test "$(status_of aws-agent)" = 0
check "aws agent: GCP metadata was not needed" lacks "$d/out.log" "metadata"
check "aws agent: the unit watches AWS notices" contains "$r/etc/systemd/system/blendfleet-agent.service" "--preemption-notice aws"
check "aws agent: Blender unpacked and checked" contains "$d/out.log" "Blender runs: Blender 4.5.4 (fake for tests)"
check "aws agent: Blender in place" test -x "$r/opt/blendfleet/blender/4.5.4/blender"
check "aws agent: units reloaded, agent enabled and started" \
  test "$(tr '\n' ';' <"$d/systemctl.log")" = "daemon-reload;enable blendfleet-agent.service;restart blendfleet-agent.service;is-active blendfleet-agent.service;"
downloads=$(grep -c "GET /files/blender.tar.xz" "$meta/requests.log")
apt_calls=$(wc -l <"$d/apt-get.log")
: >"$d/systemctl.log"
run_script aws-agent agent-startup.sh "${aws_env[@]}"
check "aws agent re-run: completes" test "$(status_of aws-agent)" = 0
check "aws agent re-run: nothing downloaded again" test "$(grep -c "GET /files/blender.tar.xz" "$meta/requests.log")" = "$downloads"
check "aws agent re-run: no packages installed again" test "$(wc -l <"$d/apt-get.log")" = "$apt_calls"
check "aws agent re-run: Blender kept" contains "$d/out.log" "Blender 4.5.4: already installed in /opt/blendfleet/blender/4.5.4"
check "aws agent re-run: binary kept" contains "$d/out.log" "blendfleet: already installed"
check "aws agent re-run: unchanged unit not restarted" \
  test "$(tr '\n' ';' <"$d/systemctl.log")" = "daemon-reload;enable blendfleet-agent.service;start blendfleet-agent.service;is-active blendfleet-agent.service;"

# --- 3. bad settings get clear errors before anything is installed ---
bad_setting() { # bad_setting NAME VAR=VALUE EXPECTED
  run_script "bad-$1" agent-startup.sh "${aws_env[@]}" "$2"
  check "bad setting $1: refused" test "$(status_of "bad-$1")" != 0
  check "bad setting $1: explained" contains "$work/bad-$1/out.log" "$3"
  check "bad setting $1: nothing installed" test ! -e "$work/bad-$1/apt-get.log"
}
bad_setting manager BLENDFLEET_MANAGER=http://10.0.0.2:8443 "setting BLENDFLEET_MANAGER is not valid: expected https://HOST:PORT"
bad_setting fingerprint BLENDFLEET_CA_FINGERPRINT=sha256:abc "setting BLENDFLEET_CA_FINGERPRINT is not valid"
bad_setting name "BLENDFLEET_AGENT_NAME=a b" "setting BLENDFLEET_AGENT_NAME is not valid"
bad_setting version BLENDFLEET_BLENDER_VERSION=latest "setting BLENDFLEET_BLENDER_VERSION is not valid"
bad_setting provider BLENDFLEET_PROVIDER=azure "setting BLENDFLEET_PROVIDER is not valid: expected aws or gcp"
set_metadata '{"BLENDFLEET_PROVIDER": "gcp"}'
run_script missing agent-startup.sh
check "missing setting: explained" contains "$work/missing/out.log" "setting BLENDFLEET_MANAGER is missing"
run_script unpinned agent-startup.sh "${aws_env[@]}" BLENDFLEET_BLENDER_URL= BLENDFLEET_BLENDER_VERSION=2.79
check "unpinned Blender version: explained" contains "$work/unpinned/out.log" "no pinned Blender release for version 2.79 (pinned: 4.5.4 3.6.23 )"
run_script no-checksum agent-startup.sh "${aws_env[@]}" BLENDFLEET_BINARY_SHA256=
check "binary URL without checksum: refused" contains "$work/no-checksum/out.log" "BLENDFLEET_BINARY_URL needs a checksum"

# --- 4. manager on GCP: settings from metadata, CA fingerprint announced ---
# shellcheck disable=SC2016 # a literal argon2 PHC string
hash='$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA'
set_metadata "{\"BLENDFLEET_PROVIDER\": \"gcp\", \"BLENDFLEET_PASSWORD_HASH\": \"$hash\",
  \"BLENDFLEET_BINARY_URL\": \"file://$binary#sha256=$binary_sha\", \"_external_ip\": \"34.1.2.3\"}"
run_script gcp-manager manager-startup.sh \
  BLENDFLEET_BLENDER_URL="$base/files/blender.tar.xz" BLENDFLEET_BLENDER_SHA256="$blender_sha"
d=$work/gcp-manager
r=$d/root
unit=$r/etc/systemd/system/blendfleet-manager.service
check "gcp manager: the script completes" test "$(status_of gcp-manager)" = 0
expected_exec="ExecStart=/usr/local/bin/blendfleet manager --state-dir /var/lib/blendfleet-manager --listen 0.0.0.0:8443 --public-name 34.1.2.3 --blender /opt/blendfleet/blender/4.5.4/blender --password-hash-file %d/password-hash"
check "gcp manager: unit written with the manager command" grep -qxF -- "$expected_exec" "$unit"
check "gcp manager: the hash reaches it as a credential" grep -qxF "LoadCredential=password-hash:/etc/blendfleet/password-hash" "$unit"
check "gcp manager: the hash file holds the hash" test "$(cat "$r/etc/blendfleet/password-hash")" = "$hash"
check "gcp manager: the hash file is mode 600" test "$(stat -c %a "$r/etc/blendfleet/password-hash")" = 600
check "gcp manager: the hash is not logged" lacks "$d/out.log" "$hash"
real_fingerprint=$("$binary" ca show --state-dir "$r/var/lib/blendfleet-manager" || true)
check "gcp manager: exactly one console line, the CA's fingerprint" \
  test "$(cat "$d/console")" = "BLENDFLEET-CA-FINGERPRINT $real_fingerprint"
check "gcp manager: the console line is not in the script's own log" lacks "$d/out.log" "BLENDFLEET-CA-FINGERPRINT"
check "gcp manager: guest attribute written" \
  grep -qxF "blendfleet/ca-fingerprint $real_fingerprint" "$meta/guest-attributes"
"$binary" manager --help >"$work/manager-help.txt"
mapfile -t flags < <(grep -o -- '--[a-z-]*' <<<"$expected_exec" | sort -u)
for flag in "${flags[@]}"; do
  check "the manager knows $flag" contains "$work/manager-help.txt" "$flag "
done

# --- 5. manager on AWS: public address through IMDSv2 ---
set_metadata '{"_public_ipv4": "54.9.8.7"}'
run_script aws-manager manager-startup.sh BLENDFLEET_PROVIDER=aws BLENDFLEET_PASSWORD_HASH="$hash" \
  BLENDFLEET_BINARY_URL="file://$binary#sha256=$binary_sha" \
  BLENDFLEET_BLENDER_URL="$base/files/blender.tar.xz" BLENDFLEET_BLENDER_SHA256="$blender_sha"
check "aws manager: completes" test "$(status_of aws-manager)" = 0
check "aws manager: public address from IMDSv2" \
  contains "$work/aws-manager/root/etc/systemd/system/blendfleet-manager.service" "--public-name 54.9.8.7 "
check "aws manager: fingerprint on the console" grep -qE '^BLENDFLEET-CA-FINGERPRINT sha256:[0-9a-f]{64}$' "$work/aws-manager/console"

if ((failures)); then
  echo "$failures provider-script checks failed" >&2
  exit 1
fi
echo "provider scripts: all checks passed"
