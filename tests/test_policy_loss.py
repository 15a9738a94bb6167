"""The shared policy-gradient loss: hand-computed values, gradient directions, clipping, KL, masking."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from ttd_agent.policy.base import LossConfig
from ttd_agent.policy.loss import policy_gradient_loss

# Two sequences: the first has two tokens, the second one token and one padding slot (whose
# values are absurd on purpose: the mask must hide them).
NEW = [[-1.0, -0.5], [-2.0, 5.0]]
SAMPLED = [[-1.0, -1.0], [-1.5, 0.0]]
MASK = [[1.0, 1.0], [1.0, 0.0]]
ADV = [1.0, -2.0]
R01, R10 = math.exp(0.5), math.exp(-0.5)  # the two ratios that are not 1


def run(config: LossConfig, new=NEW, ref=None, adv=ADV):
    logp_new = torch.tensor(new, requires_grad=True)
    logp_ref = None if ref is None else torch.tensor(ref)
    loss, stats = policy_gradient_loss(logp_new, torch.tensor(SAMPLED), torch.tensor(adv), torch.tensor(MASK),
                                       config, logp_ref)
    loss.backward()
    return loss.item(), stats, logp_new.grad


def test_plain_surrogate_by_hand():
    seq0, seq1 = -(1.0 + R01) * 1.0, -R10 * -2.0
    loss, stats, grad = run(LossConfig(aggregation="seq-sum"))
    assert loss == pytest.approx((seq0 + seq1) / 2, rel=1e-6)
    assert stats["ratio_mean"] == pytest.approx((1 + R01 + R10) / 3, rel=1e-6)
    assert stats["ratio_max"] == pytest.approx(R01, rel=1e-6)
    assert stats["clip_fraction"] == 0.0 and stats["kl"] == 0.0
    # d/dlogp of -ratio*A/B = -ratio*A/B
    assert grad.flatten().tolist() == pytest.approx([-0.5, -R01 / 2, R10, 0.0], rel=1e-6)

    loss, _, grad = run(LossConfig(aggregation="token-mean"))
    assert loss == pytest.approx((seq0 + seq1) / 3, rel=1e-6)
    assert grad.flatten().tolist() == pytest.approx([-1 / 3, -R01 / 3, 2 * R10 / 3, 0.0], rel=1e-6)


def test_ppo_clip_by_hand_and_zero_gradient_outside_the_trust_region():
    # token (0,1): ratio e^0.5 > 1.2 with A = 1 -> clipped to 1.2; token (1,0): ratio e^-0.5 < 0.8
    # with A = -2 -> clipped to 0.8 (surrogate 1.6); token (0,0): ratio 1, untouched.
    loss, stats, grad = run(LossConfig(clip_eps=0.2))
    assert loss == pytest.approx(((-1.0 - 1.2) + 1.6) / 2, rel=1e-6)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    assert grad[0, 1] == 0.0 and grad[1, 0] == 0.0
    assert grad[0, 0] == pytest.approx(-0.5)
    # Inside the trust region nothing is clipped: ratio e^0.5 with a negative advantage is kept
    # (min picks the unclipped, more pessimistic term).
    loss, stats, grad = run(LossConfig(clip_eps=0.2), adv=[-1.0, 2.0])
    assert stats["clip_fraction"] == 0.0
    assert grad[0, 1] == pytest.approx(R01 / 2, rel=1e-6) and grad[1, 0] == pytest.approx(-R10, rel=1e-6)


def test_kl_as_reward_shaping():
    ref = [[-1.5, -0.5], [-1.0, 0.0]]  # new - ref = 0.5, 0, -1 on real tokens
    c = 0.1
    loss, stats, grad = run(LossConfig(kl_coef=c, kl_mode="reward"), ref=ref)
    a = [[1.0 - c * 0.5, 1.0 - 0.0], [-2.0 - c * -1.0]]
    expected = (-(1.0 * a[0][0] + R01 * a[0][1]) + -(R10 * a[1][0])) / 2
    assert loss == pytest.approx(expected, rel=1e-6)
    assert stats["kl"] == pytest.approx((0.5 + 0.0 - 1.0) / 3, rel=1e-6)  # mean k1
    # The shaping is detached: the gradient is -ratio * A_t / B, no d(KL)/dlogp term.
    assert grad[0, 0].item() == pytest.approx(-a[0][0] / 2, rel=1e-6)


def test_kl_k3_penalty():
    ref = [[-1.5, -0.5], [-1.0, 0.0]]
    c = 0.5
    k3 = [math.exp(d) - d - 1 for d in (-0.5, 0.0, 1.0)]  # d = ref - new
    loss_pg, _, _ = run(LossConfig())
    loss, stats, grad = run(LossConfig(kl_coef=c, kl_mode="k3"), ref=ref)
    assert stats["kl"] == pytest.approx(sum(k3) / 3, rel=1e-6)
    assert loss == pytest.approx(loss_pg + c * sum(k3) / 3, rel=1e-6)
    # d k3 / d new = 1 - exp(ref - new): token (0,0) has new above ref, so the penalty pushes it down.
    _, _, grad_pg = run(LossConfig())
    assert (grad - grad_pg)[0, 0].item() == pytest.approx(c * (1 - math.exp(-0.5)) / 3, rel=1e-6)
    assert (grad - grad_pg)[0, 1].item() == pytest.approx(0.0, abs=1e-7)


def test_k3_is_clamped():
    ref = [[40.0, -1.0], [-2.0, 0.0]]  # exp(41) would explode
    _, stats, _ = run(LossConfig(kl_coef=1.0, kl_mode="k3"), ref=ref)
    assert stats["kl"] == pytest.approx((10.0 + (math.exp(-0.5) + 0.5 - 1) + 0.0) / 3, rel=1e-6)


def test_mask_hides_padding():
    other = [[-1.0, -0.5], [-2.0, -math.inf]]  # only the padded entry differs (even -inf is harmless)
    loss_a, stats_a, grad_a = run(LossConfig(clip_eps=0.2, kl_coef=0.1, kl_mode="k3"), ref=NEW)
    loss_b, stats_b, grad_b = run(LossConfig(clip_eps=0.2, kl_coef=0.1, kl_mode="k3"), new=other, ref=other)
    assert loss_a == pytest.approx(loss_b) and stats_a == pytest.approx(stats_b)
    assert grad_a[1, 1] == 0.0 and grad_b[1, 1] == 0.0


def test_per_token_advantages_are_accepted():
    loss_seq, _, _ = run(LossConfig())
    loss_tok, _, _ = run(LossConfig(), adv=[[1.0, 1.0], [-2.0, 123.0]])
    assert loss_tok == pytest.approx(loss_seq)


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_a_step_moves_the_token_logprob_with_the_advantage(advantage):
    logits = torch.zeros(1, 5, requires_grad=True)
    token = 2
    before = torch.log_softmax(logits, -1)[0, token].item()
    logp = torch.log_softmax(logits, -1)[:, token][:, None]
    loss, _ = policy_gradient_loss(logp, logp.detach(), torch.tensor([advantage]), torch.ones(1, 1),
                                   LossConfig(clip_eps=0.2))
    loss.backward()
    with torch.no_grad():
        logits -= 0.5 * logits.grad
    after = torch.log_softmax(logits, -1)[0, token].item()
    assert (after - before) * advantage > 0


def test_errors_say_what_is_missing():
    with pytest.raises(ValueError, match="logp_ref"):
        run(LossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="shape"):
        policy_gradient_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2), torch.ones(2, 3), LossConfig())


@pytest.mark.parametrize("aggregation", ["seq-sum", "token-mean"])
def test_micro_batches_add_up_to_the_full_batch(aggregation):
    config = LossConfig(clip_eps=0.2, kl_coef=0.3, kl_mode="k3", aggregation=aggregation)
    ref = torch.tensor([[-1.5, -0.5], [-1.0, 0.0]])
    args = [torch.tensor(NEW), torch.tensor(SAMPLED), torch.tensor(ADV), torch.tensor(MASK)]
    full, full_stats = policy_gradient_loss(*args, config, ref)
    parts = [policy_gradient_loss(*(a[i:i + 1] for a in args), config, ref[i:i + 1], total_sequences=2,
                                  total_tokens=3) for i in range(2)]
    assert sum(p[0].item() for p in parts) == pytest.approx(full.item(), rel=1e-6)
    for key in ("loss", "kl", "clip_fraction", "ratio_mean"):
        assert sum(p[1][key] for p in parts) == pytest.approx(full_stats[key], rel=1e-6)
