"""The built wheel, installed into a fresh virtual environment outside the repository, runs the
main job from an empty folder: what a `pip install trajviz` user gets.

The wheel is built from a copy of the package's sources (pyproject.toml, README.md, trajviz/),
installed by pip into a new venv (``--no-deps``), and given its dependencies through a folder
that links exactly the distributions its metadata requires (transitively) from this
environment: no torch download, and nothing else of this environment (pytest, Ray, the
repository) is visible there, so an undeclared dependency or a file missing from the wheel fails
the test. ``pip check`` in the new venv verifies the declared versions. About a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the built-in experiment at a tiny size: seconds
TINY_RECORD = ["--set", "seeds=[0]", "--set", "dataset.n_train=100", "--set", "dataset.n_valid=40",
               "--set", "dataset.n_test=40", "--set", "model.width=8", "--set", "pretrain.epochs=1",
               "--set", "train.epochs=1", "--set", "probe.n=40"]


def _package_files() -> list[str]:
    """Every file the package holds in the repository, as wheel paths (no caches)."""
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "trajviz").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "trajviz", src / "trajviz",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)]
    try:  # the build backend of this environment when it is recent enough: no download
        if int(metadata.version("setuptools").split(".")[0]) >= 77:
            cmd.insert(4, "--no-build-isolation")
    except metadata.PackageNotFoundError:
        pass
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("trajviz-*.whl")
    return wheel


def _required(wheel: Path) -> list[metadata.Distribution]:
    """The distributions the wheel's core requirements need, transitively (no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(name).decode()
    todo = [line.split(":", 1)[1].strip() for line in meta.splitlines()
            if line.startswith("Requires-Dist:")]
    seen: dict[str, metadata.Distribution] = {}
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[key] = dist
        todo += [r for r in (dist.requires or [])]
        for extra in req.extras:  # e.g. a dependency's own extra that the wheel asks for
            todo += [r for r in (dist.requires or []) if f'extra == "{extra}"' in r]
    return list(seen.values())


def _deps_folder(dists: list[metadata.Distribution], folder: Path) -> None:
    """Links to the top-level files and folders of ``dists`` (their code and dist-info)."""
    folder.mkdir()
    for dist in dists:
        for top in {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}:
            link = folder / top
            if not link.exists():
                link.symlink_to(Path(dist.locate_file(top)).resolve())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    # nothing of this environment's paths (PYTHONPATH pointing at a checkout) reaches the new venv
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env=env).stdout.strip()
    _deps_folder(_required(wheel), tmp / "deps")
    Path(purelib, "_trajviz_test_deps.pth").write_text(str(tmp / "deps") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run(pip + ["install", "-q", "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300, env=env)
    check = subprocess.run(pip + ["check"], capture_output=True, text=True, timeout=300, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    work = tmp / "work"  # an empty folder outside the repository
    work.mkdir()
    return wheel, venv, env, work


def _run(installed, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    _, venv, env, work = installed
    res = subprocess.run([str(venv / "bin" / "trajviz"), *args], capture_output=True, text=True,
                         env=env, cwd=work, timeout=timeout)
    assert res.returncode == 0, f"trajviz {' '.join(args)}: {res.stderr[-3000:]}"
    return res


@pytest.mark.wheel
def test_wheel_holds_every_package_file(installed):
    wheel = installed[0]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert set(_package_files()) <= names  # modules, presets, studies, any templates
    studies = {n for n in names if n.startswith("trajviz/presets/studies/") and n.endswith(".toml")}
    assert len(studies) >= 7 and "trajviz/presets/default.toml" in names
    assert "trajviz = trajviz.cli:main" in entry_points


@pytest.mark.wheel
def test_installed_wheel_runs_the_main_job_from_an_empty_folder(installed):
    _, venv, env, work = installed
    from trajviz import __version__

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import trajviz; print(trajviz.__file__)"],
                           capture_output=True, text=True, env=env, cwd=work, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv)  # the wheel's copy, not the repository's
    assert _run(installed, "--version").stdout.strip() == f"trajviz {__version__}"

    _run(installed, "record", *TINY_RECORD, "-q")  # the built-in default -> runs/default.h5
    assert (work / "runs" / "default.h5").is_file()

    _run(installed, "reproduce", "--profile", "tiny", "--only", "F5", "-o", "out/", "-q")
    report = (work / "out" / "report.md").read_text()
    assert "F5" in report
    findings = json.loads((work / "out" / "findings.json").read_text())
    assert [f["id"] for f in findings["findings"]] == ["F5"]

    info = _run(installed, "info", "--runs", "out/results/depth/depth1.h5").stdout
    assert "experiment 'depth-depth1'" in info and "sdae" in info and "nan" not in info

    # F5's analysis script of the repository, run by the installed trajviz from the same folder
    from trajviz.reproduce.figures import FIGURES

    name = next(f.name for f in FIGURES if "F5" in f.findings)
    script = ROOT / "analysis" / f"{name}.py"
    res = subprocess.run([str(venv / "bin" / "python"), str(script), "out", "--profile", "tiny",
                          "-o", "figs", "-q"], capture_output=True, text=True, env=env, cwd=work,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    figures = list((work / "figs").iterdir())
    assert figures and all(p.name.startswith(name) and p.stat().st_size > 1000 for p in figures)


def test_ci_fails_a_test_that_skips_for_a_required_extra(tmp_path):
    """`make test` sets TRAJVIZ_TEST_EXTRAS: a skip for one of those extras is a failure there."""
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\n\ndef test_probe():\n"
        "    pytest.importorskip('no_such_module', reason=\"pip install 'trajviz[ray]'\")\n")

    def pytest_with(extras: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, TRAJVIZ_TEST_EXTRAS=extras,
                   PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                               str(tmp_path / "test_probe.py")], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    assert pytest_with("").returncode == 0  # outside CI: a plain skip
    assert pytest_with("test").returncode == 0
    res = pytest_with("test,ray")
    assert res.returncode == 1 and "missing extra" in res.stdout
