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
