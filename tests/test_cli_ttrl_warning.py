"""TTRL warns when the policy cannot produce the answers a question set needs (votes over noise)."""

from __future__ import annotations

from ttd_agent.policy import make_policy
from ttd_agent.ttrl_trainer import EMBEDDED_ALPHABET, policy_limitation
from ttd_envs.problems.mathvote import Question, load_questions


def embedded(max_context: int = 256):
    return make_policy("embedded", alphabet=EMBEDDED_ALPHABET, max_context=max_context, seed=0)


def test_the_embedded_policy_on_aime_is_called_out():
    message = policy_limitation(embedded(), load_questions("aime24"), "", max_new_tokens=4)
    assert message is not None and "longer than its 256-character context" in message


def test_answers_it_cannot_write_are_called_out():
    questions = [Question(prompt="1/2?", answer="\\frac{1}{2}", id="a", source="test"),
                 Question(prompt="2+2?", answer="4", id="b", source="test")]
    message = policy_limitation(embedded(), questions, "", max_new_tokens=4)
    assert message is not None and "1 of 2 true answers need characters outside" in message


def test_short_integer_questions_pass_without_a_warning():
    questions = [Question(prompt=f"{a}+{a}=", answer=str(2 * a), id=str(a), source="test") for a in range(10)]
    assert policy_limitation(embedded(), questions, "", max_new_tokens=4) is None
