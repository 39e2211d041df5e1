"""The command line as a user runs it: subprocesses for exit codes and stderr, main() for plumbing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trajviz.cli import main
from trajviz.store import ExperimentFile

ROOT = Path(__file__).resolve().parents[1]


def trajviz(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trajviz.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def write_config(path: Path, data: dict) -> Path:
    lines = []
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_record_then_info_end_to_end(tmp_path, tiny_dict):
    cfg = write_config(tmp_path / "c.toml", tiny_dict)
    out = tmp_path / "o.h5"
    res = trajviz("record", str(cfg), "-o", str(out), "--quiet", "--set", "train.epochs=1")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    with ExperimentFile(out) as f:
        assert len(f.run_ids()) == 4 and f.run_info("none-seed0").n_checkpoints == 2
        assert f.config["name"] == "tiny"
    info = trajviz("info", str(out), "-o", str(tmp_path / "s.json"))
    assert info.returncode == 0
    assert "none" in info.stdout and "sdae" in info.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert len(summary["groups"]["sdae"]["runs"]) == 2


def test_each_record_option_reaches_the_library(tmp_path, tiny_dict, monkeypatch):
    seen = {}

    def fake(cfg, output, *, mode, progress):
        seen.update(cfg=cfg, output=output, mode=mode, progress=progress)
        return output

    import trajviz.training.runner

    monkeypatch.setattr(trajviz.training.runner, "record_experiment", fake)
    cfg = write_config(tmp_path / "c.toml", tiny_dict)
    assert main(["record", str(cfg), "--set", "model.width=7", "-o", "x.h5", "--resume", "-q"]) == 0
    assert seen["cfg"].model.width == 7 and str(seen["output"]) == "x.h5"
    assert seen["mode"] == "resume" and seen["progress"] is False
    main(["record", str(cfg), "--overwrite", "-q"])
    assert seen["mode"] == "overwrite" and seen["output"] == Path("runs/tiny.h5")


@pytest.mark.parametrize("args, fragment", [
    (["info", "nope.h5"], "does not exist"),
    (["info", "pyproject.toml"], "not an HDF5 file"),
    (["record", "nope.toml"], "does not exist"),
    (["record", "runs/smoke.toml", "--set", "dataset.name=cifar"], "choose one of"),
    (["record", "runs/smoke.toml", "--set", "pretrain.methods=['magic']"], "pretrain.methods[0]"),
    (["record", "runs/smoke.toml", "--set", "probe.n=501"], "exceeds the 500 examples"),
    (["record", "runs/smoke.toml", "--set", "bogus=1"], "unknown config key 'bogus'"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(args, fragment, tmp_path):
    res = trajviz(*args, "-o", str(tmp_path / "x.h5")) if args[0] == "record" else trajviz(*args)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x.h5").exists()


def test_existing_output_is_not_overwritten(tmp_path, tiny_dict):
    cfg = write_config(tmp_path / "c.toml", tiny_dict)
    out = tmp_path / "o.h5"
    out.write_bytes(b"precious")
    res = trajviz("record", str(cfg), "-o", str(out), "-q")
    assert res.returncode == 1 and "--resume" in res.stderr and "Traceback" not in res.stderr
    assert out.read_bytes() == b"precious"


def test_help_shows_defaults():
    res = trajviz("record", "--help")
    assert res.returncode == 0 and "default:" in res.stdout and "--quiet" in res.stdout
    res = trajviz("config", "--show-defaults")
    assert res.returncode == 0 and "[pretrain]" in res.stdout


def _help_entries(text: str) -> list[str]:
    """The option and positional entries of a --help text, each as one line."""
    entries: list[str] = []
    in_args = False
    for line in text.splitlines():
        if line in ("options:", "positional arguments:"):
            in_args = True
        elif not line.startswith(" "):
            in_args = False
        elif in_args and line.startswith("  ") and not line.startswith("   "):
            entries.append(line.strip())
        elif in_args and entries:
            entries[-1] += " " + line.strip()
    return entries


def _all_helps() -> dict[str, str]:
    import argparse

    from trajviz.cli import build_parser

    helps: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        helps[name] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{name} {sub}")

    walk(build_parser(), "trajviz")
    return helps


def test_every_help_prints_each_default_once(capsys):
    """Every subcommand, nested ones (plot trajectories) and the analysis/ scripts included."""
    import re

    from trajviz.cli.figure import figure_main

    helps = _all_helps()
    assert {"trajviz plot trajectories", "trajviz plot landscape", "trajviz data fetch"} <= set(helps)
    with pytest.raises(SystemExit):
        figure_main("depth_boxplots", ["--help"])
    helps["analysis/depth_boxplots.py"] = capsys.readouterr().out
    shown = 0
    for name, text in helps.items():
        entries = _help_entries(text)
        assert entries, name
        for entry in entries:
            assert len(re.findall(r"\bdefault\b", entry)) <= 1, f"{name}: {entry}"
            assert "(default: None)" not in entry and "(default: False)" not in entry, f"{name}: {entry}"
            shown += "(default:" in entry
    assert shown > 50  # the defaults are still shown
    assert "(default: 2000)" in helps["trajviz reproduce"]  # --n-boot
    assert "(default: reproduce-<profile>)" in helps["trajviz reproduce"]


def test_sigkill_mid_run_leaves_a_readable_file_and_resume_finishes(tmp_path, tiny_dict):
    tiny_dict["train"]["epochs"] = 40
    tiny_dict["pretrain"]["methods"] = ["none"]
    cfg = write_config(tmp_path / "c.toml", tiny_dict)
    out = tmp_path / "o.h5"
    # slow every HDF5 write a little (a testing hook of trajviz.store.journal) so the kill lands mid-run
    env = dict(os.environ, TRAJVIZ_DEBUG_WRITE_DELAY="0.003")
    proc = subprocess.Popen([sys.executable, "-m", "trajviz.cli", "record", str(cfg), "-o", str(out),
                             "-q"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few checkpoints are on disk
        time.sleep(0.2)
        try:
            with ExperimentFile(out) as f:
                if any(i.n_checkpoints >= 3 for i in f.runs()):
                    break
        except Exception:
            continue
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ExperimentFile(out) as f:
        infos = f.runs()
        assert infos and all(i.status == "running" for i in infos)
        for i in infos:
            assert f.outputs(i.run_id).shape[0] == i.n_checkpoints
    res = trajviz("record", str(cfg), "-o", str(out), "-q", "--resume")
    assert res.returncode == 0, res.stderr
    with ExperimentFile(out) as f:
        assert all(i.status == "complete" and i.n_checkpoints == 41 for i in f.runs())


def test_divergence_with_few_resamples_prints_its_table(tmp_path, tiny_config, capsys):
    """Regression: a bootstrap too small for an interval printed a traceback."""
    from trajviz.training.runner import record_experiment

    path = record_experiment(tiny_config, tmp_path / "t.h5")
    assert main(["divergence", str(path), "--n-boot", "2", "-o", str(tmp_path / "d.json"), "-q"]) == 0
    assert "sdae" in capsys.readouterr().out


def test_output_piped_into_a_closed_pipe_ends_quietly(tmp_path, tiny_config):
    """`trajviz info FILE --runs | head -1` must not print a BrokenPipeError traceback."""
    from trajviz.training.runner import record_experiment

    path = record_experiment(tiny_config, tmp_path / "t.h5")
    proc = subprocess.Popen([sys.executable, "-m", "trajviz.cli", "info", "--runs", str(path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader went away before anything was written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in stderr


def test_info_prints_missing_values_one_way(tmp_path, capsys):
    """A run without test metrics or model selection: '-' in both tables, null in the JSON."""
    import torch
    from torch import nn

    from trajviz import Recorder

    path = tmp_path / "bare.h5"
    with Recorder(path, torch.rand(6, 3), run_id="bare0", seed=0, group="bare") as rec:
        rec.record(nn.Linear(3, 2), step=0)
    assert main(["info", "--runs", str(path), "-o", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    run_line = next(line for line in out.splitlines() if line.startswith("bare0"))
    assert run_line.split()[4:7] == ["-", "-", "-"]  # test error, @ best valid, best epoch
    data = json.loads((tmp_path / "s.json").read_text())  # strict JSON: no NaN
    assert data["runs"]["bare0"]["final_test_error"] is None
    assert data["runs"]["bare0"]["best_epoch"] is None
