# Sourced by test.sh: install the Debian packages that some tests need (a QEMU guest for the cgroup v2
# sandbox tests, a headless browser for the run viewer). Each file in system-packages.d/ lists
# package names, one per line ('#' starts a comment). Only what is missing is installed, quietly, and
# only as root with apt-get; elsewhere the tests that need a package say so when they skip.
install_system_packages() {
    local dir missing=() pkg
    dir="$(dirname "${BASH_SOURCE[0]}")/system-packages.d"
    command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] || return 0
    for pkg in $(cat "$dir"/*.txt 2>/dev/null | sed 's/#.*//'); do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    echo "ttd: installing system packages for the tests: ${missing[*]}"
    local log
    log=$(mktemp)
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}"; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "ttd: could not install ${missing[*]}; the tests that need them will say so" >&2
    fi
    rm -f "$log"
}
