#!/bin/bash
# Copies common.sh into the start-up scripts between their begin/end markers: a cloud
# instance receives one file, so each script carries the shared functions itself.
# `sync.sh --check` only reports whether the copies are current (exit 1 when not).
set -euo pipefail
cd "$(dirname "$0")"
check=0
[[ ${1:-} == --check ]] && check=1
stale=0
for script in agent-startup.sh manager-startup.sh; do
  begin=$(grep -n '^# --- begin common.sh' "$script" | cut -d: -f1)
  end=$(grep -n '^# --- end common.sh ---$' "$script" | cut -d: -f1)
  if [[ -z $begin || -z $end || $end -le $begin ]]; then
    echo "$script: begin/end markers of common.sh not found" >&2
    exit 1
  fi
  synced=$(mktemp)
  {
    head -n "$begin" "$script"
    cat common.sh
    tail -n "+$end" "$script"
  } >"$synced"
  if cmp -s "$synced" "$script"; then
    rm -f "$synced"
    continue
  fi
  if ((check)); then
    echo "$script: its copy of common.sh is out of date; run provider-scripts/sync.sh" >&2
    stale=1
    rm -f "$synced"
  else
    cat "$synced" >"$script"
    rm -f "$synced"
    echo "$script: updated"
  fi
done
exit "$stale"
