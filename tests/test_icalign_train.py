"""In-context alignment lab: presets and configs, training, resume, evaluation, the CLI and the sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
typer_testing = pytest.importorskip("typer.testing")

import torch.nn.functional as F  # noqa: E402

import selfcorrect.icalign.train as train_module  # noqa: E402
from selfcorrect.errors import SelfCorrectError  # noqa: E402
from selfcorrect.icalign.cli import app  # noqa: E402
from selfcorrect.icalign.data import sample_batch  # noqa: E402
from selfcorrect.icalign.losses import alignment_loss, training_loss  # noqa: E402
from selfcorrect.icalign.plot import figure, load_results  # noqa: E402
from selfcorrect.icalign.presets import run_config, sweep_config  # noqa: E402
from selfcorrect.icalign.sweep import panels, run_name  # noqa: E402

TINY = {"model": {"n_layer": 1, "n_head": 2, "n_embd": 16}, "task": {"n_points": 6},
        "train": {"steps": 6, "batch_size": 8, "checkpoint_every": 3},
        "eval": {"batch_size": 16, "noise": [0.0, 1.0], "gd_steps": 3}}



# --- presets and configs ----------------------------------------------------------------------------------------

def test_paper_preset_is_the_reference_recipe() -> None:
    cfg = run_config("paper")
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (20, 3, 96)
    assert (cfg.task.dim, cfg.task.n_points, cfg.task.loss, cfg.task.reward) == (5, 20, "pl", "cosine")
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.lr) == (3000, 256, 1e-4)
    assert cfg.eval.noise == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_sweep_variants_share_runs_and_follow_the_head_width_rule() -> None:
    paper = sweep_config("paper")
    layout = panels(paper)
    assert [m.n_layer for _, m in layout["depth"]] == [5, 10, 15, 20]  # the reference's "5" config had 10
    assert [(m.n_head, m.n_embd) for _, m in layout["heads"]] == [(1, 32), (3, 96), (4, 128), (6, 192)]
    names = {run_name(m) for entries in layout.values() for _, m in entries}
    assert len(names) == 9 and run_name(paper.model) in names  # 20 layers, 3 heads is one run, not three
    cpu = sweep_config("cpu")
    assert {m.n_embd for _, m in panels(cpu)["heads"]} == {cpu.model.n_embd}  # heads at a fixed width
    assert not panels(cpu)["attention"][1][1].softmax and not panels(cpu)["mlp"][1][1].mlp


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model": {"n_layers": 2}}, "unknown config key 'model.n_layers'"),
    ({"model": {"n_head": 3}}, "not a multiple of n_head"),
    ({"task": {"loss": "dpo"}}, "task.loss"),
])
def test_bad_configs_are_one_line_errors(overrides: dict, message: str) -> None:
    with pytest.raises(SelfCorrectError, match=message):
        run_config("cpu", overrides=overrides)


def test_unknown_preset_suggests_the_nearest() -> None:
    with pytest.raises(SelfCorrectError, match="did you mean 'paper'"):
        run_config("papr")


# --- training ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_short_training_run_lowers_the_loss(tmp_path: Path) -> None:
    # The cosine reward has a long loss plateau (docs/icalign.md); the negative-MSE reward shows learning in 200 steps.
    cfg = run_config("cpu", 0, {"model": {"n_layer": 1, "n_embd": 16}, "task": {"n_points": 8, "reward": "neg_mse"},
                                "train": {"steps": 200, "lr": 3e-3}})
    held_out = sample_batch(512, 8, 5, torch.Generator().manual_seed(99))

    def measure(model: torch.nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            pred = model(held_out.tokens())
        loss = training_loss(alignment_loss(pred, held_out.responses, held_out.shown, reward="neg_mse")).item()
        return loss, (1 - F.cosine_similarity(pred, held_out.target.unsqueeze(1), dim=-1))[:, 2:].mean().item()

    torch.manual_seed(0)
    loss_before, err_before = measure(train_module.build_model(cfg).eval())
    train_module.train(cfg, tmp_path / "run", quiet=True)
    loss_after, err_after = measure(train_module.load_final(tmp_path / "run", cfg))
    assert loss_after < loss_before - 0.1
    assert err_after < err_before - 0.15


@pytest.mark.slow
def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = run_config("cpu", 3, TINY)
    train_module.train(cfg, tmp_path / "straight", quiet=True)

    real_sample = train_module.sample_batch
    calls = {"n": 0}

    def killed_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(train_module, "sample_batch", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(cfg, tmp_path / "killed", quiet=True)
    assert not (tmp_path / "killed" / train_module.FINAL).exists()
    monkeypatch.setattr(train_module, "sample_batch", real_sample)
    resumed = train_module.train(cfg, tmp_path / "killed", resume=True, quiet=True)

    straight = json.loads((tmp_path / "straight" / train_module.TRAIN_SUMMARY).read_text())
    assert resumed["losses"] == straight["losses"]
    a = torch.load(tmp_path / "straight" / train_module.FINAL, weights_only=True)
    b = torch.load(tmp_path / "killed" / train_module.FINAL, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_new_run_refuses_an_existing_folder_and_resume_refuses_another_config(tmp_path: Path) -> None:
    cfg = run_config("cpu", 0, {**TINY, "train": {**TINY["train"], "steps": 1}})
    train_module.train(cfg, tmp_path, quiet=True)
    with pytest.raises(SelfCorrectError, match="already exists"):
        train_module.train(cfg, tmp_path, quiet=True)
    with pytest.raises(SelfCorrectError, match="'train' differs"):
        train_module.train(run_config("cpu", 1, {**TINY, "train": {**TINY["train"], "steps": 1}}), tmp_path,
                           resume=True, quiet=True)


# --- CLI and sweep ----------------------------------------------------------------------------------------------

def _sets(config: dict, prefix: str = "") -> list[str]:
    args = []
    for key, value in config.items():
        if isinstance(value, dict):
            args += _sets(value, f"{prefix}{key}.")
        else:
            args += ["--set", f"{prefix}{key}={json.dumps(value)}"]
    return args


@pytest.mark.slow
def test_cli_train_then_eval_the_final_model(tmp_path: Path) -> None:
    runner = typer_testing.CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--preset", "cpu", "--seed", "1", "--out", str(out), "--quiet",
                                 *_sets(TINY)])
    assert result.exit_code == 0, result.output
    saved = (out / "config.yaml").read_text()
    assert "seed: 1" in saved and "n_points: 6" in saved
    result = runner.invoke(app, ["eval", "--out", str(out), "--set", "eval.noise=[0.5]"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text())
    assert list(report["curves"]) == ["0.5"] and len(report["curves"]["0.5"]["tf"]["mean"]) == 6
    assert isinstance(runner.invoke(app, ["eval", "--out", str(out), "--set", "train.steps=2"]).exception,
                      SelfCorrectError)
    assert isinstance(runner.invoke(app, ["eval", "--out", str(out), "--preset", "paper"]).exception,
                      SelfCorrectError)
    assert isinstance(runner.invoke(app, ["eval", "--out", str(out), "--seed", "2"]).exception, SelfCorrectError)


def test_cli_eval_refuses_an_unfinished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = run_config("cpu", 0, TINY)
    monkeypatch.setattr(train_module, "sample_batch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_module.train(cfg, tmp_path, quiet=True)
    result = typer_testing.CliRunner().invoke(app, ["eval", "--out", str(tmp_path)])
    assert isinstance(result.exception, SelfCorrectError) and "did not finish" in str(result.exception)


@pytest.mark.slow
def test_sweep_trains_every_variant_once_resumes_and_plots(tmp_path: Path) -> None:
    runner = typer_testing.CliRunner()
    out = tmp_path / "sweep"
    args = ["sweep", "--preset", "cpu", "--seeds", "0,1", "--out", str(out), "--quiet",
            *_sets({**TINY, "model": {}, "train": {**TINY["train"], "steps": 2}})]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 8 and len(list((out / "runs").iterdir())) == 16
    assert set(results["panels"]) == {"depth", "attention", "heads", "mlp"}
    curve = results["runs"][results["base"]]["curves"]["0"]["tf"]
    assert curve["interval"] == "seeds" and len(curve["per_seed"]) == 2
    assert all(lo <= m <= hi for lo, m, hi in zip(curve["lo"], curve["mean"], curve["hi"], strict=True))
    png = out / "icalign.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = figure(load_results(out))  # from the saved file, whose keys json sorted alphabetically
    assert [ax.get_title()[:3] for ax in fig.axes] == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"]
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == [f"{n} layer{'s' * (n > 1)}"
                                                                           for n in (1, 2, 3, 4)]

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/model.pt")}
    png.unlink()
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/model.pt")}  # nothing retrained
    assert runner.invoke(app, ["plot", "--out", str(out)]).exit_code == 0 and png.is_file()
    assert isinstance(runner.invoke(app, args).exception, SelfCorrectError)  # without --resume: folder exists
