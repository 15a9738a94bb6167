# Sourced by run.sh and test.sh: use the active virtualenv, or create .venv and install into it.
# torch is pinned to 2.13.0: on our machines that spec installs a local CPU build; any other spec
# pulls gigabytes of CUDA wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
install_project() {  # $1: the extras, e.g. "agent,bio,test"
    python -m pip install -q --upgrade pip
    python -m pip install -q "torch==2.13.0"
    python -m pip install -q -e ".[$1]"
}
