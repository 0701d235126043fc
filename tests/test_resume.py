"""`--out DIR --resume` alone continues any run from its saved config.yaml; a flag that contradicts it is one error.

The end-to-end case interrupts a real eval (tiny Llama) and resumes it with nothing but --out; the table checks, for
every command that runs into a folder, that the config the run continues with is exactly the saved one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from selfcorrect.cli import main
from selfcorrect.errors import SelfCorrectError
from selfcorrect.runs import write_yaml


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    return tiny_model_dir("llama", tmp_path_factory.mktemp("models"))


@pytest.mark.slow
def test_an_interrupted_eval_resumes_from_its_folder_alone(tiny_llama, tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n"
                            for i in range(4)))
    out = tmp_path / "run"
    argv = ["eval", "--out", str(out), "--task", "jsonl", "--backend", "hf", "--model", str(tiny_llama), "--limit",
            "3", "--rounds", "2", "--temperature", "1", "--seed", "7", "--quiet", "--no-cache",
            "--set", f"task_options.path={data}", "--set", "max_new_tokens=4", "--set", "chunk_size=1"]
    assert main(argv) == 0, capsys.readouterr().err
    complete = (out / "samples.jsonl").read_bytes()
    # An interruption after the first chunk: one trajectory written, no summary yet.
    (out / "samples.jsonl").write_bytes(complete.split(b"\n", 1)[0] + b"\n")
    (out / "summary.json").unlink()

    assert main(["eval", "--out", str(out), "--resume", "--quiet"]) == 0, capsys.readouterr().err
    assert (out / "samples.jsonl").read_bytes() == complete
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["n_examples"] == 3
    assert "cache" not in summary  # continued as it began, without the generation cache (it would report its hits)

    assert main(["eval", "--out", str(out), "--resume", "--set", "cache=true", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cache = True contradicts its saved value False" in err

    capsys.readouterr()
    assert main(["eval", "--out", str(out), "--resume", "--limit", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume" in err and "limit = 4 contradicts its saved value 3" in err
    assert main(["eval", "--out", str(out), "--resume", "--limit", "3", "--seed", "7", "--quiet"]) == 0  # agreeing


def _configs() -> dict[str, tuple[str, Callable[[], dict[str, Any]]]]:
    """command -> (function the command runs, the config.yaml such a run saves), with non-default values."""
    from selfcorrect.icalign.presets import run_config, sweep_config
    from selfcorrect.methods.insec import InSeCConfig
    from selfcorrect.methods.session import EvalConfig
    from selfcorrect.methods.stasc import STaSCConfig

    stasc = STaSCConfig(variant="FNF", iterations=2, n_init=3, task_options={"path": "x.jsonl"}, seed=5)
    insec = InSeCConfig(negatives="synthetic", iterations=2, seed=4)
    return {
        "eval": ("selfcorrect.methods.evaluate.run_eval",
                 lambda: EvalConfig(task="gsm8k", limit=2000, rounds=3, temperature=0.7, seed=9).model_dump()),
        "stasc": ("selfcorrect.methods.stasc.run_stasc", stasc.model_dump),
        "insec": ("selfcorrect.methods.insec.run_insec", insec.model_dump),
        "stasc sweep": ("selfcorrect.methods.stasc_sweep.run_sweep", lambda: {
            "base": stasc.model_dump(), "variants": ["EIE", "FNF"], "seeds": [3, 4], "controls": ["star"],
            "budget_variant": "EIE"}),
        "insec compare": ("selfcorrect.methods.insec_compare.run_compare", lambda: {
            "base": insec.model_dump(), "arms": ["sft"], "seeds": [6]}),
        "icalign train": ("selfcorrect.icalign.train.train",
                          lambda: run_config("paper", 3, {"train": {"steps": 7}}).model_dump()),
        "icalign sweep": ("selfcorrect.icalign.sweep.run_sweep",
                          lambda: sweep_config("paper", [1, 2], {"train": {"steps": 7}}).model_dump()),
    }


CONTRADICTIONS = {  # a flag beside --resume that disagrees with the saved config, and the key the error names
    "eval": (["--rounds", "1"], "rounds = 1 contradicts its saved value 3"),
    "stasc": (["--variant", "EIE"], "variant = 'EIE' contradicts its saved value 'FNF'"),
    "insec": (["--set", "iterations=3"], "iterations = 3 contradicts its saved value 2"),
    "stasc sweep": (["--seeds", "0,1,2"], "--seeds 0,1,2 contradicts its saved seeds [3, 4]"),
    "insec compare": (["--set", "seed=1"], "seed = 1 contradicts its saved value 4"),
    "icalign train": (["--preset", "cpu"], "preset = 'cpu' contradicts its saved value 'paper'"),
    "icalign sweep": (["--set", "train.steps=8"], "train.steps = 8 contradicts its saved value 7"),
}


@pytest.mark.parametrize("command", list(CONTRADICTIONS))
def test_every_command_resumes_with_its_saved_config_and_refuses_a_contradiction(command, tmp_path, monkeypatch,
                                                                                 capsys):
    target, saved = _configs()[command]
    out = tmp_path / "run"
    out.mkdir()
    write_yaml(out / "config.yaml", saved())
    seen: list[tuple[Any, ...]] = []

    def stand_in(*args: Any, **kwargs: Any) -> None:
        seen.append(args)
        raise SelfCorrectError("stand-in reached")

    monkeypatch.setattr(target, stand_in)
    argv = [*command.split(), "--out", str(out), "--resume", "--quiet"]
    assert main(argv) == 2
    assert "stand-in reached" in capsys.readouterr().err
    [args] = seen
    if command in ("stasc sweep", "insec compare"):  # (base, ... lists ..., out): rebuilt from the saved sections
        lists = dict(zip(("variants", "seeds", "controls") if command == "stasc sweep" else ("seeds", "out", "arms"),
                         args[1:4], strict=True))
        assert args[0].model_dump() == saved()["base"]
        assert all(lists[key] == saved()[key] for key in lists if key != "out")
    else:
        assert args[0].model_dump() == saved()

    flag, message = CONTRADICTIONS[command]
    assert main([*argv, *flag]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume" in err and message in err
    assert len(seen) == 1  # refused before running


def test_no_cache_beside_resume_contradicts_a_run_made_with_the_cache(tmp_path, capsys):
    from selfcorrect.methods.session import EvalConfig

    out = tmp_path / "run"
    out.mkdir()
    write_yaml(out / "config.yaml", EvalConfig(task="gsm8k", limit=3).model_dump())
    assert main(["eval", "--out", str(out), "--resume", "--no-cache", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cache = False contradicts its saved value True" in err
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_resume_without_a_saved_config_is_one_error(tmp_path, capsys):
    assert main(["eval", "--out", str(tmp_path / "never-ran"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never-ran/config.yaml does not exist" in err
    assert not (tmp_path / "never-ran").exists()
