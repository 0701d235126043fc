"""Every subcommand against every kind of bad input it can meet: exit code 2, one line on stderr that names the
file, the line and the field where there is one, no traceback, and nothing left behind (no run folder, no partial
file; an output folder that was already there is left exactly as it was).

The CLI runs in-process through `selfcorrect.cli.main`. Commands that reach a model get a tiny random Llama whose
context is cut to 256 positions, so "a prompt longer than the model's context" is a few hundred words.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from selfcorrect.cli import main

GOOD = {"question": "What is 2 + 3?", "answer": "#### 5"}
LONG = {"question": "word " * 400, "answer": "#### 5"}
SPLITS = "task_options.splits={train: 1, validation: 1, test: 1}"


def _jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


DATA_FILES = {
    "empty.jsonl": "",
    "blank.jsonl": "\n   \n\n",
    "broken.jsonl": _jsonl(GOOD) + '{"question": "What is 1 + 1?", \n',
    "number.jsonl": _jsonl(GOOD, {"question": 7, "answer": "#### 5"}),
    "list.jsonl": _jsonl(GOOD, {"question": ["a", "b"], "answer": "#### 5"}),
    "null.jsonl": _jsonl(GOOD, {"question": None, "answer": "#### 5"}),
    "long.jsonl": _jsonl(LONG, LONG, LONG),
    "good.jsonl": _jsonl(GOOD, GOOD, GOOD),
    "broken.yaml": "task: jsonl\nrounds: [1,\n",
    "unknown.yaml": "seed: 1\nnot_a_key: 3\n",
    "empty.json": "",
    "broken.json": '{"metrics": \n',
}


@dataclass
class Workspace:
    root: Path
    model: Path

    def file(self, name: str) -> str:
        return str(self.root / "files" / name)


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Workspace:
    from selfcorrect.testing.tiny_hf import tiny_model_dir

    root = tmp_path_factory.mktemp("bad-input")
    short = root / "short-llama"
    shutil.copytree(tiny_model_dir("llama", root / "models"), short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 256}))
    (root / "files").mkdir()
    for name, text in DATA_FILES.items():
        (root / "files" / name).write_text(text)
    for name in ("empty", "broken"):  # finished-run lookalikes whose result file is bad
        (root / f"run-{name}").mkdir()
        (root / f"run-{name}" / "summary.json").write_text(DATA_FILES[f"{name}.json"])
        (root / f"run-{name}" / "results.json").write_text(DATA_FILES[f"{name}.json"])
    return Workspace(root, short)


# Each command's argv, given the workspace, the output path and the data file (None: the command's usual input).
def _eval(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["eval", "--out", out, "--task", "jsonl", "--backend", "hf", "--model", str(s.model), "--quiet",
            "--set", f"task_options.path={data or s.file('good.jsonl')}", "--set", "max_new_tokens=2"]


def _select(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["select", "--corpus", data or s.file("good.jsonl"), "--out", out, "--backend", "hf", "--model",
            str(s.model), "--samples", "1", "--keep", "1", "--quiet"]


def _stasc(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["stasc", "--out", out, "--task", "jsonl", "--model", str(s.model), "--iterations", "1", "--quiet",
            "--set", f"task_options.path={data or s.file('good.jsonl')}", "--set", SPLITS,
            "--set", "max_new_tokens=2", "--set", "eval_splits=[validation]", "--set", "eval_temperatures=[0]"]


def _insec(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["insec", "--out", out, "--task", "jsonl", "--model", str(s.model), "--iterations", "1", "--quiet",
            "--set", f"task_options.path={data or s.file('good.jsonl')}", "--set", SPLITS,
            "--set", "max_new_tokens=2"]


def _stasc_sweep(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["stasc", "sweep", "--out", out, "--variants", "EIE", "--seeds", "0", "--controls", "none", "--quiet",
            "--set", "task=jsonl", "--set", f"task_options.path={data or s.file('good.jsonl')}", "--set", SPLITS,
            "--set", f"model={s.model}"]


def _insec_compare(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["insec", "compare", "--out", out, "--arms", "sft", "--seeds", "0", "--quiet", "--set", "task=jsonl",
            "--set", f"task_options.path={data or s.file('good.jsonl')}", "--set", SPLITS,
            "--set", f"model={s.model}"]


def _pretrain(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["sandbox", "pretrain", "--out", out, "--quiet", *(["--config", data] if data else [])]


def _icalign_train(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["icalign", "train", "--out", out, "--quiet", "--set", "train.steps=1"]


def _icalign_sweep(s: Workspace, out: str, data: str | None) -> list[str]:
    return ["icalign", "sweep", "--out", out, "--quiet", "--seeds", "0", "--set", "train.steps=1"]


@dataclass
class Case:
    """One bad input: the argv, what the one error line must name, and the folder or file that must not appear."""

    name: str
    argv: list[str]
    names: tuple[str, ...]
    out: str | None = None
    existing: bool = False  # the output exists beforehand and must be left exactly as it was
    extra: list[str] = field(default_factory=list)


DATA_COMMANDS = {"eval": _eval, "select": _select, "stasc": _stasc, "insec": _insec}
CONFIG_COMMANDS = {"eval": _eval, "stasc": _stasc, "insec": _insec, "stasc sweep": _stasc_sweep,
                   "insec compare": _insec_compare, "sandbox pretrain": _pretrain}
BROKEN_FILE = {  # per kind of data file: the file and what the error line names
    "missing file": ("absent.jsonl", ("absent.jsonl", "no such file")),
    "empty file": ("empty.jsonl", ("empty.jsonl", "no records")),
    "blank lines": ("blank.jsonl", ("blank.jsonl", "no records")),
    "broken line": ("broken.jsonl", ("broken.jsonl", "line 2", "broken JSON")),
    "number for text": ("number.jsonl", ("number.jsonl", "line 2", "'question'", "expected text, got int")),
    "list for text": ("list.jsonl", ("list.jsonl", "line 2", "'question'", "expected text, got list")),
    "null for text": ("null.jsonl", ("null.jsonl", "line 2", "'question'", "expected text, got NoneType")),
}


def cases() -> list[tuple[str, callable]]:
    """(id, builder(space, out) -> Case) for the whole table."""
    table = []
    for command, argv in DATA_COMMANDS.items():
        for kind, (name, names) in BROKEN_FILE.items():
            table.append((f"{command}: {kind}", lambda s, out, argv=argv, name=name, names=names:
                          Case(name, argv(s, out, s.file(name)), names, out)))
        table.append((f"{command}: prompt longer than the context", lambda s, out, argv=argv: Case(
            "long", argv(s, out, s.file("long.jsonl")),
            ("long.jsonl, line", "field 'question'", "the prompt has", "context is 256"), out)))
        table.append((f"{command}: output exists", lambda s, out, argv=argv: Case(
            "exists", argv(s, out, None), ("already exists",), out, existing=True)))
    for command, argv in CONFIG_COMMANDS.items():
        table.append((f"{command}: unknown config key", lambda s, out, argv=argv: Case(
            "unknown key", [*argv(s, out, None), "--set", "not_a_key=3"], ("unknown config key 'not_a_key'",), out)))
        table.append((f"{command}: unknown key in a config file", lambda s, out, argv=argv: Case(
            "unknown key", [*argv(s, out, None), "--config", s.file("unknown.yaml")],
            ("unknown.yaml", "unknown config key 'not_a_key'"), out)))
        table.append((f"{command}: broken config file", lambda s, out, argv=argv: Case(
            "broken yaml", [*argv(s, out, None), "--config", s.file("broken.yaml")],
            ("broken.yaml", "line 3", "invalid YAML"), out)))
        table.append((f"{command}: missing config file", lambda s, out, argv=argv: Case(
            "missing yaml", [*argv(s, out, None), "--config", s.file("absent.yaml")], ("absent.yaml", "not found"),
            out)))
        key = "n_digits" if command == "sandbox pretrain" else "task"  # the sandbox's config holds no text
        table.append((f"{command}: list for a scalar in config", lambda s, out, argv=argv, key=key: Case(
            "wrong type", [*argv(s, out, None), "--set", f"{key}=[1, 2]"], (f"config key '{key}'", "valid"), out)))
    for command, argv in {"stasc sweep": _stasc_sweep, "insec compare": _insec_compare,
                          "icalign sweep": _icalign_sweep}.items():
        table.append((f"{command}: non-numeric list option", lambda s, out, argv=argv: Case(
            "seeds", [*argv(s, out, None), "--seeds", "a,b"], ("--seeds", "'a,b'"), out)))
    table.append(("stasc: non-numeric list in config", lambda s, out: Case(
        "temperatures", [*_stasc(s, out, None), "--set", "eval_temperatures=[a, b]"],
        ("config key 'eval_temperatures.0'", "valid number"), out)))
    for command, argv in {"stasc sweep": _stasc_sweep, "insec compare": _insec_compare,
                          "sandbox pretrain": _pretrain, "icalign train": _icalign_train,
                          "icalign sweep": _icalign_sweep}.items():
        table.append((f"{command}: output exists", lambda s, out, argv=argv: Case(
            "exists", argv(s, out, None), ("already exists",), out, existing=True)))
    for command, argv in {"icalign train": _icalign_train, "icalign sweep": _icalign_sweep}.items():
        table.append((f"{command}: unknown config key", lambda s, out, argv=argv: Case(
            "unknown key", [*argv(s, out, None), "--set", "model.not_a_key=3"],
            ("unknown config key 'model.not_a_key'",), out)))
        table.append((f"{command}: list for a number", lambda s, out, argv=argv: Case(
            "wrong type", [*argv(s, out, None), "--set", "model.n_layer=[1]"], ("config key 'model.n_layer'",), out)))
    # Commands that read a finished run's results.
    for command, argv in {"report": lambda s, run: ["report", run],
                          "stasc table": lambda s, run: ["stasc", "table", run],
                          "icalign plot": lambda s, run: ["icalign", "plot", "--out", run],
                          "probe": lambda s, run: ["probe", run],
                          "icalign eval": lambda s, run: ["icalign", "eval", "--out", run]}.items():
        table.append((f"{command}: missing run folder", lambda s, out, argv=argv: Case(
            "missing run", argv(s, str(s.root / "no-such-run")), ("no-such-run",))))
        if command in ("report", "stasc table", "icalign plot"):
            for kind in ("empty", "broken"):
                file = "results.json" if command == "icalign plot" else "summary.json"
                names = (f"run-{kind}", file, "empty file") if kind == "empty" else (
                    f"run-{kind}", file, "line 2", "broken JSON")
                table.append((f"{command}: {kind} result file", lambda s, out, argv=argv, kind=kind, names=names:
                              Case(kind, argv(s, str(s.root / f"run-{kind}")), names)))
    table.append(("icalign eval: unknown config key", lambda s, out: Case(
        "unknown key", ["icalign", "eval", "--out", str(s.root / "no-such-run"), "--set", "train.steps=3"],
        ("eval takes only eval.* overrides",))))
    return table


TABLE = cases()


@pytest.mark.parametrize("build", [b for _, b in TABLE], ids=[name for name, _ in TABLE])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(build, space, tmp_path, capsys):
    out = tmp_path / "out" / "run"
    case = build(space, str(out))
    if case.existing:
        out.mkdir(parents=True)
        (out / "keep.txt").write_text("mine")
    capsys.readouterr()
    code = main(case.argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for name in case.names:
        assert name in lines[0], (name, lines[0])
    if case.existing:
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    else:
        assert not (tmp_path / "out").exists(), sorted(str(p) for p in (tmp_path / "out").rglob("*"))
