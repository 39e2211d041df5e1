"""Open a page in headless Chromium (Debian's `chromium`): a screenshot, the console errors, and the
hover label plotly shows for one point, read back from the rendered DOM."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

#: installed by `make test` (apt-get install chromium) when missing
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--virtual-time-budget=8000")

# runs before the page's own scripts: records uncaught errors and console.error calls
_WATCH = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
const __consoleError = console.error;
console.error = (...a) => { window.__errors.push(a.map(String).join(' ')); __consoleError(...a); };
</script>"""
# runs after them: hovers point POINT of trace TRACE of the first plot and writes what it saw
_HOVER = """<script>
setTimeout(() => {
  const out = document.createElement('pre'); out.id = 'trajviz-probe';
  const report = {errors: window.__errors, plots: 0, hover: []};
  try {
    const plots = document.querySelectorAll('.js-plotly-plot');
    report.plots = plots.length;
    report.svg = document.querySelectorAll('.js-plotly-plot .main-svg').length;
    Plotly.Fx.hover(plots[0], [{curveNumber: TRACE, pointNumber: POINT}]);
    report.hover = Array.from(document.querySelectorAll('.hoverlayer .hovertext'))
                        .map(n => n.textContent);
  } catch (e) { report.errors.push(String(e)); }
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
}, 1000);
</script>"""


def chromium() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is needed for the page tests: `apt-get install chromium` "
                "(make test installs it)")


def probe_page(page: Path, tmp: Path, *, trace: int = 0, point: int = 0) -> dict:
    """Render ``page``; returns {"errors": [...], "plots": n, "svg": n, "hover": [texts]}."""
    text = page.read_text(encoding="utf-8")
    probed = tmp / f"probe-{page.name}"
    hover = _HOVER.replace("TRACE", str(trace)).replace("POINT", str(point))
    probed.write_text(text.replace("<head>", "<head>" + _WATCH, 1).replace("</body>", hover + "</body>"),
                      encoding="utf-8")
    out = subprocess.run([chromium(), *FLAGS, "--dump-dom", probed.as_uri()], capture_output=True,
                         text=True, timeout=120)
    m = re.search(r'<pre id="trajviz-probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"the page did not run its scripts; chromium said: {out.stderr[-500:]}"
    import html

    return json.loads(html.unescape(m.group(1)))


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1000, 760)) -> np.ndarray:
    """A screenshot of ``page`` as an (H, W, channels) float array in [0, 1]."""
    import matplotlib.image as mpimg

    subprocess.run([chromium(), *FLAGS, f"--window-size={size[0]},{size[1]}",
                    f"--screenshot={png}", page.as_uri()], capture_output=True, timeout=120,
                   check=True)
    return mpimg.imread(png)


def inked_fraction(image: np.ndarray) -> float:
    """Fraction of pixels that are not (near) white."""
    rgb = image[..., :3]
    return float(np.mean(rgb.min(axis=-1) < 0.9))


def coloured_fraction(image: np.ndarray) -> float:
    """Fraction of clearly coloured (not grey) pixels: the data, not axes and text."""
    rgb = image[..., :3]
    return float(np.mean(rgb.max(axis=-1) - rgb.min(axis=-1) > 0.25))
