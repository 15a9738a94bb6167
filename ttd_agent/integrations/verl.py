"""verl, trainer side: TTT-Discover's entropic objective as an advantage estimator, and a
majority-vote reward manager for TTRL.

Importing this module registers both with verl. Installing ttd registers it as a `verl.plugins`
entry point, which `import verl` loads by default (VERL_USE_EXTERNAL_PLUGINS=auto), so one config
line selects each:

    algorithm.adv_estimator=ttd_entropic_adaptive      # any ttd reward, or any verl reward at all
    reward.reward_manager.name=ttd_majority_vote       # ttd/MathVote-v0 rows (and ttd rows besides)

What carries over from TTT-Discover is the objective only: per group of responses to one prompt
(verl's `uid`), the leave-one-out entropic advantages with beta chosen so KL(q_beta || uniform) =
ln 2, computed by `ttd_agent.objective` itself. What does not: PUCT selection and reuse of earlier
states (verl samples prompts from a fixed dataset), the unchanged-answer rule, and ttd's loss
aggregation and KL settings (verl's own `actor.loss_agg_mode`, clip and KL apply).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.trainer.ppo.core_algos import register_adv_est

from ttd_agent.objective import group_advantages
from ttd_envs.integrations import common
from ttd_envs.integrations.verl import compute_score

ESTIMATOR = "ttd_entropic_adaptive"
VOTE_MANAGER = "ttd_majority_vote"


@register_adv_est(ESTIMATOR)
def compute_ttd_entropic_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                   index: np.ndarray, epsilon: float = 1e-6, norm_adv_by_std_in_grpo: bool = True,
                                   config: Any = None, **unused: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-beta entropic advantages per group (`index` = verl's uid), one scalar per response
    spread over its tokens. `epsilon`, `norm_adv_by_std_in_grpo` and whatever else verl passes
    (e.g. `reward_baselines`) are other estimators' knobs: unused (the adaptive beta already makes
    the advantages invariant to r -> a*r + b)."""
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1).detach().to("cpu", torch.float64).numpy()
        advantages = np.zeros_like(scores)
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, key in enumerate(index):
            groups[key].append(i)
        for members in groups.values():
            advantages[members] = group_advantages(scores[members], "entropic-adaptive")[0]
        per_token = torch.as_tensor(advantages, dtype=token_level_rewards.dtype, device=token_level_rewards.device)
        per_token = per_token.unsqueeze(-1) * response_mask
    return per_token, per_token


@register(VOTE_MANAGER)
class TtdMajorityVoteRewardManager(RewardManagerBase):
    """Rewards each response of a `ttd/MathVote-v0` group by the group's majority vote.

    verl's reward loop scores one response at a time, so responses wait here, keyed by their uid,
    until the whole group (`actor_rollout_ref.rollout.n` of them) has arrived; then all are
    answered at once. Every response of a group must reach the same manager: keep
    `reward.num_workers=1` for vote data (a group split across workers fails after
    `group_timeout_s` with a message). Rows of other ttd envs are scored by `compute_score`.
    """

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, reward_router_address: Any = None,
                 reward_model_tokenizer: Any = None, group_size: int | None = None,
                 group_timeout_s: float = 600.0) -> None:
        super().__init__(config, tokenizer, compute_score)
        self.group_size = int(group_size or config.actor_rollout_ref.rollout.n)
        self.group_timeout_s = group_timeout_s
        self._waiting: dict[str, list[tuple[str | None, asyncio.Future]]] = defaultdict(list)

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1:][0]
        response_ids = item.batch["responses"]
        length = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, lambda: self.tokenizer.decode(response_ids[:length],
                                                                              skip_special_tokens=True))
        data_source = item.non_tensor_batch["data_source"]
        extra_info = dict(item.non_tensor_batch.get("extra_info") or {})
        if not common.is_group_env(data_source):
            scored = await loop.run_in_executor(None, lambda: compute_score(data_source, text, None, extra_info))
            return {"reward_score": scored["score"], "reward_extra_info": scored}
        options = common.parse_options(extra_info.get("env_kwargs"))
        answer = common.vote_answer(text, options.get("answer_fallback", "none"))
        reward, ratio = await self._vote(str(item.non_tensor_batch["uid"]), answer, options.get("timeout_s", 2.0))
        return {"reward_score": reward,
                "reward_extra_info": {"score": reward, "majority_ratio": ratio, "answered": float(answer is not None)}}

    async def _vote(self, uid: str, answer: str | None, timeout_s: float) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        mine: asyncio.Future = loop.create_future()
        group = self._waiting[uid]
        group.append((answer, mine))
        if len(group) == self.group_size:
            del self._waiting[uid]
            rewards, _, ratio = await loop.run_in_executor(
                None, common.vote_answers, [a for a, _ in group], timeout_s)
            for (_, future), reward in zip(group, rewards):
                future.set_result((reward, ratio))
        try:
            return await asyncio.wait_for(mine, self.group_timeout_s)
        except TimeoutError:
            raise TimeoutError(f"group {uid}: only {len(self._waiting.get(uid, []))} of {self.group_size} responses "
                               f"reached this reward manager in {self.group_timeout_s:g} s; a majority vote needs "
                               "the whole group in one worker: set reward.num_workers=1") from None
