"""The hostile-file suite at full size: every damaged file of tests/test_hostile.py's corpus
through every subcommand that reads trajviz files (the CI test runs ``info`` on all of them and
the other commands on a sample). Prints files tried, command runs, refusals with a one-line
error, harmless bit flips and failures (docs/reliability.md).

    .venv/bin/python benchmarks/hostile_files.py
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    fi = _load("fault_injection", ROOT / "benchmarks" / "fault_injection.py")
    th = _load("test_hostile", ROOT / "tests" / "test_hostile.py")
    from trajviz.config import config_from_dict
    from trajviz.train import record_experiment

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = {"name": "base", "seeds": [0, 1],
               "dataset": {"name": "shapeset", "n_train": 60, "n_valid": 20, "n_test": 24},
               "model": {"depth": 1, "width": 6},
               "pretrain": {"methods": ["none", "sdae"], "epochs": 1},
               "train": {"epochs": 2, "lr": 0.1, "batch_size": 10}, "probe": {"n": 12},
               "record": {"every_steps": 3}}
        base = record_experiment(config_from_dict(cfg), tmp / "base.h5")
        marker = tmp / "UNPICKLED"
        corpus = th.build_corpus(base, tmp / "corpus", marker)
        work = tmp / "work"
        work.mkdir()
        server = fi.ForkServer(warm=th.SERVER_WARM)
        try:
            refused, harmless, failures = th.check_corpus(corpus, base, work, server, None)
        finally:
            server.close()
        n_cmds = len(th._commands(base, work))
        print(f"{len(corpus)} damaged files x {n_cmds} commands = {len(corpus) * n_cmds} runs: "
              f"{refused} refused with a one-line error, {harmless} harmless bit flips "
              f"(exit 0, same output as the clean file), {len(failures)} failures; "
              f"pickle executed: {marker.exists()}; {time.monotonic() - t0:.0f} s")
        for failure in failures:
            print("FAILURE:", failure)
        for cmd in th._commands(base, work):
            log = work / f"clean.{cmd}.log"
            if log.exists() and "Traceback" in log.read_text():
                print(f"note: `trajviz {cmd}` fails on the clean file too (not a hostile-file "
                      f"problem): {log.read_text().strip().splitlines()[-1]}")
    return 0 if not failures and not marker.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
