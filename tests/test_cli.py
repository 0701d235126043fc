"""The CLI starts without heavy imports (so `--help` is instant) and answers --help for every command."""

import subprocess
import sys

import pytest

from selfcorrect.cli import main

HEAVY = ("torch", "transformers", "datasets", "matplotlib", "trl", "peft")


def test_importing_the_cli_loads_no_heavy_package():
    code = f"import sys, selfcorrect.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command of the CLI, walked from the app itself so a new one is covered by default."""
    import typer

    from selfcorrect.cli import app

    def walk(command: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        children = getattr(command, "commands", {})  # a group (typer ships its own click)
        return [path, *(p for name, child in sorted(children.items()) for p in walk(child, (*path, name)))]

    return walk(typer.main.get_command(app), ())


COMMANDS = _command_paths()


def test_the_walk_finds_the_commands_of_every_module():
    names = {" ".join(path) for path in COMMANDS}
    assert {"eval", "select", "probe", "report", "serve", "demo", "tasks", "models", "sandbox pretrain", "stasc",
            "stasc sweep", "insec", "insec compare", "icalign"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "selfcorrect")
def test_every_command_has_its_own_help(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one usage line, unwrapped
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Usage: {' '.join(('selfcorrect', *path))} " in out
    assert "--help" in out


def test_eval_help_names_its_shared_options(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("--resume", "--rounds", "--seed", "--quiet", "--config", "--set"))


def test_usage_errors_exit_2_without_a_traceback(capsys):
    assert main(["no-such-command"]) == 2
    assert main(["eval", "--out", "x", "--rounds", "many"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "No such command" in err and "Invalid value for '--rounds'" in err


# -- The one option table ---------------------------------------------------------------------------------------------

#: Command -> "module:Config" whose keys its flags, --config and --set set. Every command is here or in NO_CONFIG, so a
#: new command fails below until someone says whether it has a config.
CONFIGS = {
    "eval": "selfcorrect.methods.evaluate:EvalConfig",
    "select": "selfcorrect.select:SelectConfig",
    "probe": "selfcorrect.analysis.probes:ProbeConfig",
    "sandbox pretrain": "selfcorrect.sandbox.pretrain:PretrainConfig",
    "stasc": "selfcorrect.methods.stasc:STaSCConfig",
    "stasc sweep": "selfcorrect.methods.stasc:STaSCConfig",
    "insec": "selfcorrect.methods.insec:InSeCConfig",
    "insec compare": "selfcorrect.methods.insec:InSeCConfig",
    "icalign train": "selfcorrect.icalign.presets:RunConfig",
    "icalign eval": "selfcorrect.icalign.presets:RunConfig",
    "icalign sweep": "selfcorrect.icalign.presets:SweepConfig",
}
NO_CONFIG = {"", "tasks", "models", "demo", "report", "serve", "sandbox", "stasc table", "insec demo-run", "icalign",
             "icalign plot"}
#: Parameters of a config command that set no top-level config key: run plumbing, the axes of a sweep, inputs, and
#: the few that a command checks or nests itself.
NOT_CONFIG_KEYS = {"out", "config", "overrides", "resume", "quiet", "seeds", "variants", "controls",
                   "arms", "run_dir", "train_run"}
CHECKED_BY_COMMAND = {"sandbox pretrain": {"task"}, "icalign train": {"seed"}, "icalign eval": {"seed"}}
#: Spellings of a concept that the table already spells another way.
SYNONYMS = {"--output": "--out", "--output-dir": "--out", "--out-dir": "--out", "--outdir": "--out",
            "--config-file": "--config", "--cfg": "--config", "--override": "--set", "--verbose": "--quiet",
            "--silent": "--quiet", "--random-seed": "--seed", "--seed-list": "--seeds", "--temp": "--temperature",
            "--num-examples": "--limit", "--max-examples": "--limit", "--url": "--base-url",
            "--api-base": "--base-url"}


def _type_name(annotation: object) -> str:
    """A type as typer names a parameter's: `X | None` is X, and module prefixes go (`list[Path]`)."""
    import re
    import types
    import typing

    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is None:
        return annotation.__name__
    return re.sub(r"\b\w+\.", "", str(annotation))


def _table() -> dict[str, tuple[str, object]]:
    """The option table, read from its module: key (an option's flags, or an argument's help) -> (type, typer info)."""
    import typing

    import typer.models

    from selfcorrect.commands import options

    entries: dict[str, tuple[str, object]] = {}
    for name, alias in vars(options).items():
        if typing.get_origin(alias) is not typing.Annotated:
            continue
        base, info = typing.get_args(alias)
        if isinstance(info, typer.models.OptionInfo):  # `typer.Option("--quiet", "-q")` keeps "--quiet" as default
            # a "--x/--no-x" pair is one declaration in the table and two names on the command
            key = " ".join(sorted(name for d in (info.default, *info.param_decls) if isinstance(d, str)
                                  for name in d.split("/")))
        else:
            key = info.help
        assert key not in entries, f"the table declares {key} twice (second time as {name})"
        entries[key] = (_type_name(base), info)
    return entries


def _params() -> list[tuple[str, object]]:
    """(command path, parameter) for every parameter of every command."""
    import typer

    from selfcorrect.cli import app

    found = []

    def walk(command: object, path: str) -> None:
        found.extend((path, param) for param in command.params)
        for name, child in getattr(command, "commands", {}).items():
            walk(child, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def _key(param: object) -> str:
    return " ".join(sorted(param.opts + param.secondary_opts)) if param.param_type_name == "option" else param.help


PARAMS = _params()
TABLE = _table()


@pytest.mark.parametrize(("path", "param"), PARAMS, ids=[f"{path or 'selfcorrect'} {p.name}" for path, p in PARAMS])
def test_every_parameter_comes_from_the_option_table(path, param):
    key = _key(param)
    assert key in TABLE, f"`{path}` declares {key!r} inline, or spells it unlike the table (commands/options.py)"
    type_name, info = TABLE[key]
    assert param.help == info.help
    assert param.bare_type() == type_name
    if param.param_type_name == "option":  # the Python name is the flag's, so the flag sets the config key of its name
        long = max(param.opts, key=len)
        assert param.name == ("overrides" if long == "--set" else long.lstrip("-").replace("-", "_"))
        assert long not in SYNONYMS, f"{long}: the table spells this {SYNONYMS[long]}"


def test_a_flag_has_one_default_everywhere():
    """--out alone has a command's own default (where the command writes unless told); every other shared flag has
    one default, and one required-ness, wherever it appears."""
    seen: dict[str, set] = {}
    for _, param in PARAMS:
        if param.param_type_name == "option" and param.name != "out":
            seen.setdefault(_key(param), set()).add((param.required, param.default))
    assert {key: found for key, found in seen.items() if len(found) > 1} == {}
    assert seen["--seed"] == {(False, None)} and seen["--config"] == {(False, None)}


def test_one_seed_or_a_sweep_of_seeds_never_both():
    flags: dict[str, set[str]] = {}
    for path, param in PARAMS:
        flags.setdefault(path, set()).update(param.opts)
    assert [path for path, found in flags.items() if {"--seed", "--seeds"} <= found] == []
    assert {path for path, found in flags.items() if "--seeds" in found} == {"stasc sweep", "insec compare",
                                                                           "icalign sweep"}


def test_every_command_with_a_config_takes_config_and_set_and_its_flags_set_its_keys():
    import importlib

    from selfcorrect.commands.options import CONFIG_KEYS

    by_command: dict[str, list] = {" ".join(path): [] for path in COMMANDS}
    for path, param in PARAMS:
        by_command[path].append(param)
    assert set(CONFIGS) | NO_CONFIG == set(by_command) and not set(CONFIGS) & NO_CONFIG
    for path, params in by_command.items():
        flags = {opt for param in params for opt in param.opts}
        assert ({"--config", "--set"} <= flags) == (path in CONFIGS), path
        if path not in CONFIGS:
            continue
        module, name = CONFIGS[path].split(":")
        fields = getattr(importlib.import_module(module), name).model_fields
        for param in params:
            if param.name in NOT_CONFIG_KEYS | CHECKED_BY_COMMAND.get(path, set()):
                continue
            key = CONFIG_KEYS.get(param.name, param.name)
            assert key.split(".")[0] in fields, f"`{path} --{param.name}` sets no key of {name}"
            assert (param.required, param.default) == (False, None), f"`{path} --{param.name}` must leave the " \
                                                                     f"default to the config"


def test_flags_set_the_config_keys_of_their_names_between_the_file_and_set(tmp_path):
    import typer

    from selfcorrect.cli import app
    from selfcorrect.commands.common import config_from_cli
    from selfcorrect.methods.evaluate import EvalConfig

    config = tmp_path / "eval.yaml"
    config.write_text("limit: 9\nrounds: 4\nsplit: validation\n")
    command = typer.main.get_command(app).commands["eval"]
    ctx = command.make_context("eval", ["--out", str(tmp_path / "run"), "--config", str(config), "--limit", "3",
                                        "--rounds", "2", "--set", "rounds=5", "--backend", "openai", "--base-url",
                                        "http://127.0.0.1:9/v1", "--question-prompt", "bbq-question"])
    cfg = config_from_cli(EvalConfig, ctx)
    assert (cfg.limit, cfg.rounds, cfg.split, cfg.seed) == (3, 5, "validation", 0)  # flag > file, --set > flag
    assert cfg.backend == "openai" and cfg.backend_options == {"base_url": "http://127.0.0.1:9/v1"}
    assert cfg.question_prompt == "bbq-question"


def test_serve_and_every_other_job_has_this_one_command_line():
    """No second parser that could drift from the table (serve once had an argparse twin with its own flags); the
    one other argv parser is the per-rank entry point that `accelerate launch` starts, which no person calls."""
    from pathlib import Path

    import selfcorrect

    src = Path(selfcorrect.__file__).parent
    parsers = {path.relative_to(src).as_posix() for path in src.rglob("*.py") if "import argparse" in path.read_text()}
    assert parsers == {"training/launch.py"}
