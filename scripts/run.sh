#!/usr/bin/env bash
# The main job: set up, then run the Erdős env on built-in answers (the trainer replaces this).
source "$(dirname "$0")/_venv.sh"
install_project "agent"
exec python -m ttd_envs.demo "$@"
