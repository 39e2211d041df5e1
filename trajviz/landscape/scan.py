"""Scanning the training loss around stored parameters: :func:`scan_file`.

For every selected run of a trajviz file: read its parameters (final, or a stored checkpoint),
rebuild its training data from the file's config, generate (or, when resuming, re-read) the
directions of every requested kind, evaluate 1-D scans (and 2-D grids) many alphas per pass with
:class:`~trajviz.landscape.params.PointEvaluator`, and optionally the top Hessian eigenvalue and
trace. Results go to a landscape file as they come (docs/format.md), one finished row at a time,
so an interrupted scan resumes to the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from trajviz.config import config_from_dict
from trajviz.data import load_dataset
from trajviz.errors import ConfigError, FormatError
from trajviz.landscape import directions as dirs
from trajviz.landscape.params import ParamLayout, PointEvaluator
from trajviz.landscape.results import LandscapeResult, load_result
from trajviz.progress import progress_bar
from trajviz.store import COMPLETE, DIVERGED, ExperimentFile, LandscapeWriter, probe_sha256
from trajviz.training.runner import resolve_device

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class ScanSettings:
    """What a scan computes; stored in the landscape file, and a resume must match it."""

    directions: tuple[str, ...] = ("sgd",)   # kinds: sgd, gaussian, filter, hessian, pca, toward:RUN
    n_directions: int = 7        # directions per kind (the studies: 7); toward gives 1
    span: float = 2.5            # alphas run from -span to +span (the studies: 2.5)
    points: int = 51             # alphas per direction, odd so alpha = 0 is one (the studies: 51)
    grid: bool = False           # also a points x points grid over each kind's first 2 directions
                                 # (not for toward, which gives one direction)
    split: str = "train"         # split the loss is measured on
    n_examples: int = 0          # seeded subset of the split (0 = all of it)
    seed: int = 0                # seed of directions, subset and Hessian probes
    checkpoint: int = -1         # -1 = final parameters; t >= 0 = stored checkpoint t
    sgd_batch_size: int = 10     # minibatch of each sgd direction
    hessian: bool = True         # top Hessian eigenvalue (Lanczos) and trace (Hutchinson) per run
    hessian_iters: int = 20      # Lanczos steps
    hutchinson_probes: int = 10  # Rademacher probes of the trace estimate
    dtype: str = "float32"       # dtype of scan evaluation (Hessian products run in float64)

    def __post_init__(self) -> None:
        object.__setattr__(self, "directions", tuple(self.directions))

    def validate(self) -> "ScanSettings":
        if not self.directions:
            raise ConfigError("directions: give at least one of sgd, gaussian, filter, hessian, pca, toward:RUN")
        if len(set(self.directions)) != len(self.directions):
            raise ConfigError(f"directions {list(self.directions)}: each kind may appear once")
        for d in self.directions:
            dirs.parse_kind(d)
        if self.n_directions < 1 or (self.grid and self.n_directions < 2):
            raise ConfigError(f"n_directions = {self.n_directions}: must be >= 1 (>= 2 with --grid)")
        if not self.span > 0:
            raise ConfigError(f"span = {self.span}: must be > 0")
        if self.points < 3 or self.points % 2 == 0:
            raise ConfigError(f"points = {self.points}: must be odd and >= 3, so alpha = 0 is scanned")
        if self.split not in SPLITS:
            raise ConfigError(f"split {self.split!r}: choose one of {', '.join(SPLITS)}")
        for name in ("n_examples", "seed", "hessian_iters", "hutchinson_probes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} = {getattr(self, name)}: must be >= 0")
        if self.sgd_batch_size < 1:
            raise ConfigError(f"sgd_batch_size = {self.sgd_batch_size}: must be >= 1")
        if self.hessian and (self.hessian_iters < 1 or self.hutchinson_probes < 2):
            raise ConfigError("Hessian measures need hessian_iters >= 1 and hutchinson_probes >= 2")
        if self.checkpoint < -1:
            raise ConfigError(f"checkpoint = {self.checkpoint}: -1 (final) or a checkpoint index >= 0")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype {self.dtype!r}: choose float32 or float64")
        return self

    def alphas(self) -> np.ndarray:
        """(points,) alphas from -span to +span, the middle one exactly 0."""
        a = self.span * np.linspace(-1.0, 1.0, self.points)
        a[self.points // 2] = 0.0
        return a

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _subset(n: int, k: int, seed: int) -> np.ndarray | None:
    if not k:
        return None
    if k > n:
        raise ConfigError(f"n_examples = {k} exceeds the {n} examples of the split; lower it")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EB5E7]))
    return np.sort(rng.choice(n, size=k, replace=False))


def _run_params(ef: ExperimentFile, run_id: str, checkpoint: int) -> dict[str, np.ndarray]:
    if checkpoint < 0:
        return ef.params(run_id, "final")
    traj = ef.params(run_id, "trajectory")
    t = next(iter(traj.values())).shape[0]
    if checkpoint >= t:
        raise ConfigError(f"checkpoint {checkpoint}: run {run_id!r} stores {t} checkpoints "
                          f"(0..{t - 1})")
    return {k: v[checkpoint] for k, v in traj.items()}


def _check_project_file(path: Path, ef: ExperimentFile, runs: list[str],
                        params: dict[str, dict[str, np.ndarray]]) -> tuple[Any, dict[str, Any], Any]:
    """The root config, each run's config (its own, as a sweep stores it, else the root's)
    and the data of a file written by ``trajviz record`` (or gathered by ``trajviz sweep``);
    anything else (a file of :class:`~trajviz.record.Recorder`, another model, other data) is
    refused with a one-line :class:`ConfigError` saying how to scan it, since the scan
    rebuilds the data and the sigmoid MLPs from the configs."""
    how = ("; scan_file rebuilds the project's sigmoid MLP and data from the file's config, so "
           "scan such a model from Python with trajviz.landscape.scan_model(model, loss_fn, "
           "(x, y)) (docs/landscape.md)")

    def parse(raw: dict[str, Any], where: str) -> Any:
        try:
            return config_from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"{path} was not written by `trajviz record` ({where} is not an "
                              f"experiment config: {exc}){how}") from None

    raw = ef.config
    if not {"dataset", "model"} <= set(raw):
        raise ConfigError(f"{path} was not written by `trajviz record` (its config has no dataset "
                          f"and model sections){how}")
    exp_cfg = parse(raw, "its config")
    run_cfgs = {}
    for rid in runs:
        try:
            own = json.loads(str(ef.run_attrs(rid).get("config", "") or "{}"))
        except ValueError:
            own = {}
        has_own = isinstance(own, dict) and {"dataset", "model"} <= set(own)
        run_cfgs[rid] = parse(own, f"run {rid!r}'s config") if has_own else exp_cfg
    datasets = {json.dumps(dataclasses.asdict(c.dataset), sort_keys=True): rid
                for rid, c in run_cfgs.items()}
    if len(datasets) > 1:
        raise ConfigError(f"{path}: runs {', '.join(repr(r) for r in datasets.values())} were "
                          "trained on different data; scan the runs of one data set at a time "
                          "(runs=...)")
    data_cfg = run_cfgs[runs[0]] if runs else exp_cfg
    data = load_dataset(data_cfg.dataset)
    probe_split = data.split(exp_cfg.probe.split)
    probe = probe_split.head(exp_cfg.probe.n) if 0 < exp_cfg.probe.n <= len(probe_split) else probe_split
    if probe_sha256(probe.x) != ef.probe_sha256:
        raise ConfigError(f"{path}: its probe set is not the one its config builds (another "
                          f"data set, or data changed since it was recorded){how}")
    for rid in runs:
        model = run_cfgs[rid].model
        sizes = [data.n_inputs] + [model.width] * model.depth + [data.n_classes]
        expected = {f"{2 * i}.{kind}": ((b, a) if kind == "weight" else (b,))
                    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
                    for kind in ("weight", "bias")}
        shapes = {k: tuple(np.shape(v)) for k, v in params[rid].items()}
        if shapes != expected:
            raise ConfigError(f"{path}: run {rid!r} does not hold the parameters of the MLP its "
                              f"config describes (sizes {sizes}){how}")
    return exp_cfg, run_cfgs, data


def scan_file(path: str | Path, output: str | Path, *, settings: ScanSettings = ScanSettings(),
              runs: Sequence[str] | None = None, mode: str = "create", device: str = "cpu",
              progress: bool = False) -> LandscapeResult:
    """Scan the loss around the parameters of ``runs`` (default: every run) of the trajviz file
    ``path`` written by ``trajviz record`` (the project's MLPs, whose data its config rebuilds),
    and write the results to the landscape file ``output``; returns them as read back. A file
    of any other model (written by :class:`~trajviz.record.Recorder`) is refused with a
    :class:`ConfigError`: scan such a model with :func:`~trajviz.landscape.scan_model`.

    The loss is measured on ``settings.split``; the ``sgd`` and ``hessian`` directions and the
    Hessian measures always use the training split (the same seeded subset of
    ``settings.n_examples`` examples, at most the whole split, when that is given).

    ``mode``: ``"create"`` (refuse an existing output), ``"resume"`` (keep finished rows; the
    settings must match) or ``"overwrite"``. Diverged and unfinished runs are left out with a
    warning naming them.
    """
    settings.validate()
    try:
        torch_device = resolve_device(device)
    except ConfigError as exc:
        raise ConfigError(f"device {device!r}: {str(exc).split(': ', 1)[-1]}") from None
    dtype = torch.float64 if settings.dtype == "float64" else torch.float32
    path = Path(path)
    with ExperimentFile(path) as ef:
        infos = {r.run_id: r for r in ef.runs()}
        wanted = list(runs) if runs else list(infos)
        unknown = [r for r in wanted if r not in infos]
        if unknown:
            raise ConfigError(f"run {unknown[0]!r} is not in {path}; runs there: "
                              + ", ".join(list(infos)[:12]))
        skipped = [r for r in wanted if infos[r].status == DIVERGED]
        if skipped:
            log.warning("left out diverged runs: %s", ", ".join(skipped))
        unfinished = [r for r in wanted if infos[r].status not in (COMPLETE, DIVERGED)]
        if unfinished:
            log.warning("left out unfinished runs: %s", ", ".join(unfinished))
        selected = [r for r in wanted if infos[r].status == COMPLETE]
        if not selected:
            raise ConfigError(f"{path}: no complete run to scan among {', '.join(wanted)}")
        params = {r: _run_params(ef, r, settings.checkpoint) for r in selected}
        kinds = [dirs.parse_kind(d) for d in settings.directions]
        for kind, target in kinds:
            if kind == "toward" and target not in params:
                if target not in infos:
                    raise ConfigError(f"toward:{target}: no run {target!r} in {path}")
                if infos[target].status != COMPLETE:
                    raise ConfigError(f"toward:{target}: run {target!r} is {infos[target].status}")
                params[target] = _run_params(ef, target, settings.checkpoint)
        exp_cfg, run_cfgs, data = _check_project_file(path, ef, list(params), params)
        trajectories = {}
        if any(k == "pca" for k, _ in kinds):
            for r in selected:
                traj = ef.params(r, "trajectory")
                lay = ParamLayout.from_state({k: v[0] for k, v in traj.items()})
                t = next(iter(traj.values())).shape[0]
                end = t if settings.checkpoint < 0 else settings.checkpoint + 1
                trajectories[r] = np.stack([lay.flatten({k: v[i] for k, v in traj.items()})
                                            for i in range(end)])
        source_sha = ef.probe_sha256
    split = data.split(settings.split)
    idx = _subset(len(split), settings.n_examples, settings.seed)
    xs, ys = (split.x, split.y) if idx is None else (split.x[idx], split.y[idx])
    x = torch.as_tensor(xs, dtype=dtype, device=torch_device)
    y = torch.as_tensor(ys, dtype=torch.long, device=torch_device)
    # directions and Hessian measures: the training split whatever split is scanned
    train = data.split("train")
    if settings.split == "train":
        train_idx = idx
    else:
        train_idx = _subset(len(train), min(settings.n_examples, len(train)), settings.seed)
    xt = torch.as_tensor(train.x if train_idx is None else train.x[train_idx], dtype=dtype,
                         device=torch_device)
    yt = torch.as_tensor(train.y if train_idx is None else train.y[train_idx], dtype=torch.long,
                         device=torch_device)
    # runs of a sweep may differ in depth and width: each has its own layout
    layouts = {r: ParamLayout.from_state(p) for r, p in params.items()}
    thetas = {r: layouts[r].flatten(p) for r, p in params.items()}
    for kind, target in kinds:
        other = [r for r in selected if kind == "toward" and layouts[r] != layouts[target]]
        if other:
            raise ConfigError(f"toward:{target}: run {other[0]!r} has another architecture than "
                              f"{target!r} (sizes {layouts[other[0]].sizes} and "
                              f"{layouts[target].sizes}); scan it without this direction")
    subjects = [_mlp_subject(rid, infos[rid], run_cfgs[rid], layouts[rid], thetas, trajectories,
                             x, y, xt, yt) for rid in selected]

    writer = LandscapeWriter(output, config_json=settings.to_json(), source=str(path), mode=mode)
    try:
        if idx is not None and not writer.has("examples"):
            writer.write_array("examples", idx)
        if "probe_sha256" not in writer.get_attrs("/"):
            writer.set_attrs("/", experiment_config=json.dumps(exp_cfg.to_dict(), sort_keys=True),
                             probe_sha256=source_sha)
        scan_subjects(writer, subjects, settings, progress=progress)
    finally:
        writer.close()
    return load_result(output)


@dataclass
class Subject:
    """A point of parameter space to scan around (a run of a file, or a model), and how.

    ``evaluate(directions (m, P) float32, coeffs (K, m))`` -> (loss (K,), error (K,)) at
    ``theta + coeffs @ directions``; ``directions(kind, target, settings, rng)`` -> ((n, P),
    extra attributes to store with them); ``hessian(settings, rng)`` -> (top eigenvalue, trace,
    trace's standard error) of the training loss; ``attrs``: the run group's attributes."""

    run_id: str
    n_params: int
    attrs: dict[str, Any]
    evaluate: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    directions: Callable[[str, "str | None", ScanSettings, np.random.Generator],
                         tuple[np.ndarray, dict]]
    hessian: Callable[[ScanSettings, np.random.Generator], tuple[float, float, float]]


def _mlp_subject(rid: str, info, run_cfg, layout: ParamLayout, thetas: dict[str, np.ndarray],
                 trajectories: dict[str, np.ndarray], x: torch.Tensor, y: torch.Tensor,
                 xt: torch.Tensor, yt: torch.Tensor) -> Subject:
    """A run of a project file: PointEvaluator on the scanned split, directions and Hessian
    measures on the training data (xt, yt)."""
    theta = thetas[rid]

    def evaluate(d: np.ndarray, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return PointEvaluator(layout, theta, d, x, y, dtype=x.dtype)(coeffs)

    def directions(kind: str, target: str | None, settings: ScanSettings,
                   rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        n, extra = settings.n_directions, {}
        if kind == "sgd":
            d = dirs.sgd_directions(layout, theta, xt, yt, n, rng, settings.sgd_batch_size)
        elif kind == "gaussian":
            d = dirs.gaussian_directions(layout, n, rng)
        elif kind == "filter":
            d = dirs.filter_directions(layout, theta, n, rng)
        elif kind == "hessian":
            vals, d = dirs.hessian_directions(layout, theta, xt, yt, n, rng, settings.hessian_iters)
            extra["eigenvalues"] = vals
        elif kind == "pca":
            d, extra["explained_variance"] = dirs.pca_directions(trajectories[rid], n)
        elif kind == "toward":
            d = dirs.toward_direction(theta, thetas[target])
            extra["target"] = target
        else:  # parse_kind admits only the kinds above
            raise ConfigError(f"direction kind {kind!r} has no generator")
        return d, extra

    def hessian(settings: ScanSettings, rng: np.random.Generator) -> tuple[float, float, float]:
        from trajviz.landscape.hessian import hutchinson_trace, hvp_operator, lanczos_top

        hvp = hvp_operator(layout, theta, xt, yt)
        vals, _ = lanczos_top(hvp, layout.size, 1, n_iter=settings.hessian_iters, rng=rng,
                              device=xt.device)
        trace, sem = hutchinson_trace(hvp, layout.size, n_probes=settings.hutchinson_probes,
                                      rng=rng, device=xt.device)
        return float(vals[0]), trace, sem

    return Subject(rid, layout.size, dict(group=info.group, pretrain=info.pretrain, seed=info.seed,
                                          depth=run_cfg.model.depth, width=run_cfg.model.width),
                   evaluate, directions, hessian)


def scan_subjects(writer: LandscapeWriter, subjects: Sequence[Subject], settings: ScanSettings, *,
                  progress: bool = False) -> None:
    """Scan every subject into ``writer`` (a new or resumed landscape file): the alphas, then
    per subject its loss at theta, its directions of every kind (re-read when stored), its 1-D
    rows and grid lines not yet done, and its Hessian measures. Each write is its own
    transaction, so each is checked on its own: a scan killed between two resumes with the rest."""
    alphas = settings.alphas()
    if not writer.has("alphas"):
        writer.write_array("alphas", alphas)
    kinds = [dirs.parse_kind(d) for d in settings.directions]
    n_grid = settings.points if settings.grid else 0
    per_subject = sum(1 if k == "toward" else settings.n_directions + n_grid for k, _ in kinds)
    bar = progress_bar(total=len(subjects) * per_subject, enabled=progress, desc="landscape",
                       unit="row")
    try:
        for subject in subjects:
            _scan_one(writer, subject, settings, kinds, alphas, bar, per_subject)
    finally:
        bar.close()


def _directions(writer: LandscapeWriter, key: str, kind: str, target: str | None,
                subject: Subject, settings: ScanSettings) -> np.ndarray:
    """The subject's directions of one kind: re-read when stored, else generated and stored."""
    if writer.has(key):
        d = writer.read_array(key)
        if d.ndim != 2 or d.shape[1] != subject.n_params:
            raise FormatError(f"{writer.path}: '/{key}' has shape {d.shape}, but "
                              f"{subject.run_id!r} has {subject.n_params} parameters; was the "
                              "file scanned from another model? overwrite it or use another "
                              "output file")
        return d
    rng = dirs.direction_rng(settings.seed, subject.run_id,
                             kind if target is None else f"{kind}:{target}")
    d, extra = subject.directions(kind, target, settings, rng)
    if kind == "pca" and d.shape[0] < settings.n_directions:
        log.warning("%s: its trajectory gives only %d pca directions (asked %d)",
                    subject.run_id, d.shape[0], settings.n_directions)
    d = np.asarray(d, dtype=np.float32)
    writer.write_array(key, d, kind=kind, **extra)
    return d


def _scan_one(writer: LandscapeWriter, subject: Subject, settings: ScanSettings,
              kinds: list[tuple[str, str | None]], alphas: np.ndarray, bar, per_subject: int) -> None:
    rid = subject.run_id
    key = f"runs/{rid}"
    if writer.get_attrs(key).get("status") == "complete":
        bar.update(per_subject)
        return
    if not writer.has(key):
        nll0, err0 = subject.evaluate(np.zeros((1, subject.n_params), dtype=np.float32),
                                      np.zeros((1, 1)))
        writer.set_attrs(key, **subject.attrs, n_params=subject.n_params,
                         nll_at_theta=float(nll0[0]), error_at_theta=float(err0[0]),
                         status="running")
    for (kind, target), text in zip(kinds, settings.directions):
        if kind == "toward" and target == rid:
            log.info("%s: skipping %s (the run itself)", rid, text)
            bar.update(1)
            continue
        d = _directions(writer, f"{key}/directions/{text}", kind, target, subject, settings)
        table = f"{key}/scan1d/{text}"
        writer.require_rows(table, d.shape[0], (alphas.size,), ("nll", "error"))
        done = writer.done_rows(table)
        for i in range(d.shape[0]):
            if not done[i]:
                nll, err = subject.evaluate(d[i:i + 1], alphas[:, None])
                writer.write_row(table, i, nll=nll, error=err)
            bar.update(1)
        bar.update(settings.n_directions - d.shape[0] if kind != "toward" else 0)
        if settings.grid and kind != "toward":
            if d.shape[0] < 2:
                raise ConfigError(f"{rid}: {text} gave {d.shape[0]} direction; a grid needs 2")
            table = f"{key}/scan2d/{text}"
            writer.require_rows(table, alphas.size, (alphas.size,), ("nll", "error"))
            done = writer.done_rows(table)
            for i, a in enumerate(alphas):
                if not done[i]:
                    nll, err = subject.evaluate(d[:2], np.stack([np.full_like(alphas, a), alphas],
                                                                axis=1))
                    writer.write_row(table, i, nll=nll, error=err)
                bar.update(1)
    if settings.hessian and "trace" not in writer.get_attrs(f"{key}/hessian"):
        rng = dirs.direction_rng(settings.seed, rid, "hessian-measures")
        top, trace, sem = subject.hessian(settings, rng)
        writer.set_attrs(f"{key}/hessian", top_eigenvalue=top, trace=trace, trace_sem=sem)
    writer.set_attrs(key, status="complete")
