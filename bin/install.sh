#!/usr/bin/env bash
# Installs everything reef needs on a fresh Debian + Node 20 machine (run as root), then the
# npm dependencies (which build reef's libfuse3 addon and lmdb's addon with LMDB's ITS#9496 fix,
# src/store/lmdb/build-lmdb.mjs, and compile reef). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

pkgs=()
# fuse3 gives fusermount3 (and /bin/fusermount as a link to it; it Breaks/Replaces fuse) and
# libfuse3-dev builds reef's own addon (mount/native/fuse3).
for p in fuse3 libfuse3-dev pkg-config rsync attr; do
  dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
done
# make, g++, gcc and python3 are node-gyp's: both native addons are compiled at install.
for tool in make:make g++:g++ gcc:gcc git:git; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || pkgs+=("${tool##*:}")
done
command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "reef: installing ${pkgs[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
# /dev/fuse must exist for mounts; modprobe is harmless where the module is built in.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true

# With a lock file, install exactly what was tested (npm ci refuses a lock out of sync with
# package.json instead of rewriting it); without one, resolve afresh.
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
