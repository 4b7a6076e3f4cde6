# Sourced by the set-up scripts and .ci/run: need_apt PKG... installs Debian packages with apt-get
# (as root, or through sudo), running `apt-get update` once per shell.
apt_updated=0
need_apt() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then sudo=(sudo); else
      echo "$(basename "$0"): needs $* (apt-get install $*): run as root, or install them" >&2
      exit 1
    fi
  fi
  if [ "$apt_updated" = 0 ]; then "${sudo[@]}" apt-get update -qq; apt_updated=1; fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
