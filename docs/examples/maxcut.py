"""A data-answer problem the built-in embedded policy trains on, on a CPU: a maximum cut.

The answer is not a program but the data itself: one character per vertex, '0' or '1', naming
its side; the score is the number of edges that cross. Because an answer is an edit of the
state shown, the embedded policy reads the state character by character while it writes.
"""

import numpy as np

from ttd_envs import EmbeddedSpec, Evaluation, Record, State, TrainerDefaults, register_problem


class MaxCut:
    """Split the vertices of a fixed random graph in two so that as many edges as possible cross."""

    name, summary = "MaxCut", "Maximum cut of a fixed random graph: one '0'/'1' side per vertex"

    def __init__(self, vertices: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n = vertices
        self.edges = np.argwhere(np.triu(rng.random((vertices, vertices)) < 0.3, 1))
        self.record = Record(float(self.best_cut()), "exhaustive search", higher_is_better=True)
        self.defaults = TrainerDefaults(model_kind="embedded", steps=20, groups_per_step=4, group_size=8,
                                        eval_timeout_s=5.0, embedded=EmbeddedSpec("01", vertices, True))

    def cut(self, sides: np.ndarray) -> int:
        return int(np.sum(sides[self.edges[:, 0]] != sides[self.edges[:, 1]]))

    def best_cut(self) -> int:
        """The optimum by brute force over every split with vertex 0 on side 0 (n <= 20)."""
        sides = (np.arange(2 ** (self.n - 1))[:, None] >> np.arange(self.n)) & 1
        return int(np.max(np.sum(sides[:, self.edges[:, 0]] != sides[:, self.edges[:, 1]], axis=1)))

    def initial_state(self, rng: np.random.Generator) -> State:
        sides = rng.integers(0, 2, self.n)
        return State(construction="".join(map(str, sides)), score=float(self.cut(sides)),
                     reward=float(self.cut(sides)), is_initial=True)

    def compact_prompt(self, state: State) -> str:
        return state.construction

    def prompt(self, state: State) -> str:
        return (f"Edges of a graph on {self.n} vertices: {self.edges.tolist()}. Answer with {self.n} characters "
                f"'0'/'1', one side per vertex, cutting as many edges as possible. Current: {state.construction}.")

    def evaluate(self, answer: str, state: State) -> Evaluation:
        text = answer.strip()
        if len(text) != self.n or set(text) - {"0", "1"}:
            return Evaluation.failure(f"answer with exactly {self.n} characters, each '0' or '1'; got {text[:40]!r}")
        cut = float(self.cut(np.array([int(c) for c in text])))
        return Evaluation(reward=cut, valid=True, score=cut, construction=text)


register_problem("examples/MaxCut-v0", MaxCut)
