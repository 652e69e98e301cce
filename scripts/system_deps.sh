#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages the build needs that this machine lacks.
set -euo pipefail
need=()
command -v g++ >/dev/null || need+=(g++)
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v ccache >/dev/null || need+=(ccache)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
[ ${#need[@]} -eq 0 ] && exit 0
echo "system_deps: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "system_deps: not root and no sudo; install ${need[*]} by hand" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "${need[@]}" || { $SUDO apt-get update -q && $SUDO apt-get install -y -q "${need[@]}"; }
