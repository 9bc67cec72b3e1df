#!/usr/bin/env bash
# Installs what backprop needs on Debian 12 (as root, or with sudo), skipping what is there.
# Usage: scripts/deps.sh [extra Debian packages...]
set -euo pipefail
packages=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libhdf5-dev hdf5-tools
          libopenblas-dev libdnnl-dev libcmocka-dev libinih-dev libcjson-dev zlib1g-dev "$@")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
