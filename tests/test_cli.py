"""The CLI starts without heavy imports (so `--help` is instant) and answers --help for every command."""

import subprocess
import sys

from selfcorrect.cli import main

HEAVY = ("torch", "transformers", "datasets", "matplotlib", "trl", "peft")


def test_importing_the_cli_loads_no_heavy_package():
    code = f"import sys, selfcorrect.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_every_command_has_help(capsys):
    for argv in (["--help"], ["eval", "--help"], ["sandbox", "pretrain", "--help"], ["demo", "--help"],
                 ["tasks", "--help"]):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "--rounds" in out and "--seed" in out and "--quiet" in out


def test_usage_errors_exit_2_without_a_traceback(capsys):
    assert main(["no-such-command"]) == 2
    assert main(["eval", "--out", "x", "--rounds", "many"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "No such command" in err and "Invalid value for '--rounds'" in err
