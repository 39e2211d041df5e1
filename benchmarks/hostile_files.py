"""The hostile-file suite at full size: every damaged file of tests/test_hostile.py's corpora
through every subcommand that reads them (the CI tests run a sample). Prints, per corpus, files
tried, command runs, refusals with a one-line error, harmless bit flips and failures
(docs/reliability.md).

Experiment files (``build_corpus``) go through ``info``, ``project``, ``divergence``,
``landscape`` and ``plot trajectories``; landscape files (``build_landscape_corpus``, damaged
copies of a scan of the same experiment) through ``plot landscape`` (lines and contour views)
and ``landscape --resume`` (which reads the file, then prints the flatness table from it).
A bit-flipped landscape file that a command reads without an error is counted harmless only if
it also reads the same numbers as the clean file; otherwise undetected (none since landscape
files carry checksums, as experiment files do).

    .venv/bin/python benchmarks/hostile_files.py                      # both corpora
    .venv/bin/python benchmarks/hostile_files.py --corpus landscape   # landscape files only
"""

from __future__ import annotations

import argparse
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


def _print_report(what: str, corpus: dict, report, n_cmds: int, marker: Path, seconds: float) -> None:
    undetected = (f", {report.undetected} undetected bit flips (exit 0, but the numbers read "
                  "differ from the clean file's)" if report.undetected else "")
    up_to = "" if report.runs == len(corpus) * n_cmds else "up to "
    print(f"{what}: {len(corpus)} damaged files x {up_to}{n_cmds} commands = {report.runs} runs: "
          f"{report.refused} refused with a one-line error, {report.harmless} harmless bit flips "
          f"(exit 0, same output as the clean file){undetected}, {len(report.failures)} "
          f"failures; pickle executed: {marker.exists()}; {seconds:.0f} s", flush=True)
    for failure in report.failures:
        print("FAILURE:", failure)


def _clean_notes(th, commands, base: Path, work: Path) -> None:
    for cmd in commands(base, work):
        log = work / f"clean.{cmd}.log"
        if log.exists() and "Traceback" in log.read_text():
            print(f"note: `trajviz {cmd}` fails on the clean file too (not a hostile-file "
                  f"problem): {log.read_text().strip().splitlines()[-1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=("all", "experiment", "landscape"), default="all",
                        help="which damaged files to try (default: all)")
    args = parser.parse_args(argv)
    fi = _load("fault_injection", ROOT / "benchmarks" / "fault_injection.py")
    th = _load("test_hostile", ROOT / "tests" / "test_hostile.py")
    from trajviz.config import config_from_dict
    from trajviz.training.runner import record_experiment

    ok = True
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
        if args.corpus in ("all", "experiment"):
            t0 = time.monotonic()
            corpus = th.build_corpus(base, tmp / "corpus", marker)
            work = tmp / "work"
            work.mkdir()
            server = fi.ForkServer(warm=th.SERVER_WARM)
            try:
                report = th.check_corpus(corpus, base, work, server, None)
            finally:
                server.close()
            _print_report("experiment files", corpus, report, len(th._commands(base, work)),
                          marker, time.monotonic() - t0)
            _clean_notes(th, th._commands, base, work)
            ok &= not report.failures
        if args.corpus in ("all", "landscape"):
            t0 = time.monotonic()
            landscape = th.make_landscape(base, tmp / "base.landscape.h5")
            corpus = th.build_landscape_corpus(landscape, base, tmp / "landscape-corpus", marker)
            work = tmp / "landscape-work"
            work.mkdir()
            commands = th.landscape_commands(base)
            clean = th.landscape_fingerprint(landscape)

            def same_content(path: Path) -> bool:
                try:
                    return th.landscape_fingerprint(path) == clean
                except Exception:  # noqa: BLE001 - refused here though a command read it
                    return False

            server = fi.ForkServer(warm=th.LANDSCAPE_SERVER_WARM)
            try:
                report = th.check_corpus(corpus, landscape, work, server, None,
                                         commands=commands, reference="plot-lines",
                                         same_content=same_content)
            finally:
                server.close()
            _print_report("landscape files", corpus, report, len(commands(landscape, work)),
                          marker, time.monotonic() - t0)
            _clean_notes(th, commands, landscape, work)
            ok &= not report.failures
        ok &= not marker.exists()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
