"""Run folders (resume, cut-off lines, refusing to overwrite) and strict configs."""

import json

import pytest
import yaml

from selfcorrect.config import StrictModel, load_config, parse_overrides
from selfcorrect.errors import SelfCorrectError
from selfcorrect.runs import RunFolder, atomic_write_text
from selfcorrect.summary import SUMMARY_SCHEMA_VERSION
from selfcorrect.trajectory import Example, LogprobSummary, Trajectory, Turn, Verdict


def _traj(i: int) -> Trajectory:
    traj = Trajectory(id=f"q{i}", example=Example(id=f"q{i}", fields={"question": "12"}, gold="1133"))
    traj.add(Turn(role="user", kind="prompt", round=1, text="12", template="question"))
    traj.add(Turn(role="assistant", kind="answer", round=1, text="1133", verdict=Verdict(1.0, "1133", "exact trace"),
                  logprobs=LogprobSummary(4, -0.5, 0.1), finish_reason="stop"))
    return traj


def test_trajectory_json_round_trip_keeps_everything():
    traj = _traj(3)
    back = Trajectory.from_json(traj.to_json())
    assert back == traj
    assert back.last_answer.verdict.correct and back.last_answer.logprobs.mean_nll == pytest.approx(0.125)


def test_unknown_schema_version_is_refused():
    data = _traj(0).to_dict()
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version"):
        Trajectory.from_dict(data)


def test_a_summary_reads_back_as_written_with_its_version_and_environment(tmp_path):
    run = RunFolder.open(tmp_path / "r", {"seed": 1})
    assert not run.finished
    with pytest.raises(SelfCorrectError, match=r"has no summary\.json"):
        run.read_summary()
    run.write_summary({"command": "eval", "metrics": {"n_examples": 3}})
    back = RunFolder(tmp_path / "r").read_summary()
    assert run.finished and back["metrics"] == {"n_examples": 3}
    assert back["schema_version"] == SUMMARY_SCHEMA_VERSION and "python" in back["environment"]["versions"]


def test_a_version_1_insec_summary_reads_in_the_current_vocabulary(tmp_path):
    """Before schema_version existed, InSeC wrote `rounds` and `wrong_to_right`; the reader renames them."""
    metrics = {"accuracy": {"value": 0.5}, "wrong_to_right": {"value": 0.25}, "right_to_wrong": {"value": 0.0},
               "counts": {"markers": 2, "wrong_to_right": 1, "right_to_wrong": 0}}
    old = {"command": "insec", "final": metrics, "rounds": [{"round": 0, "eval": metrics},
                                                            {"round": 1, "eval": metrics, "data": {"sequences": 4}}]}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    back = RunFolder(tmp_path).read_summary()
    assert "rounds" not in back and [row["iteration"] for row in back["iterations"]] == [0, 1]
    assert back["iterations"][1]["data"] == {"sequences": 4}
    for block in (back["final"], back["iterations"][1]["eval"]):
        assert block["i_to_c"] == {"value": 0.25} and block["c_to_i"] == {"value": 0.0}
        assert block["counts"] == {"markers": 2, "i_to_c": 1, "c_to_i": 0} and "wrong_to_right" not in block


def test_a_summary_from_a_newer_selfcorrect_is_one_clear_line(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": SUMMARY_SCHEMA_VERSION + 1}))
    with pytest.raises(SelfCorrectError, match=r"summary\.json: unsupported summary schema_version"):
        RunFolder(tmp_path).read_summary()


def test_run_folder_refuses_existing_output_without_resume(tmp_path):
    run = RunFolder.open(tmp_path / "r", {"seed": 1})
    run.append([_traj(0)])
    with pytest.raises(SelfCorrectError, match="already exists; pass --resume"):
        RunFolder.open(tmp_path / "r", {"seed": 1})
    assert RunFolder.open(tmp_path / "r", {"seed": 1, "quiet": True}, resume=True).done_ids() == {"q0"}


def test_resume_with_a_different_config_names_the_key(tmp_path):
    RunFolder.open(tmp_path / "r", {"seed": 1, "rounds": 2})
    with pytest.raises(SelfCorrectError, match="config key 'rounds' differs"):
        RunFolder.open(tmp_path / "r", {"seed": 1, "rounds": 3}, resume=True)
    with pytest.raises(SelfCorrectError, match="cannot resume"):
        RunFolder.open(tmp_path / "missing", {"seed": 1}, resume=True)


def test_a_line_cut_off_by_a_kill_is_dropped_on_resume(tmp_path):
    run = RunFolder.open(tmp_path / "r", {})
    run.append([_traj(0), _traj(1)])
    with run.samples_path.open("a") as handle:
        handle.write(_traj(2).to_json()[:40])  # a kill mid-write
    resumed = RunFolder.open(tmp_path / "r", {}, resume=True)
    assert resumed.done_ids() == {"q0", "q1"}
    resumed.append([_traj(2)])
    assert [t.id for t in resumed.read_samples()] == ["q0", "q1", "q2"]


def test_a_corrupt_complete_line_is_reported_with_its_number(tmp_path):
    run = RunFolder.open(tmp_path / "r", {})
    run.samples_path.write_text(_traj(0).to_json() + "\n{not json}\n")
    with pytest.raises(SelfCorrectError, match=r"samples\.jsonl line 2"):
        run.read_samples()


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_text(tmp_path / "a.txt", "y")
    assert (tmp_path / "a.txt").read_text() == "y" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


class _Cfg(StrictModel):
    rounds: int = 1
    temperature: float = 0.0
    options: dict = {}


def test_config_rejects_unknown_keys_naming_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"rounds": 2, "temprature": 1.0}))
    with pytest.raises(SelfCorrectError, match=r"c\.yaml: unknown config key 'temprature'"):
        load_config(_Cfg, path)
    path.write_text("rounds: many\n")
    with pytest.raises(SelfCorrectError, match="config key 'rounds'"):
        load_config(_Cfg, path)
    path.write_text("rounds: [1\n")
    with pytest.raises(SelfCorrectError, match="invalid YAML"):
        load_config(_Cfg, path)


def test_overrides_beat_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rounds: 2\ntemperature: 0.5\n")
    cfg = load_config(_Cfg, path, parse_overrides(["rounds=4", "options.k=v"]))
    assert (cfg.rounds, cfg.temperature, cfg.options) == (4, 0.5, {"k": "v"})
    with pytest.raises(SelfCorrectError, match="key=value"):
        parse_overrides(["rounds"])


def test_tracker_flattens_metrics_and_is_inert_without_a_tracker(tmp_path):
    from selfcorrect.tracking import Tracker, flatten

    metrics = {"test@T1": {"delta": {"value": 0.25, "ci": [0.1, 0.4]}, "n_examples": 500, "name": "x"}}
    assert flatten(metrics) == {"test@T1/delta": 0.25, "test@T1/n_examples": 500.0}
    tracker = Tracker(None, tmp_path, {})
    tracker.log(metrics, step=1)  # no tracker: nothing imported, nothing written
    tracker.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SelfCorrectError, match="unknown tracker"):
        Tracker("neptune", tmp_path, {})


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(("folder", "config_class"), [
    ("stasc", "selfcorrect.methods.stasc:STaSCConfig"),
    ("insec", "selfcorrect.methods.insec:InSeCConfig"),
    ("sandbox", "selfcorrect.sandbox.pretrain:PretrainConfig"),
])
def test_every_shipped_method_config_loads(folder, config_class):
    """The YAML files in configs/ are documented commands: a renamed or removed key must fail here, not for a user."""
    import importlib
    from pathlib import Path

    module, name = config_class.split(":")
    cls = getattr(importlib.import_module(module), name)
    files = [p for p in sorted((Path(__file__).parents[1] / "configs" / folder).glob("*.yaml"))
             if not p.name.startswith("prompts")]
    assert files
    for path in files:
        assert isinstance(load_config(cls, path), cls), path
