"""UMAP's compile time across processes: `trajviz project --method umap` on a small file, run in
fresh processes one after another, each process's CPU time (user + sys, from wait4) measured from
outside.

umap-learn compiles its numba functions in every new process unless they are cached on disk;
trajviz switches numba's cache on for them (trajviz.trajectories.embedders._import_umap). Here
the cache lives in a fresh temporary NUMBA_CACHE_DIR, so run 1 is the cold first call (compile +
store) and runs 2.. load the cache. The baseline is the same command with the cache switch
disabled (TRAJVIZ_BENCH_NO_NUMBA_CACHE=1, read only by this benchmark's child), the way umap-learn
runs by itself: every process compiles.

    .venv/bin/python benchmarks/umap_compile_cache.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import os, sys
if os.environ.get("TRAJVIZ_BENCH_NO_NUMBA_CACHE"):
    import trajviz.trajectories.embedders as e
    e._NUMBA_CACHED = True   # pretend the cache is already switched on: it never is
from trajviz.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cpu_seconds(argv: list[str], env: dict[str, str]) -> float:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {proc.stderr.read().decode()[-500:]}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="warm runs after the cold one")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    from synthetic_trajectories import two_groups, write_experiment

    with tempfile.TemporaryDirectory() as tmp:
        src = write_experiment(Path(tmp) / "two.h5", two_groups(n_runs=5, T=6))
        env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_CACHE_DIR=str(Path(tmp) / "numba"))

        def run(i: int, extra: dict[str, str]) -> float:
            out = Path(tmp) / f"e{i}.h5"
            return cpu_seconds([sys.executable, "-c", CHILD, "project", str(src), "--method",
                                "umap", "-o", str(out), "--overwrite", "-q"], dict(env, **extra))

        cold = run(0, {})
        warm, plain = [], []
        for r in range(args.rounds):  # alternate the two sides
            warm.append(run(1, {}))
            plain.append(run(2, {"TRAJVIZ_BENCH_NO_NUMBA_CACHE": "1"}))
    print(f"trajviz project --method umap, 60 points, CPU seconds per process "
          f"(best of {args.rounds} alternating rounds):")
    print(f"  first process (cold cache):    {cold:6.1f}")
    print(f"  later processes (cache):       {min(warm):6.1f}")
    print(f"  without the cache (baseline):  {min(plain):6.1f}")
    print(f"  ratio baseline / cached: {min(plain) / min(warm):.1f}x; cached / cold: "
          f"{min(warm) / cold:.2f}")


if __name__ == "__main__":
    main()
