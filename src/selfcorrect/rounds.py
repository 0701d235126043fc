"""The one verb: a round of batched generation over a set of trajectories.

Every method is a composition of rounds: append a user instruction to each unfinished trajectory, send the whole
set to the backend in ONE call, append each answer as a turn with its verdict. `n > 1` fans a trajectory out into n
children that share its history (`q17` -> `q17/a0`, `q17/a1`), which is how STaSC's N_init x N_corr tree and
uncertainty's n samples are built.

Each request's seed is derived from (run seed, trajectory id, round), so a trajectory's sample does not depend on
which other trajectories share its batch, on resume order, or on batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from selfcorrect.backends.base import Backend, Generation, GenerationRequest, SamplingParams, request_seed
from selfcorrect.prompts import Prompt
from selfcorrect.tasks.base import Task
from selfcorrect.trajectory import LogprobSummary, Trajectory, Turn, TurnKind


def start(task: Task, examples: Sequence, prefix: str = "") -> list[Trajectory]:
    """One empty trajectory per example; ids are the example ids (with an optional prefix)."""
    return [Trajectory(id=f"{prefix}{ex.id}", example=ex) for ex in examples]


def add_instruction(trajectories: Sequence[Trajectory], task: Task, prompt: Prompt, round_index: int,
                    kind: TurnKind = "prompt") -> None:
    """Append the user message of `prompt` to every unfinished trajectory."""
    for traj in trajectories:
        if traj.stopped:
            continue
        text = prompt.render(question=task.question(traj.example), fields=traj.example.fields, round=round_index)
        traj.add(Turn(role="user", kind=kind, round=round_index, text=text, template=prompt.name))


def _summary(gen: Generation) -> LogprobSummary | None:
    if gen.token_logprobs is None:
        return None
    entropy = None
    if gen.token_entropies:
        entropy = sum(gen.token_entropies) / len(gen.token_entropies)
    return LogprobSummary(n_tokens=len(gen.token_logprobs), sum_logprob=float(sum(gen.token_logprobs)),
                          mean_entropy=entropy)


HiddenSink = Callable[[Trajectory, int, dict[int, list[float]]], None]
"""Receives hidden states as (trajectory, round, {layer: vector}); they are stored beside the run, not in JSONL."""


def _request_id(task: Task, trajectory: Trajectory) -> str:
    """The trajectory id, plus the record it came from when the task knows it: a backend's error about one request
    (a prompt longer than the model's context) then names the file, line and field to fix."""
    where = task.locate(trajectory.example)
    return f"{trajectory.id} ({where})" if where else trajectory.id


def generate(backend: Backend, trajectories: Sequence[Trajectory], task: Task, *, kind: TurnKind, round_index: int,
             params: SamplingParams, seed: int, fan_out: str | None = None, score: bool = True,
             hidden_layers: tuple[int, ...] = (), hidden_span: int = 1,
             hidden_sink: HiddenSink | None = None) -> list[Trajectory]:
    """Generate the next assistant turn for every unfinished trajectory in one backend call.

    With `params.n == 1` the trajectories are extended in place and returned. With `n > 1` each trajectory is
    replaced by n children named `<id>/<fan_out><k>` (fan_out defaults to the first letter of `kind`).
    Finished trajectories pass through unchanged.
    """
    active = [t for t in trajectories if not t.stopped]
    requests = [GenerationRequest(params=replace(params, seed=request_seed(seed, t.id, round_index)),
                                  messages=t.messages(), hidden_layers=hidden_layers, hidden_span=hidden_span,
                                  id=_request_id(task, t)) for t in active]
    outputs = backend.generate(requests) if requests else []
    expected = sum(r.params.n for r in requests)
    if len(outputs) != expected:
        raise RuntimeError(f"backend {backend.name} returned {len(outputs)} generations for {expected} requested")

    produced: dict[str, list[Trajectory]] = {}
    for gen in outputs:
        parent = active[gen.request_index]
        traj = parent if params.n == 1 else parent.child(f"{fan_out or kind[0]}{gen.sample_index}")
        turn = traj.add(Turn(role="assistant", kind=kind, round=round_index, text=gen.text,
                             logprobs=_summary(gen), finish_reason=gen.finish_reason))
        if score:
            turn.verdict = task.score(traj.example, gen.text)
            turn.extracted = turn.verdict.extracted
        if gen.hidden_states and hidden_sink is not None:
            hidden_sink(traj, round_index, gen.hidden_states)
        produced.setdefault(parent.id, []).append(traj)

    result: list[Trajectory] = []
    for traj in trajectories:
        result.extend(produced.get(traj.id, [traj]) if not traj.stopped else [traj])
    return result
