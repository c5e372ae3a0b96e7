# Shared functions of the BlendFleet start-up scripts. A cloud instance receives one file
# only, so provider-scripts/sync.sh copies this file verbatim into agent-startup.sh and
# manager-startup.sh; edit it here, then run sync.sh.
# shellcheck shell=bash
# shellcheck disable=SC2034 # some settings here are used by one of the two scripts only

# Pinned official Blender releases for Linux x64: version, then SHA-256 of the tarball.
# Bumping: see provider-scripts/README.md (the checksum comes from the release's .sha256
# file on download.blender.org and is checked against a second source).
BLENDFLEET_BLENDER_RELEASES="
4.5.4 2e6ef8e99fc36327270429ddc8e7bad2859dd878a5a137d2e0bf0f02f6792505
3.6.23 0e9a18af4d0060b825e9617e24a775f759e0f9f67271c062f3d53a539030af00
"
# Used when BLENDFLEET_BLENDER_VERSION is not set.
BLENDFLEET_DEFAULT_BLENDER=4.5.4

# Libraries the official Linux build loads from the system even when rendering headless
# (from the ELF NEEDED entries of Blender 4.5: X11, GL and xkbcommon are linked though no
# window is opened), plus the tools this script uses.
BLENDFLEET_PACKAGES="ca-certificates curl xz-utils libx11-6 libxext6 libxi6 libxxf86vm1 libxfixes3 libxrender1 libxkbcommon0 libsm6 libice6 libxt6 libgl1 libegl1"

# Everything external is overridable so that tests can run these scripts in a fake root.
BF_ROOT="${BLENDFLEET_ROOT:-}"
BF_SYSTEMCTL="${BLENDFLEET_SYSTEMCTL:-systemctl}"
BF_APT_GET="${BLENDFLEET_APT_GET:-apt-get}"
BF_DPKG_QUERY="${BLENDFLEET_DPKG_QUERY:-dpkg-query}"
BF_METADATA_URL="${BLENDFLEET_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}"
BF_DOWNLOAD_BASE="${BLENDFLEET_BLENDER_DOWNLOAD_BASE:-https://download.blender.org/release}"

# Where things go on the instance (paths as the instance sees them; files are written
# under $BF_ROOT).
BF_OPT=/opt/blendfleet
BF_BIN=/usr/local/bin/blendfleet
BF_ETC=/etc/blendfleet
BF_UNIT_DIR=/etc/systemd/system

bf_log() {
  printf '%s blendfleet-%s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${BF_SCRIPT:-startup}" "$*" >&2
}

bf_die() {
  bf_log "ERROR: $*"
  exit 1
}

# Reads a GCP instance metadata attribute and prints its value. Returns 1 when it is not
# set, 2 when the metadata server cannot be reached or fails.
bf_gcp_attribute() {
  local name=$1 body code
  body=$(mktemp)
  if ! code=$(curl -sS --max-time 10 --retry 3 --retry-connrefused -o "$body" -w '%{http_code}' \
    -H 'Metadata-Flavor: Google' "$BF_METADATA_URL/instance/attributes/$name"); then
    rm -f "$body"
    bf_log "cannot reach the GCP metadata server at $BF_METADATA_URL"
    return 2
  fi
  case $code in
    200) cat "$body" ;;
    404) ;;
    *) bf_log "the GCP metadata server answered HTTP $code for attribute $name" ;;
  esac
  rm -f "$body"
  case $code in
    200) return 0 ;;
    404) return 1 ;;
    *) return 2 ;;
  esac
}

# Sets the variable NAME from the environment or, when it is empty there and this is not an
# AWS instance (where everything comes in the user-data preamble), from GCP metadata.
# Usage: bf_setting NAME required|optional [secret]
bf_setting() {
  local name=$1 need=$2 secret=${3:-} value=${!1:-} from=environment rc=0
  if [[ -z $value && ${BLENDFLEET_PROVIDER:-} != aws ]]; then
    value=$(bf_gcp_attribute "$name") || rc=$?
    case $rc in
      0) from="instance metadata" ;;
      1) value="" ;;
      *) bf_die "cannot read setting $name: not in the environment, and instance metadata is unavailable" ;;
    esac
  fi
  if [[ -z $value ]]; then
    [[ $need == required ]] && bf_die "setting $name is missing (set it in the environment or as instance metadata)"
    bf_log "setting $name: not set"
    printf -v "$name" '%s' ""
    return 0
  fi
  printf -v "$name" '%s' "$value"
  export "${name?}"
  if [[ -n $secret ]]; then
    bf_log "setting $name: (secret, ${#value} characters) from $from"
  else
    bf_log "setting $name: $value from $from"
  fi
}

# Refuses a value that does not match a pattern (values end up in systemd units).
bf_check() {
  local name=$1 pattern=$2 hint=$3
  [[ ${!name} =~ $pattern ]] || bf_die "setting $name is not valid: expected $hint"
}

bf_check_common_settings() {
  bf_check BLENDFLEET_PROVIDER '^(aws|gcp)$' "aws or gcp"
  if [[ -n ${BLENDFLEET_BLENDER_VERSION:-} ]]; then
    bf_check BLENDFLEET_BLENDER_VERSION '^[0-9]+\.[0-9]+(\.[0-9]+)?$' "a Blender version such as 4.5 or 4.5.4"
  fi
  if [[ -n ${BLENDFLEET_BINARY_URL:-} ]]; then
    bf_check BLENDFLEET_BINARY_URL '^(https|http|file)://[^[:space:]]+$' "an https:// URL"
  fi
}

# Installs the Debian/Ubuntu packages that are not installed yet.
bf_install_packages() {
  local missing=() package
  for package in $BLENDFLEET_PACKAGES; do
    # shellcheck disable=SC2016 # ${Status} is dpkg-query's, not the shell's
    if [[ $("$BF_DPKG_QUERY" -W -f='${Status}' "$package" 2>/dev/null) != "install ok installed" ]]; then
      missing+=("$package")
    fi
  done
  if ((${#missing[@]} == 0)); then
    bf_log "system packages: all present"
    return 0
  fi
  bf_log "system packages: installing ${missing[*]}"
  local attempt
  for attempt in 1 2 3; do
    # A fresh image may still be running its own apt jobs: retry instead of failing.
    if DEBIAN_FRONTEND=noninteractive "$BF_APT_GET" -q update &&
      DEBIAN_FRONTEND=noninteractive "$BF_APT_GET" -q install -y --no-install-recommends "${missing[@]}"; then
      return 0
    fi
    bf_log "apt-get failed (attempt $attempt); retrying in 10 s"
    sleep "${BLENDFLEET_RETRY_PAUSE:-10}"
  done
  bf_die "could not install ${missing[*]}"
}

# Downloads URL to FILE (https, http or file://), with retries.
bf_download() {
  local url=$1 file=$2
  bf_log "downloading $url"
  curl -fsSL --retry 5 --retry-delay 3 --retry-connrefused --connect-timeout 20 -o "$file" "$url" ||
    bf_die "download of $url failed"
}

# Refuses FILE unless its SHA-256 is HEX; a refused file is deleted.
bf_verify_sha256() {
  local file=$1 hex=$2
  [[ $hex =~ ^[0-9a-f]{64}$ ]] || bf_die "expected a SHA-256 of 64 hex digits, got '$hex'"
  if printf '%s  %s\n' "$hex" "$file" | sha256sum -c --status -; then
    bf_log "checksum verified: sha256 $hex"
    return 0
  fi
  local actual
  actual=$(sha256sum "$file" | cut -d' ' -f1)
  rm -f "$file"
  bf_die "checksum mismatch for $(basename "$file"): expected $hex, got $actual; refusing to use it"
}

# Prints "VERSION SHA256" of the pinned release for a requested version: an exact version,
# or MAJOR.MINOR for the newest pinned release of that series.
bf_blender_release() {
  local wanted=$1 version sha found=""
  while read -r version sha; do
    [[ -z $version ]] && continue
    if [[ $version == "$wanted" || $version == "$wanted".* ]]; then
      found="$version $sha"
      break
    fi
  done <<<"$BLENDFLEET_BLENDER_RELEASES"
  [[ -n $found ]] || return 1
  printf '%s\n' "$found"
}

# Chooses the Blender release to install: the pinned one for BLENDFLEET_BLENDER_VERSION
# (default: the newest pin), or BLENDFLEET_BLENDER_URL with BLENDFLEET_BLENDER_SHA256. Sets
# BF_BLENDER_VERSION, BF_BLENDER_SHA256, BF_BLENDER_URL and BF_BLENDER (the executable, as
# the instance sees it).
bf_resolve_blender() {
  local wanted=${BLENDFLEET_BLENDER_VERSION:-$BLENDFLEET_DEFAULT_BLENDER} release
  if [[ -n ${BLENDFLEET_BLENDER_URL:-} ]]; then
    [[ -n ${BLENDFLEET_BLENDER_SHA256:-} ]] || bf_die "BLENDFLEET_BLENDER_URL needs BLENDFLEET_BLENDER_SHA256"
    BF_BLENDER_VERSION=$wanted
    BF_BLENDER_SHA256=$BLENDFLEET_BLENDER_SHA256
    BF_BLENDER_URL=$BLENDFLEET_BLENDER_URL
  else
    release=$(bf_blender_release "$wanted") ||
      bf_die "no pinned Blender release for version $wanted (pinned: $(awk 'NF{printf "%s ", $1}' <<<"$BLENDFLEET_BLENDER_RELEASES"))"
    read -r BF_BLENDER_VERSION BF_BLENDER_SHA256 <<<"$release"
    BF_BLENDER_URL="$BF_DOWNLOAD_BASE/Blender${BF_BLENDER_VERSION%.*}/blender-$BF_BLENDER_VERSION-linux-x64.tar.xz"
  fi
  BF_BLENDER=$BF_OPT/blender/$BF_BLENDER_VERSION/blender
  bf_log "Blender: version $BF_BLENDER_VERSION from $BF_BLENDER_URL"
}

# Installs the chosen Blender release under $BF_OPT/blender/VERSION unless it is there.
bf_install_blender() {
  local target=$BF_OPT/blender/$BF_BLENDER_VERSION
  local dir=$BF_ROOT$target
  if [[ -x $dir/blender && $(cat "$dir/.blendfleet-sha256" 2>/dev/null) == "$BF_BLENDER_SHA256" ]]; then
    bf_log "Blender $BF_BLENDER_VERSION: already installed in $target"
    return 0
  fi
  bf_log "Blender $BF_BLENDER_VERSION: installing into $target"
  local work
  # On disk, not in /tmp: the archive is hundreds of MB and /tmp may be a small tmpfs.
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/blendfleet-blender.XXXXXX")
  bf_download "$BF_BLENDER_URL" "$work/blender.tar.xz"
  bf_verify_sha256 "$work/blender.tar.xz" "$BF_BLENDER_SHA256"
  bf_log "unpacking Blender"
  mkdir -p "$work/unpacked"
  tar -xJf "$work/blender.tar.xz" -C "$work/unpacked" --no-same-owner ||
    bf_die "the Blender archive could not be unpacked"
  local top
  top=$(find "$work/unpacked" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  [[ -n $top && -x $top/blender ]] || bf_die "the Blender archive holds no blender executable"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  mv "$top" "$dir"
  printf '%s\n' "$BF_BLENDER_SHA256" >"$dir/.blendfleet-sha256"
  rm -rf "$work"
}

# Runs the installed Blender once, so that a missing system library fails here, loudly,
# and not in the first render.
bf_check_blender() {
  local output
  if ! output=$("$BF_ROOT$BF_BLENDER" -b --factory-startup --version 2>&1); then
    bf_log "Blender output: $output"
    bf_die "Blender does not start (a missing system library is the usual cause; see above)"
  fi
  bf_log "Blender runs: $(head -n 1 <<<"$output")"
}

# Installs the blendfleet binary: from BLENDFLEET_BINARY_URL, whose SHA-256 comes from
# BLENDFLEET_BINARY_SHA256 or a '#sha256=HEX' suffix of the URL; without a URL the binary
# must already be in place (baked into the image).
bf_install_binary() {
  local url=${BLENDFLEET_BINARY_URL:-} sha=${BLENDFLEET_BINARY_SHA256:-} file=$BF_ROOT$BF_BIN
  if [[ -z $url ]]; then
    [[ -x $file ]] || bf_die "no blendfleet binary at $BF_BIN and no BLENDFLEET_BINARY_URL to fetch it from"
    bf_log "blendfleet: using $BF_BIN already on the image"
    return 0
  fi
  if [[ $url == *'#sha256='* ]]; then
    sha=${url##*#sha256=}
    url=${url%%#sha256=*}
  fi
  [[ -n $sha ]] || bf_die "BLENDFLEET_BINARY_URL needs a checksum: BLENDFLEET_BINARY_SHA256 or a #sha256=HEX suffix"
  if [[ -x $file ]] && printf '%s  %s\n' "$sha" "$file" | sha256sum -c --status - 2>/dev/null; then
    bf_log "blendfleet: already installed ($BF_BIN, sha256 $sha)"
    return 0
  fi
  local work
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/blendfleet-binary.XXXXXX")
  bf_download "$url" "$work/blendfleet"
  bf_verify_sha256 "$work/blendfleet" "$sha"
  mkdir -p "$(dirname "$file")"
  install -m 0755 "$work/blendfleet" "$file"
  rm -rf "$work"
  bf_log "blendfleet: installed $BF_BIN"
}

# Writes CONTENT and a newline to PATH (under $BF_ROOT) with MODE, unless the file already
# holds exactly that. Sets BF_WRITTEN to 1 when the file changed, 0 when it did not.
bf_write_file() {
  local path=$1 mode=$2 content=$3 file=$BF_ROOT$1
  BF_WRITTEN=0
  if [[ -f $file ]] && [[ $(<"$file") == "$content" ]]; then
    chmod "$mode" "$file"
    bf_log "$path: unchanged"
    return 0
  fi
  mkdir -p "$(dirname "$file")"
  (
    umask 077
    printf '%s\n' "$content" >"$file.new"
  )
  chmod "$mode" "$file.new"
  mv -f "$file.new" "$file"
  BF_WRITTEN=1
  bf_log "$path: written"
}

# Enables and (re)starts a unit: started if it is not running, restarted if CHANGED is 1.
bf_start_unit() {
  local unit=$1 changed=$2
  bf_log "systemd: reloading units, enabling and starting $unit"
  "$BF_SYSTEMCTL" daemon-reload
  "$BF_SYSTEMCTL" enable "$unit"
  if [[ $changed == 1 ]]; then
    "$BF_SYSTEMCTL" restart "$unit"
  else
    "$BF_SYSTEMCTL" start "$unit"
  fi
  bf_log "systemd: $unit is $("$BF_SYSTEMCTL" is-active "$unit" || true)"
}
