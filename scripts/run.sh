#!/usr/bin/env bash
# The main job: set up, then run test-time RL on the embedded default (ttd/LABS-v0, embedded policy).
# Extra arguments go to `ttd-agent train`, e.g. ./scripts/run.sh --steps 40 --seed 1
source "$(dirname "$0")/_venv.sh"
install_project "agent"
exec ttd-agent train --env ttd/LABS-v0 "$@"
