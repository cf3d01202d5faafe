#!/usr/bin/env bash
# Installs the Debian packages ocap needs, only when some are missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config lua5.4 liblua5.4-dev libleveldb-dev libuv1-dev libsodium-dev libssl-dev
      lua-cjson lua-busted lua-check lua-luv luarocks clang-format)
# `make fuzz` alone needs clang and its libFuzzer; `make test` does not.
if [ "${1:-}" = fuzz ]; then pkgs+=(clang libclang-rt-dev); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
