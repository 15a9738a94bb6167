#!/usr/bin/env bash
# The main job: set up, then run TTT-Discover on ttd/LABS-v0 (N = 32) with the embedded policy.
# Extra arguments go to `ttd-agent train`, e.g. ./scripts/run.sh --env-arg n=40 --steps 80
source "$(dirname "$0")/_venv.sh"
install_project "agent"
exec ttd-agent train --env ttd/LABS-v0 --run-dir "runs/labs-$(date +%Y%m%d-%H%M%S)" "$@"
