"""ttd_envs: scientific discovery problems as Gymnasium text environments.

`import ttd_envs` registers every `ttd/` id; `gymnasium.make("ttd_envs:ttd/ErdosOverlap-v0")`
does the import for you.
"""

from ttd_envs.core.env import DiscoveryEnv
from ttd_envs.core.problem import EmbeddedSpec, Evaluation, Problem, Record, TrainerDefaults
from ttd_envs.core.state import State
from ttd_envs.registration import ENVS, make_problem, register_envs, register_problem

register_envs()

__all__ = ["DiscoveryEnv", "ENVS", "EmbeddedSpec", "Evaluation", "Problem", "Record", "State", "TrainerDefaults", "make_problem",
           "register_problem"]
