"""Single-cell RNA-seq denoising (ttd/Denoising-v0): datasets, MCV split, metrics, the problem."""

from ttd_envs.problems.denoising.problem import Denoising

__all__ = ["Denoising"]
