"""Does TTRL learn from majority votes alone? A CPU-scale check with the embedded policy.

Setting. Synthetic arithmetic questions ("What is 7 * 3?", `ttd_agent.ttrl.arithmetic_questions`)
written to a JSON file and loaded as a user dataset. The embedded character-level policy gets a
*noisy prior* by imitation: for most questions the imitation data is the true answer 40 % of the
time and 6 scattered wrong answers 10 % each (the majority is right but a single sample often is
not); for a quarter of the questions ("decoys") one wrong answer carries 45 % and the true one
30 % (the majority is wrong). Then TTRL trains on the same questions with majority-vote rewards
only; the true answers are used only for the avg@k / maj@n evaluation rows.

What to expect. Majority-vote RL sharpens each question's answer distribution towards its
majority: avg@k should rise towards the prior's maj@n, rising on the questions whose majority
is right and falling on the decoys (TTRL cannot fix a wrong consensus, ttrl.md §5).

    python -m benchmarks.ttrl_learning [--seeds 0 1 2] [--questions 16] [--episodes 12] [--write]

`--write` puts the table into docs/results.md between its markers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import markdown_table, write_section
from ttd_agent.ttrl import arithmetic_questions

DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"
ALPHABET = "-0123456789"


@dataclass
class Prior:
    """The imitation data of the noisy prior (per question, `copies` pairs in these shares)."""

    correct_share: float = 0.4
    distractors: int = 6
    decoy_fraction: float = 0.25
    decoy_share: float = 0.45
    decoy_correct_share: float = 0.3
    copies: int = 20


def noisy_prior_pairs(records: list[dict[str, str]], seed: int, prior: Prior | None = None
                      ) -> tuple[list[tuple[str, str]], list[bool]]:
    """(prompt, completion) imitation pairs and, per question, whether it is a decoy (wrong majority).

    A normal question: round(copies * correct_share) true answers, the rest spread evenly over
    `distractors` distinct wrong integers. A decoy: one wrong answer gets decoy_share, the truth
    decoy_correct_share, the rest is spread like the normal case.
    """
    prior = prior or Prior()
    rng = np.random.default_rng(seed)
    decoys = np.zeros(len(records), dtype=bool)
    decoys[rng.choice(len(records), size=round(prior.decoy_fraction * len(records)), replace=False)] = True
    pairs: list[tuple[str, str]] = []
    for record, decoy in zip(records, decoys):
        truth = int(record["answer"])
        wrong = [int(w) for w in rng.permutation(np.arange(-9, 82)) if w != truth][:prior.distractors + 1]
        n_true = round(prior.copies * (prior.decoy_correct_share if decoy else prior.correct_share))
        answers = [truth] * n_true
        if decoy:
            answers += [wrong[0]] * round(prior.copies * prior.decoy_share)
        rest = prior.copies - len(answers)
        answers += [wrong[1 + i % prior.distractors] for i in range(rest)]
        pairs += [(record["prompt"], str(a)) for a in answers]
    return pairs, decoys.tolist()


def make_policy(seed: int, lr: float = 3e-3, d_model: int = 64, n_layer: int = 2) -> Any:
    """The embedded policy writing integers ("-" and digits, then EOS); `lr` is the imitation LR
    (the TTRL trainer sets its own LR on the optimizer every step)."""
    from ttd_agent.policy.embedded import EmbeddedConfig, EmbeddedPolicy

    return EmbeddedPolicy(EmbeddedConfig(d_model=d_model, n_layer=n_layer, n_head=4, max_context=32,
                                         alphabet=ALPHABET, lr=lr, seed=seed))


def per_question_accuracy(policy: Any, records: list[dict[str, str]], k: int, temperature: float = 1.0) -> np.ndarray:
    """Exact-match accuracy of k samples per question (the answers here are plain integers)."""
    groups = policy.sample([r["prompt"] for r in records], k, temperature=temperature, max_new_tokens=3)
    return np.array([np.mean([s.text == r["answer"] for s in g]) for g, r in zip(groups, records)])


def run_once(seed: int, questions: int = 16, episodes: int = 12, votes: int = 16, keep: int = 16,
             questions_per_step: int = 8, imitate_steps: int = 400, eval_samples: int = 32, lr: float = 3e-4,
             imitate_lr: float = 3e-3, imitate_batch: int = 64, d_model: int = 64, n_layer: int = 2,
             run_dir: str | None = None, prior: Prior | None = None) -> dict[str, Any]:
    """Imitate the noisy prior, then TTRL; returns before/after avg@k and maj@n and per-group accuracy."""
    from ttd_agent.ttrl_trainer import TTRLConfig, train_ttrl

    records = arithmetic_questions(questions, seed=seed)
    pairs, decoys = noisy_prior_pairs(records, seed, prior)
    policy = make_policy(seed, imitate_lr, d_model, n_layer)
    started = time.perf_counter()
    policy.imitate(pairs, steps=imitate_steps, batch_size=imitate_batch)
    imitate_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arithmetic.json"
        path.write_text(json.dumps(records))
        config = TTRLConfig(dataset=str(path), votes=votes, keep=keep, questions_per_step=questions_per_step,
                            episodes=episodes, temperature=1.0, max_new_tokens=3, lr=lr, answer_fallback="last_number",
                            eval_every=max(1, episodes // 2) * (questions // questions_per_step),
                            eval_samples=eval_samples, eval_votes=votes, eval_temperature=1.0, seed=seed,
                            run_dir=run_dir, plot_every=0, log_rollouts=False)
        before_q = per_question_accuracy(policy, records, eval_samples)
        started = time.perf_counter()
        result = train_ttrl(config, policy)
        train_s = time.perf_counter() - started
        after_q = per_question_accuracy(policy, records, eval_samples)
    decoy = np.array(decoys)
    first, last = result.first_eval, result.last_eval
    assert first is not None and last is not None
    return {
        "seed": seed, "before_avg": first["avg_at_k"], "after_avg": last["avg_at_k"],
        "before_maj": first["maj_at_n"], "after_maj": last["maj_at_n"], "k": first["k"], "n": first["n"],
        "before_normal": float(before_q[~decoy].mean()), "after_normal": float(after_q[~decoy].mean()),
        "before_decoy": float(before_q[decoy].mean()) if decoy.any() else float("nan"),
        "after_decoy": float(after_q[decoy].mean()) if decoy.any() else float("nan"),
        "label_accuracy_first": result.train_rows[0].get("label_accuracy"),
        "majority_ratio_first": result.train_rows[0]["majority_ratio"],
        "majority_ratio_last": result.train_rows[-1]["majority_ratio"],
        "entropy_first": result.train_rows[0].get("entropy"), "entropy_last": result.train_rows[-1].get("entropy"),
        "steps": result.step, "imitate_s": imitate_s, "train_s": train_s,
    }


def table(rows: list[dict[str, Any]]) -> str:
    header = ["seed", "avg@k before", "avg@k after", "maj@n before", "maj@n after", "majority-right qs before → after",
              "decoy qs before → after", "majority ratio first → last", "entropy first → last", "steps", "train s"]
    body = [[r["seed"], f"{r['before_avg']:.3f}", f"{r['after_avg']:.3f}", f"{r['before_maj']:.3f}",
             f"{r['after_maj']:.3f}", f"{r['before_normal']:.3f} → {r['after_normal']:.3f}",
             f"{r['before_decoy']:.3f} → {r['after_decoy']:.3f}",
             f"{r['majority_ratio_first']:.3f} → {r['majority_ratio_last']:.3f}",
             f"{r['entropy_first']:.3f} → {r['entropy_last']:.3f}", r["steps"], f"{r['train_s']:.0f}"] for r in rows]
    mean = [np.mean([r[key] for r in rows]) for key in ("before_avg", "after_avg", "before_maj", "after_maj")]
    body.append(["mean", *(f"{m:.3f}" for m in mean), "", "", "", "", "", ""])
    return markdown_table(header, body)


def write_doc(markdown: str, settings: str) -> None:
    write_section("ttrl_learning", f"{settings}\n\n{markdown.strip()}", doc=DOC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=15)
    parser.add_argument("--votes", type=int, default=32)
    parser.add_argument("--keep", type=int, default=16)
    parser.add_argument("--imitate-steps", type=int, default=400)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4, help="peak TTRL learning rate")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this tiny model)")
    parser.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        rows.append(run_once(seed, questions=args.questions, episodes=args.episodes, votes=args.votes, keep=args.keep,
                             imitate_steps=args.imitate_steps, eval_samples=args.eval_samples, lr=args.lr))
        print(json.dumps(rows[-1]), flush=True)
    markdown = table(rows)
    print(markdown)
    if args.write:
        settings = (f"Settings: {args.questions} questions, {args.episodes} episodes of "
                    f"{args.questions // 8} steps (B = 8), N = {args.votes} votes, M = {args.keep} kept, "
                    f"T = 1.0, lr {args.lr} (3 % warm-up, cosine), clip 0.2, k3 KL 0.001, "
                    f"{args.imitate_steps} imitation steps; avg@k and maj@n at T = 1.0 with "
                    f"k = {args.eval_samples}, n = {args.votes}.")
        write_doc(markdown, settings)


if __name__ == "__main__":
    main()
