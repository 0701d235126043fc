"""The one option table: every flag and argument of every `selfcorrect` command, declared once.

A command takes its parameters from here (`seed: Seed = None`), so a flag is spelled, typed and explained the same
way wherever it appears; tests/test_cli.py walks the whole command tree and checks it. Rules the table keeps:

- A flag that sets a config key is named after that key (`--n-init` sets `n_init`; `CONFIG_KEYS` lists the few
  that set a nested key) and defaults to None, so the config file or the config class decides the default.
- One flag per concept: `--seed` is one seed, `--seeds` the comma-separated seeds of a sweep; `--out` is where a
  command writes, required unless the command has a natural place for it (shown in its help).
- `--quiet` hides progress (bars, per-step lines), never the results.

Only typer is imported here, so `selfcorrect --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# Run plumbing, shared by every command that runs something.
Out = Annotated[Path | None, typer.Option("--out", help="Where the command writes its results: a run folder (select: "
                                                        "a JSONL file; report: an HTML page).")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML config; CLI flags override it.")]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override any config key: --set key=value "
                                                                   "(dotted for nested keys: --set a.b=1).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last finished step; "
                                                       "with only --out, its saved config.yaml says the rest.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or per-step lines; results are still "
                                                           "printed.")]
Seed = Annotated[int | None, typer.Option("--seed", help="The one seed that decides everything (default 0).")]
Seeds = Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds, one run each (default 0,1,2).")]

# Model, backend and task.
Model = Annotated[str | None, typer.Option("--model", help="Built-in model (`selfcorrect models`), folder or hub id "
                                                           "(default: sandbox).")]
Backend = Annotated[str | None, typer.Option("--backend", help="Backend: hf (default), openai, vllm or scripted.")]
BaseUrl = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible server, e.g. "
                                                                "http://127.0.0.1:8000/v1 (with --backend openai).")]
Cache = Annotated[bool | None, typer.Option("--cache/--no-cache", help="Use the generation cache (the default) or "
                                                                     "not; saved with the run.")]
Task = Annotated[str | None, typer.Option("--task", help="Task name (`selfcorrect tasks`; default sandbox-chain).")]
Split = Annotated[str | None, typer.Option("--split", help="train, validation or test.")]
Limit = Annotated[int | None, typer.Option("--limit", help="Only the first N examples.")]

# Sampling and prompts.
Temperature = Annotated[float | None, typer.Option("--temperature", help="Sampling temperature; 0 = greedy.")]
Samples = Annotated[int | None, typer.Option("--samples", help="Answers sampled per prompt to measure its "
                                                               "uncertainty (answer entropy).")]
Prompt = Annotated[str | None, typer.Option("--prompt", help="Prompt name over the record's keys, e.g. "
                                                             "select-bias-question.")]
QuestionPrompt = Annotated[str | None, typer.Option("--question-prompt", help="Round-1 prompt name, e.g. "
                                                                              "bbq-question.")]
ReviewPrompt = Annotated[str | None, typer.Option("--review-prompt", help="Review prompt name (intrinsic).")]
CheckPrompt = Annotated[str | None, typer.Option("--check-prompt", help="Check prompt name (cac, "
                                                                        "self-refine-style).")]
PromptsFile = Annotated[str | None, typer.Option("--prompts-file", help="YAML of your own `name: template` "
                                                                        "prompts.")]

# Self-correction at inference time (eval).
Method = Annotated[str | None, typer.Option("--method", help="eval: intrinsic (default), cac or self-refine-style; "
                                                             "stasc: stasc (default) or an equal-budget control, "
                                                             "star or gold.")]
Rounds = Annotated[int | None, typer.Option("--rounds", help="Review rounds (or check/answer rounds) after the "
                                                             "first answer.")]
Stop = Annotated[str | None, typer.Option("--stop", help="Stop rule: fixed, converged or oracle (an upper bound).")]
NliModel = Annotated[str | None, typer.Option("--nli-model", help="Group free-text samples by meaning with this NLI "
                                                                  "model (folder or hub id) for answer entropy.")]
CriticNoise = Annotated[float | None, typer.Option("--critic-noise", help="cac control: inject verdicts, inverted "
                                                                          "with this probability, instead of "
                                                                          "self-checks.")]
HiddenLayer = Annotated[int | None, typer.Option("--hidden-layer", help="Store this layer's hidden states (hf "
                                                                        "backend; -1 = last) for `selfcorrect "
                                                                        "probe`.")]
HiddenSpan = Annotated[int | None, typer.Option("--hidden-span", help="Average the stored hidden states over the "
                                                                      "last K prompt tokens (default 1: the last "
                                                                      "token).")]

# Training methods (stasc, insec).
Iterations = Annotated[int | None, typer.Option("--iterations", help="Training iterations: sample, build the "
                                                                     "training set, fine-tune.")]
Variant = Annotated[str | None, typer.Option("--variant", help="EIE (default), EIF, ENE, ENF, FIE, FIF, FNE, FNF.")]
Variants = Annotated[str | None, typer.Option("--variants", help="Comma-separated variants, or `all` (the "
                                                                 "default).")]
Controls = Annotated[str | None, typer.Option("--controls", help="Comma-separated equal-budget controls (star, gold) "
                                                                 "or none (default star,gold).")]
BudgetFrom = Annotated[str | None, typer.Option("--budget-from", help="STaSC run whose budget a control matches.")]
NInit = Annotated[int | None, typer.Option("--n-init", help="Initial answers per question.")]
NCorr = Annotated[int | None, typer.Option("--n-corr", help="Corrections per initial answer.")]
ReportTo = Annotated[str | None, typer.Option("--report-to", help="wandb, mlflow or tensorboard.")]
Negatives = Annotated[str | None, typer.Option("--negatives", help="on_policy, synthetic, or none (plain SFT).")]
Granularity = Annotated[str | None, typer.Option("--granularity", help="step (chain answers) or answer.")]
MistakeLoss = Annotated[str | None, typer.Option("--mistake-loss", help="none (default), unlikelihood or full.")]
Arms = Annotated[str | None, typer.Option("--arms", help="Comma-separated arms: insec-on-policy, insec-synthetic, "
                                                         "sft (default all three).")]

# Data selection (select).
Corpus = Annotated[str | None, typer.Option("--corpus", help="JSONL corpus to rank.")]
Measure = Annotated[str | None, typer.Option("--measure", help="answer_entropy or mean_nll.")]
Keep = Annotated[float | None, typer.Option("--keep", help="Fraction (<= 1) or number of records to keep.")]
Which = Annotated[str | None, typer.Option("--which", help="most or least uncertain.")]

# Reading finished runs (probe, report, stasc table).
RunDir = Annotated[Path, typer.Argument(help="A finished run folder (what --out named).")]
RunDirs = Annotated[list[Path], typer.Argument(help="Finished run folders (e.g. runs/sweep/*).")]
TrainRun = Annotated[Path | None, typer.Option("--train-run", help="Train the probe on this run's rounds instead "
                                                                   "of a seeded half of RUN_DIR's examples.")]
L2Penalty = Annotated[float | None, typer.Option("--l2", help="L2 penalty of the logistic-regression probe "
                                                              "(default 0.01).")]
Concept = Annotated[str | None, typer.Option("--concept", help="What the probe reads in the answer in context: "
                                                          "answer-in-context-is-wrong (default) or, on BBQ, "
                                                          "answer-in-context-is-stereotyped.")]

# Serving (serve).
Host = Annotated[str, typer.Option("--host", help="Address to bind (loopback by default: there is no "
                                                  "authentication).")]
Port = Annotated[int, typer.Option("--port", help="Port to listen on.")]
ServedModelName = Annotated[str | None, typer.Option("--served-model-name", help="Name clients pass as `model` "
                                                                                 "(default: --model as given).")]
Device = Annotated[str, typer.Option("--device", help="cpu or cuda.")]
Dtype = Annotated[str, typer.Option("--dtype", help="float32, bfloat16, float16 or auto.")]
MaxBatch = Annotated[int, typer.Option("--max-batch", help="Most requests decoded together in one backend call.")]

# The in-context alignment lab (icalign).
Preset = Annotated[str | None, typer.Option("--preset", help="Named preset: 'cpu' (fits a 2-core CPU, the "
                                                             "default) or 'paper'; it must agree with a saved run's.")]

CONFIG_KEYS = {"base_url": "backend_options.base_url"}
"""Options that set a config key other than their own name (the dotted key they set)."""
