#!/usr/bin/env bash
# Installs the Debian packages appmsg needs to build and test, if missing.
# Usage: scripts/deps.sh [extra-package ...]
set -euo pipefail
pkgs=(build-essential cmake pkg-config libcjson-dev libssl-dev libedit-dev openssl check python3 "$@")
# The metrics endpoint: http_parser reads its requests (src/http.c).  (What only the tests use -
# Chromium, Prometheus - scripts/test.sh asks for.)
pkgs+=(libhttp-parser-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# RUNLEVEL=1: no package's init script starts a daemon of its own (redis-server would start a
# system Redis on port 6379, haproxy its service; the tests start their own).  env: sudo would
# drop the variables.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
