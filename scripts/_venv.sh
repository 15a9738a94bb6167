# Sourced by run.sh and test.sh: use the active virtualenv, or create .venv and install into it.
# torch: a torch already installed is kept (often a user's CUDA build). Only where none is present
# is the pinned torch==2.13.0 installed (on our machines that spec is a local CPU build; any other
# spec pulls gigabytes of CUDA wheels). The project is then installed under a pip constraint that
# pins the torch present, so no extra can replace it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    if [[ ! -x .venv/bin/python ]]; then
        echo "ttd: creating .venv"
        python3 -m venv .venv
    fi
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
install_project() {  # $1: the extras, e.g. "agent,bio,test"
    # Quiet unless it fails (pip's output goes to a log, shown on failure); a stamp of
    # pyproject.toml's hash and the extras in the venv skips the install when nothing changed.
    local torch constraint log stamp want
    stamp="$(python -c 'import sys; print(sys.prefix)')/.ttd-installed"
    want="$1 $(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [[ -f "$stamp" ]] && grep -qxF "$want" "$stamp" && python -c 'import ttd_envs, ttd_agent' 2>/dev/null; then
        return 0
    fi
    log=$(mktemp)
    quiet() { "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "ttd: set-up failed (above): $*" >&2; rm -f "$log"; exit 1; }; }
    quiet python -m pip install -q --upgrade pip
    if torch=$(python -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null); then
        echo "ttd: keeping the installed torch $torch"
    else  # the version from metadata: importing torch before numpy is installed warns
        echo "ttd: no torch here; installing torch==2.13.0 (a few minutes the first time)"
        quiet python -m pip install -q "torch==2.13.0"
        torch=2.13.0
    fi
    constraint=$(mktemp)
    echo "torch==$torch" >"$constraint"
    echo "ttd: installing ttd[$1] with torch pinned to $torch"
    quiet python -m pip install -q -c "$constraint" -e ".[$1]"
    rm -f "$constraint" "$log"
    echo "$want" >>"$stamp"
}
