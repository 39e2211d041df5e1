"""Interactive pages (plotly) rendered in a real browser, headless Chromium: they draw, raise no
console error, and show the hover data a reader needs (run, epoch, errors); equal axes in every
embedding figure."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from browser import coloured_fraction, inked_fraction, probe_page, screenshot
from conftest import TINY
from synthetic_trajectories import two_groups, write_experiment
from trajviz.cli import main
from trajviz.trajectories import Embedding, embed


@pytest.fixture(scope="module")
def emb_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("interactive")
    src = write_experiment(d / "two.h5", two_groups(n_runs=4, T=6), errors=True)
    emb = embed([src], method="pca")
    return emb.save(d / "two.emb.h5")


def test_embedding_keeps_each_points_metrics(emb_file):
    emb = Embedding.load(emb_file)
    assert set(emb.metrics) == {"train_nll", "train_error", "test_error"}
    # run b-1 is the 6th run written (index 5): test error at checkpoint 3 is 0.6 / 4 + 0.005
    i = np.flatnonzero((emb.run == "b-1") & (emb.checkpoint == 3))[0]
    assert emb.metrics["test_error"][i] == pytest.approx(0.155)


def test_trajectories_page_renders_with_hover_data(emb_file, tmp_path):
    page = tmp_path / "traj.html"
    assert main(["plot", "trajectories", str(emb_file), "--html", "-o", str(page), "-q"]) == 0
    text = page.read_text()
    assert "<script src=" not in text  # plotly.js inlined: opens offline
    # trace 0 is group a's lines; its point 0 is run a-0 at checkpoint 0
    seen = probe_page(page, tmp_path, trace=0, point=0)
    assert seen["errors"] == [] and seen["plots"] == 1 and seen["svg"] >= 1
    hover = " ".join(seen["hover"])
    for want in ("run a-0", "group a", "epoch 0", "checkpoint 0", "train error 0.5",
                 "test error 0.6"):
        assert want in hover, hover
    image = screenshot(page, tmp_path / "traj.png")
    # drawn, not a blank page (a sparse scatter inks ~1% of a 1000 x 760 page, its points ~0.3%)
    assert inked_fraction(image) > 0.005 and coloured_fraction(image) > 0.001


def test_trajectories_figure_has_groups_slider_and_equal_axes(emb_file):
    from trajviz.plots.interactive import trajectories_figure

    fig = trajectories_figure(Embedding.load(emb_file))
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == ["a (4 runs)", "b (4 runs)"]
    assert {t.legendgroup for t in fig.data} == {"a", "b"}  # a legend click hides all of a group
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    assert len(fig.frames) == 6 and len(fig.layout.sliders[0].steps) == 6
    # frame 5 puts each run's marker at its last checkpoint
    emb = Embedding.load(emb_file)
    last_a = [np.flatnonzero((emb.run == f"a-{r}") & (emb.checkpoint == 5))[0] for r in range(4)]
    np.testing.assert_allclose(fig.frames[5].data[0].x, emb.coords[last_a, 0])


def test_landscape_page_renders_curves_and_grid(tmp_path):
    from trajviz.config import config_from_dict
    from trajviz.landscape import ScanSettings, scan_file
    from trajviz.training.runner import record_experiment

    d = copy.deepcopy(TINY)
    d["seeds"] = [0]
    d["pretrain"]["methods"] = ["none"]
    src = record_experiment(config_from_dict(d), tmp_path / "tiny.h5")
    scan = tmp_path / "ls.h5"
    scan_file(src, scan, settings=ScanSettings(directions=("filter",), n_directions=2, points=5,
                                               span=1.0, hessian=False, grid=True))
    page = tmp_path / "ls.html"
    assert main(["plot", "landscape", str(scan), "--html", "-o", str(page), "-q"]) == 0
    seen = probe_page(page, tmp_path, trace=0, point=2)
    assert seen["errors"] == [] and seen["plots"] == 2  # 1-D curves, one grid (surface + contours)
    hover = " ".join(seen["hover"])
    assert "run none-seed0" in hover and "filter direction 0" in hover and "alpha 0" in hover
    image = screenshot(page, tmp_path / "ls.png")
    assert inked_fraction(image) > 0.005 and coloured_fraction(image) > 0.001


def test_html_output_checks(emb_file, tmp_path, capsys):
    # an .html output implies --html; --html with a figure suffix is refused in one line
    assert main(["plot", "trajectories", str(emb_file), "-o", str(tmp_path / "a.html"), "-q"]) == 0
    assert main(["plot", "trajectories", str(emb_file), "--html", "-o", str(tmp_path / "a.png"),
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert ".html" in err and len(err.strip().splitlines()) == 1
    assert main(["plot", "trajectories", str(emb_file), "-o", str(tmp_path / "a.html"), "-q"]) == 1
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("dims", [2, 3])
def test_every_embedding_figure_has_equal_axes(tmp_path, dims):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trajviz.plots.studies import trajectories
    from trajviz.plots.trajectories import plot_trajectories

    src = write_experiment(tmp_path / "two.h5", two_groups(n_runs=3, T=4))
    emb = embed([src], method="pca", dims=dims)
    emb.coords[:, 0] *= 4.0  # a cloud 4x wider than tall must be drawn so
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d" if dims == 3 else None)
    plot_trajectories(ax, emb)
    if dims == 2:
        fig.canvas.draw()
        assert ax.get_aspect() == 1.0
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        w, h = ax.get_window_extent().width, ax.get_window_extent().height
        assert (x1 - x0) / w == pytest.approx((y1 - y0) / h, rel=1e-3)  # one unit, one length
        ax2 = fig.add_subplot(2, 2, 4)
        trajectories(ax2, emb.coords, [(g, idx) for g, _, idx in emb.trajectories()])
        assert ax2.get_aspect() == 1.0
    else:
        box = np.asarray(ax.get_box_aspect())
        span = np.ptp(emb.coords, axis=0)
        np.testing.assert_allclose(box / box[0], span / span[0], rtol=1e-6)
    plt.close(fig)


def test_readme_python_path_from_a_file_to_figures_runs(tmp_path, monkeypatch):
    """README's "From a file to a picture, in Python" block, run as written on a small file."""
    import re
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"### From a file to a picture, in Python\n\n```python\n(.*?)```", readme,
                      re.S).group(1)
    assert len(block.strip().splitlines()) == 5
    write_experiment(tmp_path / "default.h5", two_groups(n_runs=3, T=4))
    monkeypatch.chdir(tmp_path)
    code = block.replace('"runs/default.h5"', '"default.h5"').replace('method="tsne"', 'method="pca"')
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "tsne.pdf").stat().st_size > 1000
    assert "plotly" in (tmp_path / "tsne.html").read_text()[:20000].lower()


def test_help_lists_the_python_entry_points():
    import trajviz

    doc = trajviz.__doc__
    for name in ("Recorder", "embed", "Embedding", "divergence_table", "landscape", "reproduce"):
        assert name in doc
    assert callable(trajviz.embed) and trajviz.Embedding.__name__ == "Embedding"


def test_report_embeds_interactive_figures_before_the_long_tables(emb_file, tmp_path):
    from trajviz.plots.interactive import trajectories_figure, write_html
    from trajviz.reproduce.findings import REPRODUCED, FindingResult
    from trajviz.reproduce.report import ReportMeta, write_report

    page = write_html(trajectories_figure(Embedding.load(emb_file)),
                      tmp_path / "figures" / "trajectories_interactive.html")
    rows = [{"epoch": i, "x": i} for i in range(41)]
    res = FindingResult(id="F10", claim="c", statistic="s", unit="", delta=0.1, value=1.0, lo=0.5,
                        hi=1.5, verdict=REPRODUCED, reference="", details=rows)
    meta = ReportMeta(profile="quick", command="c", version="0",
                      figures={"trajectories_interactive": [page]},
                      captions={"trajectories_interactive": "Interactive."},
                      figure_findings={"trajectories_interactive": ("F10",)})
    md, html_path, _ = write_report([res], meta, tmp_path)
    html = html_path.read_text()
    assert html.count("Plotly.newPlot") == 1 and html.count("plotly.js v") == 1  # inlined once
    assert html.index("Plotly.newPlot") < html.index("<td class=''>40</td>")  # figure, then table
    assert "(figures/trajectories_interactive.html)" in md.read_text()
    seen = probe_page(html_path, tmp_path, trace=0, point=0)
    assert seen["errors"] == [] and "run a-0" in " ".join(seen["hover"])
