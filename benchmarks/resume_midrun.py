"""Resume inside a run: what keeping the resume state costs, and what it saves.

1. **Cost.** The same 60-epoch ``trajviz record`` with ``engine.resume_state`` on and off,
   alternating, ``--rounds`` times each, as whole processes: CPU time (user + system, best of
   the rounds), wall time, and the final file's size. With the state on, every checkpoint also
   writes one batch's parameters (and the journal copies the pages they overwrite).
2. **What it saves** (issue 13's "done when"). A run with the state on is SIGKILLed once its CPU
   time reaches ``--fraction`` (0.8) of the uninterrupted run's, then ``trajviz record
   --resume`` finishes it: its CPU and wall time against the uninterrupted run's, and whether
   the final file is identical, bit for bit, to the uninterrupted one (every output, metric,
   parameter and attribute, through the public reader). The same with the state off (the
   resume then redoes the unfinished batch from epoch 0), for comparison.

    .venv/bin/python benchmarks/resume_midrun.py                 # docs/reliability.md, benchmarks.md
    .venv/bin/python benchmarks/resume_midrun.py --rounds 1      # quicker

The kill is timed by the process's CPU time (read from /proc), not the wall clock, so the
fraction means the same on a loaded machine. Linux only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
name = "resume60"
seeds = [0, 1, 2, 3]
[dataset]
name = "shapeset"
n_train = {n_train}
n_valid = 200
n_test = 200
[model]
depth = 2
width = 100
[pretrain]
methods = ["none", "sdae"]
epochs = 2
[train]
epochs = 60
lr = 0.1
batch_size = 10
[probe]
n = 200
[engine]
nets_per_batch = 4
resume_state = {state}
"""

MAIN = "import sys; from trajviz.cli import main; sys.exit(main(sys.argv[1:]))"
_TICK = os.sysconf("SC_CLK_TCK")


def _fi():
    spec = importlib.util.spec_from_file_location("fault_injection", ROOT / "benchmarks" / "fault_injection.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fault_injection", mod)
    spec.loader.exec_module(mod)
    return mod


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def record(cfg: Path, out: Path, *, resume: bool = False, kill_at_cpu: float | None = None
           ) -> tuple[float, float, int]:
    """Run ``trajviz record`` as a process: (CPU s, wall s, exit code; -9 when killed)."""
    argv = [sys.executable, "-c", MAIN, "record", str(cfg), "-o", str(out), "-q"]
    if resume:
        argv.append("--resume")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env)
    if kill_at_cpu is not None:
        while proc.poll() is None:
            try:
                if _cpu_of(proc.pid) >= kill_at_cpu:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.02)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = status
    wall = time.monotonic() - t0
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return usage.ru_utime + usage.ru_stime, wall, rc


def per_checkpoint(work: Path, sizes: list[int], nets: int, probe: int, classes: int,
                   checkpoints: int = 12) -> tuple[float, float, int]:
    """CPU seconds of one batch checkpoint's transaction (``nets`` runs' outputs on a probe set
    of ``probe`` x ``classes``) without and with the resume state of ``nets`` float32 nets of
    layer ``sizes``, median over ``checkpoints``; and the state's bytes."""
    import numpy as np

    from trajviz.store import ExperimentWriter

    rng = np.random.default_rng(0)
    params = {f"weights/{l}": rng.random((nets, a, b), dtype=np.float32)
              for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}
    params.update({f"biases/{l}": rng.random((nets, 1, b), dtype=np.float32)
                   for l, b in enumerate(sizes[1:])})
    params.update({f"rng/{n}": rng.integers(0, 256, (nets, 5056), dtype=np.uint8)
                   for n in ("init", "order", "pretrain")})
    probs = rng.dirichlet(np.ones(classes), size=probe).astype(np.float32)
    out = {}
    for state in (False, True):
        path = work / f"micro-{state}.h5"
        path.unlink(missing_ok=True)
        times = []
        with ExperimentWriter(path, probe_targets=np.zeros(probe, dtype=np.int64), probe_sha="x",
                              n_classes=classes) as w:
            runs = [w.start_run(f"r{k}", seed=k, pretrain="none") for k in range(nets)]
            for t in range(checkpoints):
                t0 = time.process_time()
                with w.atomic():
                    for run in runs:
                        run.append(t, probs, {"train_nll": 0.5})
                    if state:
                        w.write_resume_state("r0", params, {"step": t})
                times.append(time.process_time() - t0)
        out[state] = float(np.median(times))
    return out[False], out[True], sum(a.nbytes for a in params.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="full runs per setting (default 3)")
    parser.add_argument("--fraction", type=float, default=0.8,
                        help="kill at this fraction of the full run's CPU time (default 0.8)")
    parser.add_argument("--n-train", type=int, default=3000, help="training examples (default 3000)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--micro-only", action="store_true",
                        help="only the per-checkpoint cost of the state (seconds)")
    args = parser.parse_args()
    fi = _fi()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="trajviz-resume-"))
    work.mkdir(parents=True, exist_ok=True)

    # 0. one checkpoint's transaction, without and with the state, for two batch sizes: this
    # run's (4 nets of 1024-100-100-2) and the built-in default experiment's (16 of 1024-200-200-2)
    for nets, width in ((4, 100), (16, 200)):
        plain, with_state, nbytes = per_checkpoint(work, [1024, width, width, 2], nets, 200, 2)
        print(f"one checkpoint of {nets} nets of 1024-{width}-{width}-2 (probe 200 x 2): "
              f"{plain * 1e3:.1f} ms CPU without the state, {with_state * 1e3:.1f} ms with its "
              f"{nbytes / 1e6:.2f} MB (median of 12)")
    if args.micro_only:
        return 0
    cfgs = {}
    for state in ("on", "off"):
        cfgs[state] = work / f"{state}.toml"
        cfgs[state].write_text(CONFIG.format(n_train=args.n_train,
                                             state="true" if state == "on" else "false"))
    print(f"workdir {work}; 60 epochs, 2 methods x 4 seeds in batches of 4, "
          f"{args.n_train} training examples")

    # 1. cost of keeping the state: alternate on / off
    cpu = {"on": [], "off": []}
    wall = {"on": [], "off": []}
    size = {}
    for r in range(args.rounds):
        for state in (("on", "off") if r % 2 == 0 else ("off", "on")):
            out = work / f"full-{state}.h5"
            out.unlink(missing_ok=True)
            c, w, rc = record(cfgs[state], out)
            if rc != 0:
                raise SystemExit(f"full run ({state}) failed with exit code {rc}")
            cpu[state].append(c)
            wall[state].append(w)
            size[state] = out.stat().st_size
            print(f"  round {r + 1}, state {state:>3}: CPU {c:6.2f} s, wall {w:6.2f} s, "
                  f"file {size[state] / 1e6:.3f} MB")
    best = {s: min(v) for s, v in cpu.items()}
    print(f"cost: CPU best of {args.rounds}: on {best['on']:.2f} s, off {best['off']:.2f} s "
          f"(x{best['on'] / best['off']:.3f}); wall best on {min(wall['on']):.2f} s, off "
          f"{min(wall['off']):.2f} s; final file on {size['on'] / 1e6:.3f} MB, off "
          f"{size['off'] / 1e6:.3f} MB (+{(size['on'] - size['off']) / 1e3:.1f} kB)")
    diffs = fi.differences(work / "full-on.h5", work / "full-off.h5", ignore_engine=True)
    print(f"the runs with and without the state are identical (but for engine.resume_state): "
          f"{not diffs}" + (f" (differ at {diffs[:5]})" if diffs else ""))

    # 2. killed at `fraction` of the full run's CPU time, then resumed
    for state in ("on", "off"):
        full_cpu, full_wall = best[state], min(wall[state])
        out = work / f"killed-{state}.h5"
        out.unlink(missing_ok=True)
        c1, w1, rc = record(cfgs[state], out, kill_at_cpu=args.fraction * full_cpu)
        if rc != -signal.SIGKILL:
            raise SystemExit(f"the run to kill ended with exit code {rc} before the kill")
        states = fi.resume_states(out) if out.exists() else 0
        c2, w2, rc = record(cfgs[state], out, resume=True)
        if rc != 0:
            raise SystemExit(f"resume ({state}) failed with exit code {rc}")
        diffs = fi.differences(out, work / f"full-{state}.h5")
        print(f"state {state:>3}: killed after CPU {c1:.2f} s ({c1 / full_cpu:.0%} of the full "
              f"run; {states} resume state(s) in the file); resume: CPU {c2:.2f} s = "
              f"{c2 / full_cpu:.0%} of the full run's {full_cpu:.2f} s (wall {w2:.2f} s = "
              f"{w2 / full_wall:.0%} of {full_wall:.2f} s); final file identical to the "
              f"uninterrupted run: {not diffs}" + (f" (differs at {diffs[:5]})" if diffs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
