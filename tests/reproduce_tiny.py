"""Tiny versions of the study files (trajviz/presets/studies), for tests: seconds, not minutes."""

from __future__ import annotations

from pathlib import Path

TRAIN = ('[base.train]\nepochs = 2\nlr = 0.1\nbatch_size = 20\n\n'
         '[base.pretrain]\nepochs = 1\nlr = 0.01\nmethods = {methods}\n\n')
DATA = ('[profiles.quick]\nset = {{ "dataset.name" = "digits", "dataset.n_train" = {n}, '
        '"dataset.n_valid" = 40, "dataset.n_test" = 40, "model.width" = 8 }}\n{extra}\n'
        '[profiles.full]\nset = {{}}\n')


def _study(name: str, findings: str, settings: list[str], methods: str = '["none", "sdae"]',
           n: int = 120, extra: str = "", seeds: str = "[0, 1, 2]", top: str = "") -> str:
    body = f'study = "{name}"\nfindings = {findings}\n{top}\n[base]\nseeds = {seeds}\n\n'
    body += TRAIN.format(methods=methods)
    for s in settings:
        sid, sets = s.split(":", 1)
        body += f'[[settings]]\nid = "{sid}"\n{sets}\n\n'
    return body + DATA.format(n=n, extra=extra)


def write_tiny_studies(directory: Path) -> Path:
    """Write the seven studies with tiny sizes into ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "depth": _study("depth", '["F1", "F2", "F3", "F5"]',
                        ['depth1:set = { "model.depth" = 1 }', 'depth2:set = { "model.depth" = 2 }']),
        "trajectories": _study("trajectories", '["F10a", "F10b", "F10c", "F10d"]',
                               ['depth2:from = "depth/depth2"']),
        "size": _study("size", '["F4"]', ['n60:set = { "dataset.n_train" = 60, "model.depth" = 1 }',
                                          'n120:set = { "dataset.n_train" = 120, "model.depth" = 1 }']),
        "width": _study("width", '["F6"]', ['w4:set = { "model.width" = 4, "model.depth" = 1 }',
                                            'w8:from = "depth/depth1"']),
        "hist": _study("hist", '["F7"]', ['depth1:set = { "model.depth" = 1 }'],
                       methods='["none", "sdae+hist", "sdae"]'),
        "partial": _study("partial", '["F8"]', ['depth2:set = { "model.depth" = 2 }'],
                          methods='["none", "sdae", "sdae+reinit=2", "sdae+reinit=1"]'),
        "landscape": _study("landscape", '["F9"]', ['depth1:set = { "model.depth" = 1 }'],
                            top='scan = { n_directions = 2, points = 11, n_examples = 50 }'),
    }
    for name, text in files.items():
        (directory / f"{name}.toml").write_text(text)
    return directory
