#!/usr/bin/env bash
# Set up, then run the whole test suite. pytest's exit code 5 (no test ran) counts as a failure.
source "$(dirname "$0")/_venv.sh"
install_project "agent,bio,kernels,ray,test"
set +e
python -m pytest -q -rs "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "no test was collected: treating that as a failure" >&2
    exit 1
fi
exit $status
