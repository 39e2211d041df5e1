"""Shapeset: 10x10 grey triangles (label 0) and squares (label 1) on a black background.

The Shapeset of Erhan et al. (2009, 2010) was produced by a generator whose files are lost, so
trajviz regenerates it procedurally and deterministically from a seed. Each image holds one
equilateral triangle or one square, with random orientation (uniform angle), size, grey level and
position, the shape lying fully inside the image. Edges are anti-aliased: a pixel's value is the
shape's grey level times the fraction of ``SUPERSAMPLE x SUPERSAMPLE`` sub-pixel points it covers.

Both classes draw their *area* from the same distribution, so the total ink of an image
(grey level x area) carries no information about its class; a classifier must look at shape.

Standard split: 50,000 train / 10,000 valid / 10,000 test, as in the studies. Each split has its
own random stream derived from ``(seed, split index)``, and within each split the two classes are
exactly balanced (one extra triangle when the size is odd).

References:
    Erhan, Bengio, Courville, Manzagol, Vincent, Bengio (2010), "Why does unsupervised pre-training
    help deep learning?", JMLR 11. Breuleux, Bengio, Vincent (2008), "Shapeset" (generator lost).
"""

from __future__ import annotations

import logging

import numpy as np

from trajviz.config import DatasetConfig
from trajviz.data.base import Dataset, Split, resolve_sizes

logger = logging.getLogger(__name__)

#: (train, valid, test) sizes of the studies.
STANDARD_SIZES = (50_000, 10_000, 10_000)
#: Image side in pixels.
SIDE = 10
#: Sub-pixel samples per pixel side used for anti-aliasing.
SUPERSAMPLE = 4
#: Range of the shapes' area in pixels^2, the same for both classes (so ink does not tell them
#: apart); 30 keeps the largest triangle (side 8.3) inside the 10x10 image at every angle.
AREA_RANGE = (9.0, 30.0)
#: Range of the shapes' grey level (background is 0).
GREY_RANGE = (0.3, 1.0)
#: Class names in label order.
CLASSES = ("triangle", "square")
#: Images rasterized at once; bounds memory to a few MB whatever n is.
CHUNK = 512


def sample_grid(height: int, width: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample coordinates: ``gx`` (width*s,) and ``gy`` (height*s,), in pixel units.

    Pixel (i, j) spans [j, j+1) x [i, i+1); its s x s samples sit at the centres of a regular grid.
    """
    offsets = (np.arange(supersample, dtype=np.float32) + 0.5) / supersample
    gx = (np.arange(width, dtype=np.float32)[:, None] + offsets).ravel()
    gy = (np.arange(height, dtype=np.float32)[:, None] + offsets).ravel()
    return gx, gy


def polygon_masks(vertices: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Which sample points lie inside each convex polygon.

    Args:
        vertices: (n, k, 2) float, (x, y) vertices of n convex polygons, either winding.
        gx: (W,) sample x coordinates; gy: (H,) sample y coordinates.

    Returns:
        (n, H, W) bool mask.

    The signed distance to an edge is linear in (x, y), so on a grid it is an outer sum of a
    row term and a column term: two array operations per edge instead of four.
    """
    v = vertices.astype(np.float32)
    # Signed area fixes the winding so that "inside" means "left of every edge" for both windings.
    nxt = np.roll(v, -1, axis=1)
    orient = np.sign(np.sum(v[..., 0] * nxt[..., 1] - nxt[..., 0] * v[..., 1], axis=1))
    n, k = v.shape[:2]
    inside = np.full((n, gy.size, gx.size), np.inf, dtype=np.float32)
    buf = np.empty_like(inside)
    for i in range(k):
        ex = (nxt[:, i, 0] - v[:, i, 0]) * orient
        ey = (nxt[:, i, 1] - v[:, i, 1]) * orient
        # cross(e, p - v_i) = ex * (py - vy) - ey * (px - vx)
        col = -ey[:, None] * (gx[None, :] - v[:, i, 0][:, None])
        row = ex[:, None] * (gy[None, :] - v[:, i, 1][:, None])
        np.add(row[:, :, None], col[:, None, :], out=buf)
        np.minimum(inside, buf, out=inside)
    return inside >= 0


def coverage_counts(mask: np.ndarray, supersample: int) -> np.ndarray:
    """Covered samples per pixel: (n, H*s, W*s) bool -> (n, H, W) uint8 counts in [0, s*s]."""
    n, hs, ws = mask.shape
    s = supersample
    # s*s strided adds beat a mean over two non-contiguous axes by an order of magnitude.
    blocks = mask.view(np.uint8).reshape(n, hs // s, s, ws // s, s)
    counts = blocks[:, :, 0, :, 0].copy()
    for i in range(s):
        for j in range(s):
            if i or j:
                counts += blocks[:, :, i, :, j]
    return counts


def coverage(mask: np.ndarray, supersample: int) -> np.ndarray:
    """Fraction of covered samples per pixel: (n, H*s, W*s) bool -> (n, H, W) float32."""
    return coverage_counts(mask, supersample) * np.float32(1.0 / supersample**2)


def place_inside(vertices: np.ndarray, rng: np.random.Generator, height: float,
                 width: float) -> np.ndarray:
    """Translate each shape uniformly at random so its bounding box lies inside the image.

    Args:
        vertices: (n, k, 2) shapes in any position; each must fit inside (width, height).
    Returns:
        (n, k, 2) translated vertices.
    """
    lo = vertices.min(axis=1)
    hi = vertices.max(axis=1)
    size = hi - lo
    room = np.array([width, height]) - size
    if np.any(room < 0):
        raise ValueError("a shape is larger than the image")
    offset = rng.uniform(size=lo.shape) * room - lo
    return vertices + offset[:, None, :]


def regular_polygon(k: int, area: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Regular k-gons centred at the origin with the given areas and rotations.

    Args:
        k: number of vertices (3 = equilateral triangle, 4 = square).
        area: (n,) areas in pixels^2; angle: (n,) rotations in radians.
    Returns:
        (n, k, 2) vertices, counter-clockwise.
    """
    # Area of a regular k-gon of circumradius r: k r^2 sin(2 pi / k) / 2.
    radius = np.sqrt(2.0 * area / (k * np.sin(2.0 * np.pi / k)))
    phase = angle[:, None] + 2.0 * np.pi * np.arange(k)[None, :] / k
    return np.stack([radius[:, None] * np.cos(phase), radius[:, None] * np.sin(phase)], axis=-1)


def balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) int64 labels in [0, n_classes), counts differing by at most one, in random order."""
    return rng.permutation(np.arange(n, dtype=np.int64) % n_classes)


def generate(n: int, seed: int | np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` Shapeset images.

    Args:
        n: number of images.
        seed: integer seed or SeedSequence; the same seed gives the same bytes.

    Returns:
        x: (n, 100) float32 in [0, 1], rows are 10x10 images in row-major order (y down).
        y: (n,) int64, 0 = triangle, 1 = square, balanced to within one.
    """
    rng = np.random.default_rng(seed)
    y = balanced_labels(n, 2, rng)
    area = rng.uniform(*AREA_RANGE, size=n)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    grey = rng.uniform(*GREY_RANGE, size=n).astype(np.float32)
    # Pad triangles to 4 vertices by repeating one: a zero-length edge constrains nothing.
    verts = np.empty((n, 4, 2))
    tri = y == 0
    verts[tri, :3] = regular_polygon(3, area[tri], angle[tri])
    verts[tri, 3] = verts[tri, 2]
    verts[~tri] = regular_polygon(4, area[~tri], angle[~tri])
    verts = place_inside(verts, rng, SIDE, SIDE)

    gx, gy = sample_grid(SIDE, SIDE, SUPERSAMPLE)
    x = np.empty((n, SIDE * SIDE), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        # Triangles and squares share the loop; the degenerate 4th edge of a triangle costs
        # one extra pass but keeps the chunk a single vectorized batch.
        cov = coverage(polygon_masks(verts[start:stop], gx, gy), SUPERSAMPLE)
        x[start:stop] = (cov * grey[start:stop, None, None]).reshape(stop - start, -1)
    np.clip(x, 0.0, 1.0, out=x)
    return x, y


def build(cfg: DatasetConfig) -> Dataset:
    """The Shapeset dataset a config asks for (sizes 0 = 50,000 / 10,000 / 10,000).

    Split ``i`` (0 train, 1 valid, 2 test) is ``generate(n_i, SeedSequence([cfg.seed, i]))``, so
    the three splits are independent draws and changing one size leaves the others unchanged.
    """
    sizes = resolve_sizes(cfg, STANDARD_SIZES)
    splits = []
    for i, n in enumerate(sizes):
        x, y = generate(n, np.random.SeedSequence([cfg.seed, i]))
        splits.append(Split(x, y))
    logger.debug("generated shapeset sizes %s with seed %d", sizes, cfg.seed)
    return Dataset(name="shapeset", train=splits[0], valid=splits[1], test=splits[2],
                   n_classes=2, image_shape=(SIDE, SIDE))
