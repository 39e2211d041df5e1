"""What a reproduction still has to train, and how long it will take: :func:`plan_reproduction`.

For every setting of the studies a profile (and ``only``) needs, the plan counts what is still
missing -- runs, and for the nets that will train (a batch with any missing run retrains whole,
:mod:`trajviz.reproduce.chunks`) their fine-tuning net-epochs, SGD updates and pre-training
layer-epochs -- from the study files and the result files already on disk. Nothing trains.

The time estimate multiplies these counts by unit costs measured on this machine in a short
calibration (:class:`Calibration`): a few fused SGD steps (:mod:`trajviz.training.fast`) of each
net shape, minibatch and batch of nets the plan contains, a few SDAE layer updates, and the
forward passes of the per-epoch evaluation. It is a lower bound of the same kind as a benchmark:
the training loop's own Python work, HDF5 writes, data loading and the landscape scans of F9 are
left out. Measured against it: the quick profile's depth study (F5, with its model selection)
was estimated at 168 CPU seconds and took 269; the small nets there make the per-step overhead
count most, the large nets of the medium and full profiles less. Units: on a CPU, CPU seconds of
one process at the torch thread count it runs with (CPU time, not wall time, so that a busy
machine does not inflate the calibration); on a GPU, wall seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from trajviz.config import ExperimentConfig, parse_method
from trajviz.reproduce.chunks import finished_in, finished_runs, run_id
from trajviz.reproduce.studies import Setting, Study, load_studies, result_path

log = logging.getLogger(__name__)

#: parameter bytes of the nets of one calibration measurement, at most (the runner's grouping
#: makes the per-net cost of big nets on a CPU independent of how many share a batch)
CALIBRATION_BYTES = {"cpu": 48 << 20, "cuda": 2 << 30}
#: seconds each calibration measurement runs for, at least
CALIBRATION_SECONDS = 0.02
EVAL_BATCH = 4096  # trajviz.training.runner.evaluate's batch
#: config keys that change no count of the plan (grid points differing only in these cost alike)
COST_FREE_KEYS = {"train.lr", "train.l2", "pretrain.lr", "pretrain.corruption", "pretrain.rbm_lr",
                  "pretrain.cd_k", "pretrain.hist_bins"}


@dataclass
class SettingPlan:
    """The missing work of one setting; ``seconds`` maps a device (``"cpu"``, ``"cuda"``) to the
    estimated seconds of one process there (absent when not calibrated)."""

    study: str
    setting: str
    path: str
    runs: int            # runs not finished
    total_runs: int      # runs the setting plans
    nets: int            # nets that will train (whole batches of nets_per_batch)
    net_epochs: int      # fine-tuning epochs summed over those nets
    updates: int         # fine-tuning SGD updates summed over those nets
    pretrain_layer_epochs: int
    pretrain_updates: int
    eval_examples: int   # examples through the forward pass at checkpoints, summed over nets
    sizes: tuple[int, ...] = ()
    batch_size: int = 1
    pretrain_batch_size: int = 1
    nets_per_batch: int = 1
    tied: bool = True
    pretrained_nets_layers: tuple[int, ...] = ()  # per trained net: layers it pre-trains
    pretrain_epochs: int = 0
    pretrain_updates_per_epoch: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    parts: list["SettingPlan"] = field(default_factory=list)  # a selection row: its grid points

    @property
    def key(self) -> str:
        return f"{self.study}/{self.setting}"


@dataclass
class ReproducePlan:
    """A plan: its settings, the calibration it used, and totals."""

    profile: str
    findings: list[str]
    results_dir: str
    settings: list[SettingPlan]
    devices: list[str]
    calibration_seconds: dict[str, float] = field(default_factory=dict)
    threads: int = 1

    def total(self, name: str) -> float:
        return sum(getattr(s, name) for s in self.settings)

    def seconds(self, device: str) -> float:
        return sum(s.seconds.get(device, 0.0) for s in self.settings)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["totals"] = {k: self.total(k) for k in ("runs", "nets", "net_epochs", "updates",
                                                  "pretrain_layer_epochs", "pretrain_updates")}
        d["totals"]["seconds"] = {dev: self.seconds(dev) for dev in self.devices}
        return d

    def format(self) -> str:
        """The plan as a table, a totals line and the estimate."""
        head = (f"{'study/setting':<26} {'runs':>7} {'net-epochs':>11} {'updates':>15} "
                f"{'pre-train layer-epochs':>22}" + "".join(f" {'est. s (' + d + ')':>16}"
                                                            for d in self.devices))
        lines = [f"plan: profile {self.profile}, findings {','.join(self.findings)}, "
                 f"results in {self.results_dir}", head]
        for s in self.settings:
            lines.append(f"{s.key:<26} {s.runs:>7,} {s.net_epochs:>11,} {s.updates:>15,} "
                         f"{s.pretrain_layer_epochs:>22,}"
                         + "".join(f" {s.seconds.get(d, float('nan')):>16,.0f}" for d in self.devices))
        lines.append(f"{'total':<26} {int(self.total('runs')):>7,} {int(self.total('net_epochs')):>11,} "
                     f"{int(self.total('updates')):>15,} {int(self.total('pretrain_layer_epochs')):>22,}"
                     + "".join(f" {self.seconds(d):>16,.0f}" for d in self.devices))
        if not self.total("nets"):
            lines.append("nothing left to train: every run is finished")
        for d in self.devices:
            secs = self.seconds(d)
            what = "CPU seconds" if d == "cpu" else "seconds"
            lines.append(f"estimate on {d}: {secs:,.0f} {what} ({human(secs)}) in one process at "
                         f"{self.threads} torch thread(s); calibrated in "
                         f"{self.calibration_seconds.get(d, 0):.1f} s"
                         + ("" if d != "cpu" else f"; over N worker processes (--ray), about "
                            f"1/N of it (16 workers: {human(secs / 16)})"))
        if not self.devices:
            lines.append("no time estimate (calibration skipped)")
        lines.append("not counted: HDF5 writes, data loading, the F9 landscape scans, findings, "
                     "figures")
        return "\n".join(lines)


def human(seconds: float) -> str:
    """``"3.2 h"``, ``"41 days"``: a duration a person reads at a glance."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


# --------------------------------------------------------------------------- counting


def setting_plan(setting: Setting, results_dir: str | Path) -> SettingPlan:
    """Count the missing work of one setting (its config must not be a reuse)."""
    assert setting.config is not None
    return config_plan(setting.study, setting.id, setting.config,
                       finished_runs(setting, results_dir), result_path(Path(results_dir), setting))


def selection_plan(study: Study, setting: Setting, results_dir: str | Path) -> SettingPlan | None:
    """The missing model-selection runs of one setting (every grid point of every method,
    :mod:`trajviz.reproduce.selection`), as one row whose ``parts`` are the grid points."""
    from trajviz.reproduce.selection import _selection_config, selection_file

    if study.select is None or setting.config is None:
        return None
    parts = []
    fresh: dict[tuple, SettingPlan] = {}  # a grid point not yet started costs what its like do
    for method in setting.config.pretrain.methods:
        for point in study.select.points(method):
            path = selection_file(Path(results_dir), study, setting, method, point)
            like = (method,) + tuple((k, v) for k, v in point.items() if k not in COST_FREE_KEYS)
            if not path.exists() and like in fresh:
                parts.append(fresh[like])
                continue
            cfg = _selection_config(setting, method, point, study.select.seeds)
            part = config_plan(setting.study, setting.id, cfg, finished_in(path), path)
            if not path.exists():
                fresh[like] = part
            parts.append(part)
    total = SettingPlan(study=setting.study, setting=f"{setting.id} (select)",
                        path=str(Path(parts[0].path).parent.parent), runs=0, total_runs=0, nets=0,
                        net_epochs=0, updates=0, pretrain_layer_epochs=0, pretrain_updates=0,
                        eval_examples=0, parts=parts)
    for name in ("runs", "total_runs", "nets", "net_epochs", "updates", "pretrain_layer_epochs",
                 "pretrain_updates", "eval_examples"):
        setattr(total, name, sum(getattr(p, name) for p in parts))
    return total


def config_plan(study: str, setting_id: str, cfg: ExperimentConfig, done: set[str],
                path: Path) -> SettingPlan:
    """Count what recording ``cfg`` into ``path`` still trains, ``done`` being its finished runs."""
    from trajviz.data import dataset_shape

    expected = {run_id(m, s) for m in cfg.pretrain.methods for s in cfg.seeds}
    done = set(done) & expected
    n = cfg.engine.nets_per_batch
    seeds = list(cfg.seeds)
    batches = [(m, seeds[i:i + n]) for m in cfg.pretrain.methods for i in range(0, len(seeds), n)
               if any(run_id(m, s) not in done for s in seeds[i:i + n])]
    shape = dataset_shape(cfg.dataset)
    n_train, n_valid, n_test = shape.sizes
    sizes = (shape.n_inputs,) + (cfg.model.width,) * cfg.model.depth + (shape.n_classes,)
    per_epoch = -(-n_train // cfg.train.batch_size)
    pre_per_epoch = -(-n_train // cfg.pretrain.batch_size)
    n_ckpt = _n_checkpoints(per_epoch, cfg)
    probe_n = cfg.probe.n or shape.sizes[("train", "valid", "test").index(cfg.probe.split)]
    layers = tuple(parse_method(m).pretrained_layers(cfg.model.depth) for m, b in batches
                   for _ in b)
    nets = len(layers)
    return SettingPlan(
        study=study, setting=setting_id, path=str(path),
        runs=len(expected - done), total_runs=len(expected), nets=nets,
        net_epochs=nets * cfg.train.epochs, updates=nets * cfg.train.epochs * per_epoch,
        pretrain_layer_epochs=sum(layers) * cfg.pretrain.epochs,
        pretrain_updates=sum(layers) * cfg.pretrain.epochs * pre_per_epoch,
        eval_examples=nets * n_ckpt * (n_train + n_valid + n_test + probe_n),
        sizes=sizes, batch_size=cfg.train.batch_size, pretrain_batch_size=cfg.pretrain.batch_size,
        nets_per_batch=min(n, len(seeds)), tied=cfg.pretrain.tied,
        pretrained_nets_layers=layers, pretrain_epochs=cfg.pretrain.epochs,
        pretrain_updates_per_epoch=pre_per_epoch)


def _n_checkpoints(per_epoch: int, cfg: ExperimentConfig) -> int:
    """Checkpoints of one run: as :func:`trajviz.training.runner.checkpoint_steps` takes them."""
    total = per_epoch * cfg.train.epochs
    steps = {0} | {per_epoch * e for e in range(1, cfg.train.epochs + 1)}
    if cfg.record.every_steps:
        steps |= set(range(cfg.record.every_steps, total + 1, cfg.record.every_steps))
    return len(steps)


def plan_settings(studies: Sequence[Study], results_dir: str | Path) -> list[SettingPlan]:
    """:func:`setting_plan` of every setting of ``studies`` that trains (reuses are skipped),
    each preceded by its model selection's :func:`selection_plan` when the study selects."""
    out = []
    for st in studies:
        for s in st.settings:
            if s.source is None:
                sel = selection_plan(st, s, results_dir)
                out += ([sel] if sel is not None else []) + [setting_plan(s, results_dir)]
    return out


# --------------------------------------------------------------------------- calibration


class Calibration:
    """Measured unit costs on one device, cached by shape: seconds per net of one fine-tuning
    update, one SDAE layer update (with the forward pass through the layers below), and one
    example through the evaluation forward pass."""

    def __init__(self, device: str = "cpu", seconds: float = CALIBRATION_SECONDS):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.target = seconds
        self.cache: dict[tuple, float] = {}
        self.spent = 0.0

    def _nets(self, sizes: Sequence[int], k: int, tied: bool = True) -> int:
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        budget = CALIBRATION_BYTES["cuda" if self.device.type == "cuda" else "cpu"]
        return max(1, min(k, budget // (4 * n_params)))

    def _time(self, fn, per_call: int) -> float:
        """Seconds of ``fn`` per unit, ``per_call`` units per call: calls doubled until
        :attr:`target` seconds are spent, after one warm-up call."""
        cuda = self.device.type == "cuda"
        sync = self.torch.cuda.synchronize if cuda else (lambda: None)
        # CPU time on a CPU (the work, whatever else the machine runs), wall time on a GPU
        clock = time.perf_counter if cuda else time.process_time
        t_all = time.perf_counter()
        t0 = clock()
        fn()  # warm-up: buffers, kernels; also sizes the timed round
        sync()
        first = max(clock() - t0, 1e-6)
        calls = max(1, min(1 << 12, int(self.target / first)))
        t0 = clock()
        for _ in range(calls):
            fn()
        sync()
        elapsed = clock() - t0
        self.spent += time.perf_counter() - t_all
        return elapsed / (calls * per_call)

    def _net(self, sizes: Sequence[int], k: int):
        """K nets of these sizes with weights of the init's scale (values do not matter here)."""
        from trajviz.training.nets import StackedMLP

        torch = self.torch
        g = torch.Generator().manual_seed(0)
        weights = [((torch.rand(k, a, b, generator=g) * 2 - 1) / a ** 0.5).to(self.device)
                   for a, b in zip(sizes[:-1], sizes[1:])]
        biases = [torch.zeros(k, 1, b, device=self.device) for b in sizes[1:]]
        return StackedMLP(weights, biases)

    def finetune_update(self, sizes: Sequence[int], batch: int, k: int) -> float:
        """Seconds per net of one fused fine-tuning update (FinetuneStep.run, as the runner)."""
        k = self._nets(sizes, k)
        key = ("ft", tuple(sizes), batch, k)
        if key not in self.cache:
            from trajviz.training.fast import FinetuneStep

            torch = self.torch
            g = torch.Generator().manual_seed(0)
            n = max(256, 8 * batch)
            x = torch.rand(n, sizes[0], generator=g).to(self.device)
            y = torch.randint(0, sizes[-1], (n,), generator=g).to(self.device)
            idxs = [torch.randint(0, n, (k, batch), generator=g).to(self.device) for _ in range(4)]
            step = FinetuneStep(self._net(sizes, k), lr=1e-3)
            self.cache[key] = self._time(lambda: step.run(x, y, idxs), len(idxs) * k)
        return self.cache[key]

    def sdae_update(self, sizes: Sequence[int], layer: int, batch: int, k: int, tied: bool) -> float:
        """Seconds per net of one SDAE update of hidden layer ``layer`` (0-based), including the
        forward pass of its clean input through the layers below."""
        d, h = sizes[layer], sizes[layer + 1]
        k = self._nets([d, h, d], k)
        key = ("sdae", d, h, batch, k, tied)
        if key not in self.cache:
            from trajviz.training.fast import SDAEStep

            torch = self.torch
            net = self._net([d, h], k)
            c = torch.zeros(k, 1, d, device=self.device)
            w_dec = None if tied else net.weights[0].transpose(1, 2).contiguous()
            step = SDAEStep(net.weights[0], net.biases[0], c, w_dec, lr=1e-4)
            g = torch.Generator().manual_seed(0)
            n = max(256, 8 * batch)
            x = torch.rand(n, d, generator=g).to(self.device)
            idxs = [torch.randint(0, n, (k, batch), generator=g).to(self.device) for _ in range(4)]
            self.cache[key] = self._time(
                lambda: step.run(x, idxs, [], lambda clean, part: clean * 0.75), len(idxs) * k)
        return self.cache[key] + sum(self.layer_forward(sizes[j], sizes[j + 1], batch, k)
                                     for j in range(layer))

    def layer_forward(self, d: int, h: int, batch: int, k: int) -> float:
        """Seconds per net of one sigmoid layer's forward pass on a minibatch (pre-training
        passes each minibatch through the trained layers below the one it trains)."""
        k = self._nets([d, h], k)
        key = ("fwd", d, h, batch, k)
        if key not in self.cache:
            torch = self.torch
            net = self._net([d, h], k)
            x = torch.rand(k, batch, d, generator=torch.Generator().manual_seed(0)).to(self.device)
            w, b = net.weights[0], net.biases[0]
            self.cache[key] = self._time(lambda: torch.sigmoid(torch.matmul(x, w) + b), k)
        return self.cache[key]

    def eval_example(self, sizes: Sequence[int], k: int) -> float:
        """Seconds per net and example of the checkpoint evaluation's forward pass."""
        k = self._nets(sizes, k)
        key = ("eval", tuple(sizes), k)
        if key not in self.cache:
            torch = self.torch
            net = self._net(sizes, k)
            n = 64 if self.device.type == "cpu" else EVAL_BATCH
            x = torch.rand(n, sizes[0], generator=torch.Generator().manual_seed(0)).to(self.device)

            def forward():
                with torch.no_grad():
                    torch.softmax(net.logits(x), -1)

            self.cache[key] = self._time(forward, n * k)
        return self.cache[key]

    def estimate(self, p: SettingPlan) -> float:
        """Estimated seconds of one setting's missing work on this device."""
        if p.parts:
            return sum(self.estimate(part) for part in p.parts)
        if not p.nets:
            return 0.0
        sizes, k = p.sizes, p.nets_per_batch
        t = p.updates * self.finetune_update(sizes, p.batch_size, k)
        t += p.eval_examples * self.eval_example(sizes, k)
        updates_per_layer = p.pretrain_epochs * p.pretrain_updates_per_epoch
        for n_layers in p.pretrained_nets_layers:
            for layer in range(n_layers):
                t += updates_per_layer * self.sdae_update(sizes, layer, p.pretrain_batch_size, k,
                                                          p.tied)
        return t


def available_devices() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when torch sees a GPU."""
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def plan_reproduction(*, profile: str = "quick", only: str | Sequence[str] | None = None,
                      output: str | Path = "reproduce-quick", studies_dir: str | Path | None = None,
                      devices: Sequence[str] | None = (), calibration_seconds: float = CALIBRATION_SECONDS
                      ) -> ReproducePlan:
    """What ``reproduce`` with these arguments would still train, and an estimate of its time.

    ``devices``: where to calibrate (``"cpu"``, ``"cuda"``); None = every device present; an
    empty sequence = no calibration, counts only. Trains nothing; writes nothing.
    """
    from trajviz.reproduce.findings import FINDINGS, parse_only
    from trajviz.reproduce.run import needed_studies

    ids = parse_only(",".join(only) if isinstance(only, (list, tuple)) else only)
    studies = load_studies(studies_dir, profile)  # None: the packaged study files
    plan_studies = needed_studies(studies, dict.fromkeys(s for i in ids for s in FINDINGS[i].studies))
    results_dir = Path(output) / "results"
    settings = plan_settings(plan_studies, results_dir)
    devices = available_devices() if devices is None else list(devices)
    threads = 1
    spent: dict[str, float] = {}
    if devices:
        import torch

        threads = torch.get_num_threads()
        for device in devices:
            cal = Calibration(device, calibration_seconds)
            t0 = time.perf_counter()
            for s in settings:
                s.seconds[device] = cal.estimate(s)
            spent[device] = time.perf_counter() - t0
            log.info("calibrated %d unit costs on %s in %.1f s", len(cal.cache), device, spent[device])
    return ReproducePlan(profile=profile, findings=ids, results_dir=str(results_dir),
                         settings=settings, devices=devices, calibration_seconds=spent,
                         threads=threads)
