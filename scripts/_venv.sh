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
    local torch constraint
    python -m pip install -q --upgrade pip
    if torch=$(python -c 'import torch; print(torch.__version__)' 2>/dev/null); then
        echo "ttd: keeping the installed torch $torch"
    else
        echo "ttd: no torch here; installing torch==2.13.0 (a few minutes the first time)"
        python -m pip install "torch==2.13.0"
        torch=$(python -c 'import torch; print(torch.__version__)')
    fi
    constraint=$(mktemp)
    echo "torch==$torch" >"$constraint"
    echo "ttd: installing ttd[$1] with torch pinned to $torch"
    python -m pip install -c "$constraint" -e ".[$1]" | { grep -v '^Requirement already satisfied' || true; }
    rm -f "$constraint"
}
