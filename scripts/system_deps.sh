#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages the build needs that this machine lacks.
# Required: g++, cmake, ninja, GoogleTest. Optional: ccache (faster rebuilds); a machine where it
# cannot be installed still builds.
set -uo pipefail
need=()
command -v g++ >/dev/null || need+=(g++)
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
want=()
command -v ccache >/dev/null || want+=(ccache)
[ ${#need[@]} -eq 0 ] && [ ${#want[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
install() {
  $SUDO apt-get install -y -q "$@" >/dev/null 2>&1 ||
    { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "$@" >/dev/null 2>&1; }
}
if [ ${#need[@]} -gt 0 ]; then
  echo "system_deps: installing ${need[*]}"
  install "${need[@]}" || { echo "system_deps: could not install ${need[*]}; install them by hand" >&2; exit 1; }
fi
if [ ${#want[@]} -gt 0 ]; then
  echo "system_deps: installing ${want[*]} (optional)"
  install "${want[@]}" || echo "system_deps: ${want[*]} not installed; building without it" >&2
fi
exit 0
