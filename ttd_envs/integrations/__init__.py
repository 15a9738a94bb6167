"""Adapters that plug ttd envs into the RL frameworks researchers train with.

Each adapter is a module that imports its framework, so importing `ttd_envs` (or this package)
never needs one: `ttd_envs.integrations.verifiers` (verifiers), `.trl` (TRL's GRPOTrainer),
`.verl` (verl's custom reward and parquet data), `.openenv` (an OpenEnv server). The
trainer-side pieces that need torch (verl's advantage estimator and group reward manager) live
in `ttd_agent.integrations`. `common` holds what they share. See docs/integrations.md.
"""
