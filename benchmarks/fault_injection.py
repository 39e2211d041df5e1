"""Fault injection: SIGKILL ``trajviz record`` at random moments, some inside HDF5 writes, and
check after every kill that the file opens, that every checkpoint it holds equals the same
checkpoint of an uninterrupted run, and that ``--resume`` ends with a file identical, bit for
bit, to the uninterrupted run's. The uninterrupted run is read live (``trajviz info``'s library
twin) while it records, so the same comparison also shows that readers do not harm the writer.

    .venv/bin/python benchmarks/fault_injection.py --kills 24          # docs/reliability.md
    .venv/bin/python benchmarks/fault_injection.py --kills 3 --quick   # what CI runs
    .venv/bin/python benchmarks/fault_injection.py --landscape --kills 12   # `trajviz landscape`

With ``--landscape`` the process killed is ``trajviz landscape ... --resume`` on a recorded tiny
experiment: after every kill the landscape file (read before any writer repairs it) must hold
only rows equal to the uninterrupted scan's, never fewer than after the previous kill, and the
final ``--resume`` must end with the same numbers, bit for bit.

Processes are forked from one server that has imported torch once (importing it takes seconds
on a loaded machine); every ``record`` is a real process, killed with a real SIGKILL. Kills are
timed two ways: ``random`` (uniform over the uninterrupted run's duration) and ``in-write``
(the moment the journal shows an open transaction, with ``TRAJVIZ_DEBUG_WRITE_DELAY`` making
each HDF5 write sleep so the window is wide). Whether a kill landed inside a write is read
back from the journal (a hot journal), not assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

TINY_TOML = """\
name = "fault"
seeds = [0, 1]
[dataset]
name = "shapeset"
n_train = {n_train}
n_valid = 40
n_test = 40
[model]
depth = 2
width = 12
[pretrain]
methods = ["none", "sdae"]
epochs = 1
[train]
epochs = {epochs}
lr = 0.1
batch_size = 10
[probe]
n = 30
[record]
every_steps = 4
params = "all"
[engine]
nets_per_batch = 2
"""

# The server imports torch and trajviz once, never runs a torch op itself (so forking is safe),
# and forks one child per request; it reports the child's pid at once and its status when done.
SERVER = r"""
import json, os, resource, signal, sys, traceback
import importlib
for _mod in sys.argv[1:]:
    importlib.import_module(_mod)  # warm imports, no torch ops
import trajviz.cli
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1); os.dup2(fd, 2)
            os.chdir(req["cwd"])
            os.environ.update(req.get("env", {}))
            if req.get("fsize"):
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
            rc = trajviz.cli.main(req["argv"])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = 99
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(rc or 0)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"pid": pid, "rc": code}), flush=True)
"""


class ForkServer:
    """Runs ``trajviz`` command lines in processes forked from one warm Python."""

    def __init__(self, env: dict[str, str] | None = None,
                 warm: tuple[str, ...] = ("trajviz.cli", "trajviz.training.runner")):
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, *warm], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=full_env, cwd=ROOT)

    def start(self, argv: list[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None,
              fsize: int = 0) -> int:
        req = {"argv": argv, "cwd": str(cwd), "log": str(log), "env": env or {}, "fsize": fsize}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        return int(json.loads(line)["pid"])

    def wait(self, timeout: float = 600, pid: int | None = None) -> int:
        """Exit code of the last started child (negative: killed by that signal). If it runs
        past ``timeout`` s it is killed (given its ``pid``) and TimeoutError is raised."""
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                self.proc.stdout.readline()
            raise TimeoutError(f"child did not finish within {timeout} s")
        return int(json.loads(self.proc.stdout.readline())["rc"])

    def run(self, argv: list[str], **kw) -> int:
        self.start(argv, **kw)
        return self.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


# --------------------------------------------------------------------------- comparisons


def file_content(path: Path) -> dict[str, object]:
    """Everything a trajviz file says, by name, through the public reader."""
    from trajviz.store import ExperimentFile

    out: dict[str, object] = {}
    with ExperimentFile(path) as f:
        out["/name"], out["/config"] = f.name, json.dumps(f.config, sort_keys=True)
        out["/probe/targets"] = f.probe_targets()
        for rid in f.run_ids():
            out[f"{rid}/attrs"] = json.dumps({k: (v.tolist() if hasattr(v, "tolist") else v)
                                              for k, v in sorted(f.run_attrs(rid).items())})
            out[f"{rid}/steps"] = f.steps(rid)
            out[f"{rid}/epochs"] = f.epochs(rid)
            out[f"{rid}/outputs"] = f.outputs(rid)
            for name, arr in f.metrics(rid).items():
                out[f"{rid}/metrics/{name}"] = arr
            for which in ("final", "trajectory"):
                if f.has_params(rid, which):
                    for name, arr in f.params(rid, which).items():
                        out[f"{rid}/params/{which}/{name}"] = arr
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind == "f":  # bit for bit, NaN included
            return a.tobytes() == b.tobytes()
        return bool(np.array_equal(a, b))
    return a == b


def _without_engine(content: dict[str, object]) -> dict[str, object]:
    """``content`` with the config's engine section left out (root and run configs)."""
    out = dict(content)
    for key, value in content.items():
        if key == "/config" or key.endswith("/attrs"):
            d = json.loads(value)
            if key.endswith("/attrs") and "config" in d:
                run_config = json.loads(d["config"])
                run_config.pop("engine", None)
                d["config"] = json.dumps(run_config, sort_keys=True)
            d.pop("engine", None)
            out[key] = json.dumps(d, sort_keys=True)
    return out


def differences(path: Path, reference: Path, ignore_engine: bool = False) -> list[str]:
    """Keys whose content differs between two files (empty: identical); ``ignore_engine``:
    the configs' engine sections (how it ran, e.g. engine.resume_state) may differ."""
    a, b = file_content(path), file_content(reference)
    if ignore_engine:
        a, b = _without_engine(a), _without_engine(b)
    diffs = sorted(set(a) ^ set(b))
    diffs += [k for k in sorted(set(a) & set(b)) if not _same(a[k], b[k])]
    return diffs


def prefix_problems(path: Path, reference: Path) -> list[str]:
    """After a kill: every checkpoint ``path`` holds must equal the reference's checkpoint of
    the same index, and every run it calls complete must equal the reference's run."""
    from trajviz.store import ExperimentFile

    problems = []
    with ExperimentFile(path) as f, ExperimentFile(reference) as ref:
        f.verify()
        for rid in f.run_ids():
            info = f.run_info(rid)
            n = info.n_checkpoints
            if not _same(f.steps(rid), ref.steps(rid)[:n]):
                problems.append(f"{rid}/steps")
            if not _same(f.outputs(rid), ref.outputs(rid, slice(0, n))):
                problems.append(f"{rid}/outputs")
            for name, arr in f.metrics(rid).items():
                if not _same(arr, ref.metrics(rid)[name][:n]):
                    problems.append(f"{rid}/metrics/{name}")
            if info.status == "complete" and n != ref.run_info(rid).n_checkpoints:
                problems.append(f"{rid}: complete with {n} checkpoints")
        for key, meta in f.resume_states().items():  # a batch's state agrees with its runs
            for rid in meta["runs"]:
                info = f.run_info(rid) if rid in f.run_ids() else None
                if info is None or (info.status == "running"
                                    and info.n_checkpoints != meta["n_checkpoints"]):
                    problems.append(f"resume state {key}: {meta['n_checkpoints']} checkpoints, "
                                    f"run {rid}: {info and info.n_checkpoints}")
    return problems


def resume_states(path: Path) -> int:
    """How many batches of the file have a resume state (training continues mid-run)."""
    from trajviz.store import ExperimentFile

    with ExperimentFile(path) as f:
        return len(f.resume_states())


def landscape_content(path: Path) -> dict[str, object]:
    """Everything a landscape file holds, by HDF5 key (``key@attr`` for attributes), read
    through :class:`trajviz.store.LandscapeFile` (so a hot journal is rolled back in memory)."""
    import h5py

    from trajviz.store import LandscapeFile

    out: dict[str, object] = {}

    def attrs(key: str, node) -> None:
        for name, value in node.attrs.items():
            out[f"{key}@{name}"] = value.decode() if isinstance(value, bytes) else value

    with LandscapeFile(path) as f:
        attrs("/", f._f)  # the public reader has no walk; the file object is its h5py.File

        def visit(key: str, node) -> None:
            attrs(key, node)
            if isinstance(node, h5py.Dataset):
                out[key] = node[()]

        f._f.visititems(visit)
    return out


def landscape_differences(path: Path, reference: Path) -> list[str]:
    """Keys (datasets and attributes) whose content differs between two landscape files."""
    a, b = landscape_content(path), landscape_content(reference)
    diffs = sorted(set(a) ^ set(b))
    diffs += [k for k in sorted(set(a) & set(b)) if not _same(a[k], b[k])]
    return diffs


def landscape_prefix_problems(path: Path, reference: Path) -> list[str]:
    """After a kill: every row ``path`` marks done equals the reference's row bit for bit, every
    row not done is NaN, and every other dataset and attribute it holds equals the reference's
    (a run's ``status`` may still be ``running``)."""
    a, b = landscape_content(path), landscape_content(reference)
    problems = []
    tables = {k[:-len("/done")] for k in a if k.endswith("/done")}
    for key, value in a.items():
        if key not in b:
            problems.append(f"{key}: not in the uninterrupted scan")
            continue
        table = key.rsplit("/", 1)[0] if "@" not in key else None
        if table in tables and key.endswith("/done"):
            if not set(np.unique(value)) <= {0, 1}:
                problems.append(f"{key}: flags other than 0 and 1")
        elif table in tables:
            done = np.asarray(a[f"{table}/done"], dtype=bool)
            if not _same(value[done], b[key][done]):
                problems.append(f"{key}: a finished row differs")
            if not np.isnan(value[~done]).all():
                problems.append(f"{key}: a row not marked done has values")
        elif key.endswith("@status") and value == "running":
            continue
        elif not _same(value, b[key]):
            problems.append(f"{key}: differs")
    return problems


def landscape_rows_done(path: Path) -> int:
    return sum(int(np.sum(v)) for k, v in landscape_content(path).items() if k.endswith("/done"))


# --------------------------------------------------------------------------- the experiment


@dataclass
class Report:
    kills_tried: int = 0
    kills_survived: int = 0
    inside_write: int = 0
    before_file: int = 0
    resumes: int = 0
    with_state: int = 0
    live_reads: int = 0
    live_projections: int = 0
    live_checkpoints_seen: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    identical: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"kills survived {self.kills_survived}/{self.kills_tried} "
                f"({self.inside_write} inside an HDF5 write, {self.before_file} before the file "
                f"existed; {self.with_state} left a resume state, i.e. resumed mid-run); "
                f"resumed {self.resumes} times; final file identical to the "
                f"uninterrupted run: {self.identical}; live reads during the uninterrupted run: "
                f"{self.live_reads} info + {self.live_projections} project (checkpoints seen "
                f"{self.live_checkpoints_seen[:1]}..{self.live_checkpoints_seen[-1:]}); "
                f"{self.seconds:.0f} s")


def _checkpoints(path: Path) -> int:
    from trajviz.store.summary import summarize

    s = summarize(path, check=True)
    return sum(sum(g.checkpoints) for g in s.groups.values())


def inject(n_kills: int, workdir: Path, *, seed: int = 0, epochs: int = 3, n_train: int = 120,
           delay: float = 0.002, in_write_fraction: float = 0.5, log=print,
           server: ForkServer | None = None, plain_run: bool = True,
           reference_delay: float = 0.01) -> Report:
    """Record once uninterrupted (reading it live), then record the same config again under
    ``n_kills`` SIGKILLs, checking the file after each, resuming each time; compare."""
    from trajviz.store.summary import summarize  # noqa: F401  (imported before the clock starts)
    from trajviz.trajectories.embedding import embed  # noqa: F401
    from trajviz.store.journal import _TXN, OWNER_LEN, journal_path, read_hot_journal

    TXN_LEN = _TXN.size

    rng = random.Random(seed)
    report = Report()
    t_start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "fault.toml"
    cfg.write_text(TINY_TOML.format(epochs=epochs, n_train=n_train))
    env = {"TRAJVIZ_DEBUG_WRITE_DELAY": str(delay)}
    own_server = server is None
    server = server or ForkServer()
    try:
        ref, out = workdir / "reference.h5", workdir / "killed.h5"
        for p in (ref, out, journal_path(ref), journal_path(out)):
            p.unlink(missing_ok=True)
        t0 = time.monotonic()
        # slower writes in the reference, so that live reads overlap its recording
        server.start(["record", str(cfg), "-o", str(ref), "-q"], cwd=workdir,
                     log=workdir / "reference.log",
                     env={"TRAJVIZ_DEBUG_WRITE_DELAY": str(max(delay, reference_delay))})
        # live reading while the reference records: must work and must not change its result
        import select

        # alternately `info`'s and `project`'s library twins (project: PCA, once there are
        # enough checkpoints to embed)
        while not select.select([server.proc.stdout], [], [], 0.02)[0]:
            if ref.exists():
                try:
                    seen = _checkpoints(ref)
                    report.live_checkpoints_seen.append(seen)
                    report.live_reads += 1
                    if seen >= 8 and report.live_reads % 2 == 0:
                        from trajviz.trajectories.embedding import embed

                        embed([ref], method="pca", seed=0)
                        report.live_projections += 1
                except Exception as exc:  # noqa: BLE001 - any failure is a finding
                    report.failures.append(f"live read failed: {type(exc).__name__}: {exc}")
        rc = int(json.loads(server.proc.stdout.readline())["rc"])
        duration = time.monotonic() - t0
        if rc != 0:
            raise RuntimeError(f"reference run failed (rc {rc}): "
                               + (workdir / "reference.log").read_text()[-2000:])
        seen = report.live_checkpoints_seen
        if any(b < a for a, b in zip(seen, seen[1:])):
            report.failures.append(f"live reads saw checkpoints go backwards: {seen}")
        log(f"reference: {duration:.1f} s, {report.live_reads} live reads")
        # the same run again without slowed writes: its duration times the random kills, and
        # it must be identical to the reference (live reads and write delays change nothing)
        if plain_run:
            plain = workdir / "plain.h5"
            plain.unlink(missing_ok=True)
            t0 = time.monotonic()
            rc = server.run(["record", str(cfg), "-o", str(plain), "-q"], cwd=workdir,
                            log=workdir / "plain.log")
            duration = time.monotonic() - t0
            if rc != 0 or differences(plain, ref):
                report.failures.append(f"a second uninterrupted run (rc {rc}) differs from the first")
            log(f"uninterrupted run without write delays: {duration:.1f} s")
        else:
            duration *= 0.3  # rough: the reference's writes were slowed

        jpath = journal_path(out)
        while report.kills_tried < n_kills:
            mode = "in-write" if rng.random() < in_write_fraction else "random"
            # in-write kills slow every HDF5 write down to widen the window; random ones do not
            pid = server.start(["record", str(cfg), "-o", str(out), "--resume", "-q"], cwd=workdir,
                               log=workdir / f"kill{report.kills_tried}.log",
                               env=env if mode == "in-write" else {})
            report.resumes += out.exists()
            t0 = time.monotonic()
            if mode == "random":
                time.sleep(rng.uniform(0.1, 0.8 * duration))
            else:  # wait for an open transaction, a random number of transactions in
                target, seen_txn, was_open = rng.randint(1, 40), 0, False
                while time.monotonic() - t0 < 2 * duration:
                    try:
                        # pages saved in the journal: HDF5 is writing (flushing) right now
                        is_open = jpath.stat().st_size > OWNER_LEN + TXN_LEN
                    except FileNotFoundError:
                        is_open = False
                    if is_open and not was_open:
                        seen_txn += 1
                        if seen_txn >= target:
                            break
                    was_open = is_open
                    time.sleep(0.0005)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = server.wait()
            if rc == 0:  # finished before the kill: not counted; start over on a new file
                log(f"  run finished before the kill ({mode}); starting over")
                out.unlink()
                continue
            report.kills_tried += 1
            if rc != -signal.SIGKILL:
                report.failures.append(f"kill {report.kills_tried}: exit {rc}, not SIGKILL: "
                                       + (workdir / f"kill{report.kills_tried - 1}.log").read_text()[-500:])
                continue
            hot = out.exists() and read_hot_journal(out) is not None
            report.inside_write += hot
            report.before_file += not out.exists()
            problems: list[str] = []
            if out.exists():
                try:
                    problems = prefix_problems(out, ref)
                    report.with_state += resume_states(out) > 0
                except Exception as exc:  # noqa: BLE001
                    problems = [f"{type(exc).__name__}: {exc}"]
            if problems:
                report.failures.append(f"kill {report.kills_tried} ({mode}): {problems}")
            else:
                report.kills_survived += 1
            log(f"kill {report.kills_tried:>2} ({mode:<8}) after {time.monotonic() - t0:5.2f} s: "
                f"{'inside a write' if hot else 'between writes' if out.exists() else 'no file yet'}"
                f"; {'ok' if not problems else problems}")
        rc = server.run(["record", str(cfg), "-o", str(out), "--resume", "-q"], cwd=workdir,
                        log=workdir / "final.log")
        report.resumes += 1
        if rc != 0:
            report.failures.append(f"final resume failed (rc {rc}): "
                                   + (workdir / "final.log").read_text()[-1000:])
        else:
            diffs = differences(out, ref)
            report.identical = not diffs
            if diffs:
                report.failures.append(f"final file differs from the reference at {diffs[:10]}")
            if resume_states(out):
                report.failures.append("the finished file still holds a resume state")
    finally:
        if own_server:
            server.close()
    report.seconds = time.monotonic() - t_start
    return report


#: the scan the landscape kills interrupt: 4 runs x (3 sgd + 3 gaussian rows), Hessian measures
LANDSCAPE_ARGS = ["--directions", "sgd", "gaussian", "--n-directions", "3", "--points", "7",
                  "--span", "1.5", "--hessian-iters", "4", "--hutchinson-probes", "2",
                  "--bootstrap", "10", "-q"]


@dataclass
class LandscapeReport:
    kills_tried: int = 0
    kills_survived: int = 0
    inside_write: int = 0
    rows_seen: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    identical: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"landscape kills survived {self.kills_survived}/{self.kills_tried} "
                f"({self.inside_write} inside an HDF5 write); finished rows after each kill "
                f"{self.rows_seen}; final file identical to the uninterrupted scan: "
                f"{self.identical}; {self.seconds:.0f} s")


def inject_landscape(n_kills: int, workdir: Path, *, seed: int = 0, epochs: int = 2,
                     n_train: int = 80, delay: float = 0.003, in_write_fraction: float = 1.0,
                     log=print, server: ForkServer | None = None) -> LandscapeReport:
    """Record a tiny experiment, scan it once uninterrupted, then scan it again (``--resume``)
    under ``n_kills`` SIGKILLs, checking the landscape file after each (before anything repairs
    it: readers see the last complete state); compare the final file with the first scan."""
    import select

    from trajviz.store.journal import _TXN, OWNER_LEN, journal_path, read_hot_journal

    rng = random.Random(seed)
    report = LandscapeReport()
    t_start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg, exp = workdir / "fault.toml", workdir / "experiment.h5"
    cfg.write_text(TINY_TOML.format(epochs=epochs, n_train=n_train))
    own_server = server is None
    server = server or ForkServer()
    try:
        ref, out = workdir / "reference.landscape.h5", workdir / "killed.landscape.h5"
        for p in (exp, ref, out, journal_path(ref), journal_path(out)):
            p.unlink(missing_ok=True)
        if server.run(["record", str(cfg), "-o", str(exp), "-q"], cwd=workdir,
                      log=workdir / "record.log") != 0:
            raise RuntimeError("recording failed: " + (workdir / "record.log").read_text()[-2000:])
        t0 = time.monotonic()
        if server.run(["landscape", str(exp), "-o", str(ref), *LANDSCAPE_ARGS], cwd=workdir,
                      log=workdir / "reference.log") != 0:
            raise RuntimeError("reference scan failed: "
                               + (workdir / "reference.log").read_text()[-2000:])
        duration = time.monotonic() - t0
        log(f"reference scan: {duration:.1f} s")
        jpath = journal_path(out)
        env = {"TRAJVIZ_DEBUG_WRITE_DELAY": str(delay)}
        misses = 0
        while report.kills_tried < n_kills:
            mode = "in-write" if rng.random() < in_write_fraction else "random"
            pid = server.start(["landscape", str(exp), "-o", str(out), "--resume", *LANDSCAPE_ARGS],
                               cwd=workdir, log=workdir / f"kill{report.kills_tried}.log",
                               env=env if mode == "in-write" else {})
            t0 = time.monotonic()
            if mode == "random":
                time.sleep(rng.uniform(0.1, 0.8 * duration))
            else:  # the target-th transaction that overwrites existing pages
                target, seen_txn, was_open = rng.randint(1, 12), 0, False
                while (time.monotonic() - t0 < 30
                       and not select.select([server.proc.stdout], [], [], 0)[0]):  # not ended
                    try:
                        is_open = jpath.stat().st_size > OWNER_LEN + _TXN.size
                    except FileNotFoundError:
                        is_open = False
                    if is_open and not was_open:
                        seen_txn += 1
                        if seen_txn >= target:
                            break
                    was_open = is_open
                    time.sleep(0.0005)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = server.wait(pid=pid)
            if rc == 0:
                misses += 1
                if misses > n_kills + 3:  # e.g. a writer that never opens a journal transaction
                    report.failures.append(f"the scan finished before the kill {misses} times; "
                                           "no journal transaction seen?")
                    break
                log(f"  scan finished before the kill ({mode}); starting over")
                out.unlink()
                report.rows_seen.clear()
                continue
            report.kills_tried += 1
            if rc != -signal.SIGKILL:
                report.failures.append(f"kill {report.kills_tried}: exit {rc}, not SIGKILL: "
                                       + (workdir / f"kill{report.kills_tried - 1}.log").read_text()[-500:])
                continue
            hot = out.exists() and read_hot_journal(out) is not None
            report.inside_write += hot
            problems: list[str] = []
            if out.exists():
                try:
                    problems = landscape_prefix_problems(out, ref)
                    rows = landscape_rows_done(out)
                    if report.rows_seen and rows < report.rows_seen[-1]:
                        problems.append(f"{rows} finished rows, {report.rows_seen[-1]} before")
                    report.rows_seen.append(rows)
                except Exception as exc:  # noqa: BLE001 - any failure is a finding
                    problems = [f"{type(exc).__name__}: {exc}"]
            if problems:
                report.failures.append(f"kill {report.kills_tried} ({mode}): {problems}")
            else:
                report.kills_survived += 1
            log(f"kill {report.kills_tried:>2} ({mode:<8}) after {time.monotonic() - t0:5.2f} s: "
                f"{'inside a write' if hot else 'between writes' if out.exists() else 'no file yet'}"
                f", {report.rows_seen[-1:]} rows; {'ok' if not problems else problems}")
        rc = server.run(["landscape", str(exp), "-o", str(out), "--resume", *LANDSCAPE_ARGS],
                        cwd=workdir, log=workdir / "final.log")
        if rc != 0:
            report.failures.append(f"final resume failed (rc {rc}): "
                                   + (workdir / "final.log").read_text()[-1000:])
        else:
            diffs = landscape_differences(out, ref)
            report.identical = not diffs
            if diffs:
                report.failures.append(f"final file differs from the reference at {diffs[:10]}")
            if jpath.exists():
                report.failures.append(f"{jpath} left behind after the final resume")
    finally:
        if own_server:
            server.close()
    report.seconds = time.monotonic() - t_start
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=24, help="SIGKILLs to deliver (default 24)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (default 0)")
    p.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs of the config (default 4)")
    p.add_argument("--delay", type=float, default=0.002,
                   help="seconds each HDF5 write sleeps (TRAJVIZ_DEBUG_WRITE_DELAY; default 0.002)")
    p.add_argument("--quick", action="store_true", help="a smaller config (as in CI)")
    p.add_argument("--landscape", action="store_true",
                   help="kill `trajviz landscape --resume` instead of `trajviz record`")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="working folder (default: a temporary one)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.output or Path(tmp)
        if args.landscape:
            lreport = inject_landscape(args.kills, work, seed=args.seed,
                                       delay=max(args.delay, 0.003), in_write_fraction=0.75)
            print(lreport.summary())
            for failure in lreport.failures:
                print("FAILURE:", failure)
            return 0 if not lreport.failures and lreport.identical else 1
        report = inject(args.kills, work, seed=args.seed, epochs=2 if args.quick else args.epochs,
                        n_train=80 if args.quick else 120, delay=args.delay)
    print(report.summary())
    for failure in report.failures:
        print("FAILURE:", failure)
    return 0 if not report.failures and report.identical else 1


if __name__ == "__main__":
    sys.exit(main())
