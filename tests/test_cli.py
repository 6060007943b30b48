"""Tests for jaxcnn/cli.py: the ``jaxcnn COMMAND [ARGS]`` dispatcher, and the help and
output folder of the commands it runs (``jaxcnn train``'s own: test_train_command.py).

References: the table of commands itself (every name maps to an importable module with a
``main``), the exit statuses of the usage convention (0 for help, 2 for bad usage), and a
fresh interpreter for what only a fresh one can show (which modules a command loads).
"""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

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


# ----------------------------------------------------------------------------- help and --out

CONSOLE_SCRIPT = Path(sys.executable).parent / "jaxcnn"
JAXCNN = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "jaxcnn"]


def help_entries(text: str) -> dict[str, str]:
    """``--flag: its whole help entry, one line`` for every option of an argparse help text."""
    entries, current = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            flags = [word.rstrip(",") for word in line.split() if word.startswith("-")]
            current = flags[-1] if line.startswith("  -h") else flags[0]
            entries[current] = line
        elif current and line.startswith("        "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(entry.split()) for flag, entry in entries.items()}


@pytest.mark.parametrize("command, flags", [
    ("gradcheck", {"--quick", "--json", "--seed", "--ops"}),
    ("fuzz", {"--n", "--seed", "--ops", "--processes", "--out", "--replay"}),
], ids=["gradcheck", "fuzz"])
def test_command_help_gives_every_flag_a_text_and_its_default(command, flags):
    """Through the console script: every flag listed with a text that says its default, the
    description whole sentences (fuzz's stopped mid-sentence: 'the reference and the')."""
    result = subprocess.run([*JAXCNN, command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    entries = help_entries(result.stdout)
    assert set(entries) == flags | {"--help"}
    for flag in flags:
        assert "(default: " in entries[flag], entries[flag]
        assert len(entries[flag].split("(default")[0].split()) > 3, entries[flag]   # a text, not a flag alone
    description = " ".join(result.stdout.split("\n\n")[1].split())
    assert description.endswith(".") and "``" not in description


def test_fuzz_writes_under_runs_fuzz_of_the_current_folder_and_says_so(tmp_path, monkeypatch, capsys):
    """``--out``'s default, as its help says: runs/fuzz under the folder it is run in; the run
    ends naming the files (the fuzzing itself replaced: none drawn)."""
    from jaxcnn.fuzz import command as fuzz_command
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fuzz_command, "fuzz", lambda n, seed, ops, processes, progress: [])
    assert fuzz_command.main(["--n", "3"]) == 0
    out = Path("runs") / "fuzz"
    assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["failures.json", "results.jsonl", "summary.md"]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote {out / 'summary.md'}, {out / 'failures.json'} and {out / 'results.jsonl'}")
    assert "(default: runs/fuzz, under the current folder" in " ".join(
        subprocess.run([*JAXCNN, "fuzz", "--help"], capture_output=True, text=True, timeout=120).stdout.split())
    with pytest.raises(SystemExit):
        fuzz_command.main(["--n", "0"])
    assert "jaxcnn fuzz: error: --n: expected a positive integer; got 0" in capsys.readouterr().err


def _bench_output(terminal: bool) -> str:
    """``jaxcnn bench`` on one tiny case through the console script, its stdout a pipe or a
    pseudo-terminal (``os.openpty``: the child's ``isatty()`` is true)."""
    import os
    argv = [*JAXCNN, "bench", "--quick", "--cases", "maxpool3x3_s2", "--layout", "channels_first",
            "--mode", "fwd", "--impls", "jaxcnn"]
    env = {**os.environ, "COLUMNS": "400"}
    if not terminal:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=True).stdout
    leader, follower = os.openpty()
    process = subprocess.Popen(argv, stdout=follower, stderr=subprocess.PIPE, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:        # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=300) == 0, process.stderr.read()
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("terminal", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["pipe", "terminal"])   # the terminal's table in the full tier
def test_bench_prints_its_header_and_columns_and_on_a_terminal_a_rich_table(terminal):
    pytest.importorskip("rich")
    from jaxcnn import bench
    out = _bench_output(terminal)
    lines = [line.strip() for line in out.splitlines()]
    device = next(i for i, line in enumerate(lines) if line.startswith("device: "))
    assert "vector ISA" in lines[device] and "GFLOP/s" in lines[device]
    assert lines[device + 1] == bench.markdown_table([]).splitlines()[0]   # the columns first
    assert any(line.startswith("| maxpool3x3_s2 |") for line in lines)
    assert ("┃" in out and "jaxcnn bench" in out) == terminal, out
