#!/usr/bin/env bash
# Installs ftk's build dependencies from Debian packages when any is missing (needs root or sudo).
set -euo pipefail
need=(build-essential cmake libopenblas-dev zlib1g-dev libcjson-dev libcmocka-dev)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
