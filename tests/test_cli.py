"""Tests for jaxcnn/cli.py: the ``jaxcnn COMMAND [ARGS]`` dispatcher.

References: the table of commands itself (every name maps to an importable module with a
``main``), the exit statuses of the usage convention (0 for help, 2 for bad usage), and a
fresh interpreter for what only a fresh one can show (which modules a command loads).
"""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from jaxcnn import cli


def test_usage_lists_every_command_with_its_description():
    text = cli.usage()
    assert text.startswith("usage: jaxcnn COMMAND [ARGS]")
    for name, (_, description) in cli.COMMANDS.items():
        assert f"  {name:<10} {description}" in text.splitlines()


@pytest.mark.parametrize("argv, status", [([], 2), (["-h"], 0), (["--help"], 0)],
                         ids=["no-arguments", "-h", "--help"])
def test_help_and_no_command_print_usage(argv, status, capsys):
    assert cli.main(argv) == status
    assert capsys.readouterr().out.strip() == cli.usage()


def test_unknown_command_exits_2_naming_it(capsys):
    assert cli.main(["trian", "--epochs", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("jaxcnn: unknown command 'trian'")
    assert cli.usage() in captured.err


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_each_command_names_a_module_with_a_main(name):
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(module.main)


def test_command_help_is_dispatched_with_the_remaining_arguments(capsys):
    """``jaxcnn gradcheck --help``: the subcommand's own argparse help, exit status 0."""
    assert cli.main(["gradcheck", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jaxcnn gradcheck")
    assert "--quick" in out and "--ops" in out


def test_command_usage_error_exits_2(capsys):
    assert cli.main(["gradcheck", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_commands_are_imported_only_when_asked_for():
    """In a fresh interpreter: ``python -m jaxcnn gradcheck --help`` exits 0 without loading
    the training stack (the module docstring's promise)."""
    script = ("import sys, runpy\n"
              "sys.argv = ['jaxcnn', 'gradcheck', '--help']\n"
              "try:\n"
              "    runpy.run_module('jaxcnn', run_name='__main__')\n"
              "except SystemExit as stop:\n"
              "    print('status', stop.code)\n"
              "print('loaded', sorted(m for m in ('jaxcnn.train', 'jaxcnn.bench', 'optax')"
              " if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["status 0", "loaded []"], result.stdout
