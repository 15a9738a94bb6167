"""Trainer-side framework adapters (they need torch): `verl` registers TTT-Discover's entropic
objective as a verl advantage estimator and a majority-vote reward manager. The env-side
adapters live in `ttd_envs.integrations`. See docs/integrations.md."""
