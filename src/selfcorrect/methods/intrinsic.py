"""Intrinsic self-correction (arXiv 2406.02378; Huang et al.'s baseline): answer, then review rounds.

Round 1 answers the question (optionally with an instruction such as `bbq-question`); rounds 2..T add the plain
`review` instruction and answer again. The whole conversation is carried into every round (the reference code of
arXiv 2406.02378 accumulated history but never fed it back). The steps themselves are the session's
(methods/session.py); `selfcorrect eval` runs this method by default (methods/evaluate.py).
"""

from __future__ import annotations

from selfcorrect.methods.session import Session
from selfcorrect.trajectory import Trajectory


def run_intrinsic(session: Session, examples: list) -> list[Trajectory]:
    """First answer plus `config.rounds` review rounds for a chunk of examples."""
    trajectories = session.first_answer(examples)
    for round_index in range(2, session.config.rounds + 2):
        session.instruct(trajectories, session.config.review_prompt, round_index)
        trajectories = session.answer(trajectories, "correction", round_index)
    return trajectories
