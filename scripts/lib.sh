# shellcheck shell=bash
# Helpers shared by scripts/test and scripts/demo; sourced, never run.
#
# Both scripts must work on a fresh Debian 12 machine as well as on one set up by hand,
# so they install what is missing themselves, without asking anything (CI has no stdin).

# A heading line for the step that starts now, remembered for error messages.
CURRENT_STEP="(start)"
step() {
    # shellcheck disable=SC2034 # read by the scripts that source this file
    CURRENT_STEP="$*"
    printf '\n==> %s\n' "$*"
}

# Prints an error and exits 1.
die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not installed; run this script as root"
    fi
}

# True when the Debian package is installed (not merely known, or removed with its
# configuration left behind, which `dpkg -s` alone also reports with exit 0).
is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

# apt-get, non-interactive; waits for another apt/dpkg to release its lock instead of
# failing at once.
apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -o DPkg::Lock::Timeout=600 "$@"
}

# ensure_packages PKG... installs the Debian packages among PKG that are not installed
# yet. `apt-get update` runs only when something must be installed.
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "All needed Debian packages are installed."
        return 0
    fi
    echo "Installing: ${missing[*]}"
    apt_get update
    apt_get install -y --no-install-recommends "${missing[@]}"
}

# Adds a JDK (javac and keytool) unless one is already on PATH, whichever package
# brought it.
ensure_jdk() {
    if command -v javac >/dev/null 2>&1 && command -v keytool >/dev/null 2>&1; then
        echo "JDK found: $(javac -version 2>&1)"
        return 0
    fi
    ensure_packages default-jdk-headless
}

# The repository root (the parent of scripts/).
repo_root() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

# Seconds as "3m07s".
duration() {
    printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
}
