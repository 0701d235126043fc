"""`selfcorrect select`: rank a JSONL corpus by the model's uncertainty and keep the most or least uncertain part.

This is the fine-tuning sample selection of arXiv 2406.02378 (v1): each record is rendered into a prompt (a named
Jinja template over the record's keys, e.g. `select-bias-question`), the model answers it `samples` times in ONE
batched backend call, and the record is scored by
- `answer_entropy`: Shannon entropy (nats) of the normalised answers over the samples (how much the model
  disagrees with itself), or
- `mean_nll`: the samples' mean per-token negative log-likelihood.
The output is the chosen records unchanged, one JSON object a line, in corpus order, so a training method can take
it as its training set; `<out>.scores.json` beside it keeps every record's score and the settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from selfcorrect.backends.base import Temperature
from selfcorrect.config_blocks import ModelBlock, PromptsBlock, SamplingBlock, SeedBlock
from selfcorrect.errors import SelfCorrectError
from selfcorrect.tasks.base import Task
from selfcorrect.trajectory import Example, Trajectory, Verdict


class SelectConfig(SeedBlock, SamplingBlock, ModelBlock, PromptsBlock):
    """Which corpus, how to ask the model about each record, how to score and what to keep.

    Model, sampling and seed settings come from the shared blocks (config_blocks.py); a corpus takes a task's place.
    """

    #: Uncertainty needs spread: the samples are drawn at temperature 1.0 (eval decodes greedily by default).
    temperature: Temperature = 1.0
    #: A record's answer is short; no task sets its length here.
    max_new_tokens: int = Field(default=16, ge=1)
    corpus: str
    prompt: str = "select-question"
    #: Sampled answers drawn per record, all of them scored for uncertainty.
    samples: int = Field(default=5, ge=1)
    measure: Literal["answer_entropy", "mean_nll"] = "answer_entropy"
    #: A fraction of the corpus (<= 1) or a number of records (> 1).
    keep: float = Field(default=0.5, gt=0)
    which: Literal["most", "least"] = "most"
    limit: int | None = None


class CorpusTask(Task):
    """Records of a corpus as examples; the question is the record rendered through the select prompt."""

    name = "corpus"
    description = "records of a JSONL corpus, asked through a prompt template (selfcorrect select)"

    def __init__(self, records: list[dict[str, Any]], prompt: Any, locations: list[str] | None = None) -> None:
        self.records, self.prompt = records, prompt
        self.locations = dict(enumerate(locations or []))

    def examples(self, split: str = "test", limit: int | None = None) -> list[Example]:
        return [Example(id=f"record-{i}", fields=dict(r)) for i, r in enumerate(self.records[:limit])]

    def question(self, example: Example) -> str:
        return self.prompt.render(**example.fields, record=example.fields)

    def score(self, example: Example, text: str) -> Verdict:
        return Verdict(0.0, extracted=None, reason="select does not score answers")

    def locate(self, example: Example) -> str | None:
        return self.locations.get(int(example.id.removeprefix("record-")))


def uncertainty_scores(children: dict[str, list[Trajectory]], measure: str) -> dict[str, float]:
    """Per example id, the uncertainty of its samples under `measure`."""
    from selfcorrect.analysis.uncertainty import answer_entropy

    scores = {}
    for example_id, samples in children.items():
        answers = [s.turns[-1] for s in samples]
        if measure == "answer_entropy":
            scores[example_id] = answer_entropy([a.text for a in answers])
        else:
            nlls = [a.logprobs.mean_nll for a in answers if a.logprobs is not None]
            if not nlls:
                raise SelfCorrectError("measure mean_nll needs a backend that returns token logprobs")
            scores[example_id] = float(np.mean(nlls))
    return scores


def choose(scores: list[float], keep: float, which: str) -> list[int]:
    """Indices of the records kept: the `keep` most (or least) uncertain, ties broken by corpus order, returned in
    corpus order."""
    count = round(keep * len(scores)) if keep <= 1 else int(keep)
    if count > len(scores):
        raise SelfCorrectError(f"keep={keep:g} asks for {count} records; the corpus has {len(scores)}")
    values = np.asarray(scores, dtype=float)
    order = np.argsort(-values if which == "most" else values, kind="stable")
    return sorted(order[:count].tolist())


def run_select(config: SelectConfig, out: str | Path, backend: Any = None, quiet: bool = False) -> dict[str, Any]:
    from selfcorrect.backends import build_backend
    from selfcorrect.progress import Progress
    from selfcorrect.prompts import get_prompt, load_prompts
    from selfcorrect.rounds import add_instruction, generate, start
    from selfcorrect.runs import atomic_write_text, write_json
    from selfcorrect.tasks.loaders import prompt_location, read_jsonl, require_text

    out = Path(out)
    if out.exists():
        raise SelfCorrectError(f"{out} already exists; choose another --out")
    prompts = load_prompts(config.prompts_file)
    prompt = get_prompt(prompts, config.prompt)
    records = read_jsonl(config.corpus)[:config.limit]
    keys = sorted(prompt.variables() - {"record"})
    locations = [prompt_location(config.corpus, record, index, keys) for index, record in enumerate(records)]
    for record, where in zip(records, locations, strict=True):
        for name in keys:
            if name not in record:
                raise SelfCorrectError(f"{where}: missing field {name!r} (prompt {prompt.name!r} reads it)")
            require_text(record[name], name, where)
    records = [dict(r) for r in records]
    task = CorpusTask(records, prompt, locations)
    trajectories = start(task, task.examples())
    add_instruction(trajectories, task, get_prompt(prompts, "question"), 1)
    params = config.sampling(task, config.samples)
    owned = backend is None  # a backend built here is closed here (a vLLM engine holds the GPU until then)
    backend = backend or build_backend(config.backend, config.model, config.backend_options)
    try:
        with Progress(quiet=quiet) as progress:
            progress.add("answering the corpus", len(records))
            samples = generate(backend, trajectories, task, kind="answer", round_index=1, params=params,
                               seed=config.seed, fan_out="s", score=False)
            progress.advance("answering the corpus", len(records))
    finally:
        if owned:
            backend.close()
    children: dict[str, list[Trajectory]] = {}
    for sample in samples:
        children.setdefault(sample.example.id, []).append(sample)
    by_id = uncertainty_scores(children, config.measure)
    scores = [by_id[f"record-{i}"] for i in range(len(records))]
    kept = choose(scores, config.keep, config.which)
    atomic_write_text(out, "".join(json.dumps(records[i], ensure_ascii=False) + "\n" for i in kept))
    report = {"config": config.model_dump(), "model": backend.model_id, "n_records": len(records),
              "n_kept": len(kept), "kept": kept, "scores": scores,
              "mean_score_kept": float(np.mean([scores[i] for i in kept])) if kept else None,
              "mean_score_all": float(np.mean(scores))}
    write_json(out.with_name(out.name + ".scores.json"), report)
    return report
