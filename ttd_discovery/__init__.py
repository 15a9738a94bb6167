"""The `ttd-discovery` verifiers environment: every ttd env as a verifiers taskset.

verifiers loads an environment by importing a top-level module named after its id and taking
the `vf.Taskset` (and `vf.Env`) it exports; the implementation lives in
`ttd_envs.integrations.verifiers`. Needs the `verifiers` extra.
"""

from ttd_envs.integrations.verifiers import TtdEnv, TtdTaskset, load_environment

__all__ = ["TtdEnv", "TtdTaskset", "load_environment"]
