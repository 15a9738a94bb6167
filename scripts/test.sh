#!/usr/bin/env bash
# Set up, then run the whole test suite. pytest's exit code 5 (no test ran) counts as a failure.
source "$(dirname "$0")/_venv.sh"
source scripts/_system_packages.sh
install_system_packages
install_project "agent,bio,kernels,ray,sinks,test,integrations,view"
# verl without its pins (they would downgrade transformers); the verl extra brings what ttd's verl
# adapter uses (docs/integrations.md). No test of an installed framework is skipped.
python -m pip install -q --no-deps "verl==0.9.1"
# the cgroup v2 guest (tests/test_sandbox_cgroup_v2.py): its kernel is fetched here, never by a test
python tests/guest.py --build >/dev/null || true
set +e
python -m pytest -q -rs "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "no test was collected: treating that as a failure" >&2
    exit 1
fi
exit $status
