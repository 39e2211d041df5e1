"""Shapeset-3x2: 32x32 grey images of one or two objects, labelled by the set of shapes present.

Each object is a triangle, a parallelogram or an ellipse with random proportions, scale, rotation,
translation (fully inside the image) and grey level, anti-aliased by supersampled coverage. When
there are two objects, the second is drawn over the first and covers at most half of the first's
area (it is redrawn until it does). The label is the unordered set of shapes, 9 classes in the
order of :data:`LABELS`; classes are exactly balanced within each split (to within one).

The paper samples the data online; trajviz draws fixed splits instead, by default 50,000 train /
10,000 valid / 10,000 test (the sizes of the Shapeset studies), each from its own random stream
derived from ``(seed, split index)``.

Reference:
    Glorot, Bengio (2010), "Understanding the difficulty of training deep feedforward neural
    networks", AISTATS, section 2.1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from trajviz.config import DatasetConfig
from trajviz.data.base import Dataset, Split, resolve_sizes
from trajviz.data.shapeset import (balanced_labels, coverage_counts, place_inside,
                                   polygon_masks, sample_grid)

logger = logging.getLogger(__name__)

#: Object kinds, indexed as in :data:`LABELS`.
KINDS = ("triangle", "parallelogram", "ellipse")
TRIANGLE, PARALLELOGRAM, ELLIPSE = 0, 1, 2
#: Label i is the unordered set of kinds LABELS[i] (kind indices, sorted): 3 singles, 3 same-shape
#: pairs, 3 mixed pairs.
LABELS: tuple[tuple[int, ...], ...] = (
    (TRIANGLE,), (PARALLELOGRAM,), (ELLIPSE,),
    (TRIANGLE, TRIANGLE), (PARALLELOGRAM, PARALLELOGRAM), (ELLIPSE, ELLIPSE),
    (TRIANGLE, PARALLELOGRAM), (TRIANGLE, ELLIPSE), (PARALLELOGRAM, ELLIPSE),
)
#: Human-readable label names, e.g. "triangle+ellipse".
LABEL_NAMES = tuple("+".join(KINDS[k] for k in kinds) for kinds in LABELS)
STANDARD_SIZES = (50_000, 10_000, 10_000)
SIDE = 32
#: Sub-pixel samples per pixel side (2x2 keeps 70,000 images within a few seconds).
SUPERSAMPLE = 2
#: Object area range in pixels^2, shared by all kinds.
AREA_RANGE = (48.0, 192.0)
GREY_RANGE = (0.3, 1.0)
#: Largest fraction of the first object's area the second may cover.
MAX_OVERLAP = 0.5
#: Images per independently seeded chunk; the output depends on it, so it is part of the format.
CHUNK = 256
_MAX_REDRAWS = 200


@dataclass(frozen=True)
class Drawing:
    """What :func:`generate` drew, to check labels against objects.

    Attributes:
        kinds: (n, 2) int64 kind index of the first and second object, -1 where there is none.
        grey: (n, 2) float32 grey level of each object, 0 where there is none.
        overlap: (n,) float32 fraction of the first object's (supersampled) area that the
            second covers; 0 for single objects.
        coverage: (m, 2, 32, 32) float32 per-object pixel coverage in [0, 1] for the first m
            images (m = ``n_coverage`` of :func:`generate`); image = g0 c0 (1 - c1) + g1 c1.
    """

    kinds: np.ndarray
    grey: np.ndarray
    overlap: np.ndarray
    coverage: np.ndarray


def _polygons(kind: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 4, 2) unit-area triangles (4th vertex repeated) or parallelograms, random proportions."""
    v = np.zeros((n, 4, 2))
    v[:, 1, 0] = 1.0
    if kind == TRIANGLE:
        v[:, 2, 0] = rng.uniform(0.0, 1.0, n)      # apex offset along the base
        v[:, 2, 1] = rng.uniform(0.5, 1.2, n)      # height relative to base
        v[:, 3] = v[:, 2]
        area = v[:, 2, 1] / 2
    else:
        r = rng.uniform(0.5, 1.0, n)                # side ratio
        phi = rng.uniform(np.pi / 3, 2 * np.pi / 3, n)  # interior angle
        side = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=-1)
        v[:, 2] = v[:, 1] + side
        v[:, 3] = side
        area = r * np.sin(phi)
    return v / np.sqrt(area)[:, None, None]


def _draw_objects(kinds: np.ndarray, rng: np.random.Generator, gx: np.ndarray,
                  gy: np.ndarray) -> np.ndarray:
    """Draw one random object of each given kind; returns (n, H*s, W*s) bool masks."""
    n = kinds.size
    area = rng.uniform(*AREA_RANGE, n)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    masks = np.empty((n, gy.size, gx.size), dtype=bool)
    for kind in (TRIANGLE, PARALLELOGRAM, ELLIPSE):
        idx = np.flatnonzero(kinds == kind)
        if idx.size == 0:
            continue
        if kind == ELLIPSE:
            ratio = rng.uniform(0.4, 1.0, idx.size)
            a = np.sqrt(area[idx] / (np.pi * ratio))
            b = ratio * a
            masks[idx] = _ellipse_masks(a, b, angle[idx], rng, gx, gy)
        else:
            v = _polygons(kind, idx.size, rng) * np.sqrt(area[idx])[:, None, None]
            c, s = np.cos(angle[idx])[:, None], np.sin(angle[idx])[:, None]
            v = np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)
            # Shrink the rare shape too long for the image (a thin one at large area).
            span = (v.max(axis=1) - v.min(axis=1)).max(axis=1)
            v *= np.minimum(1.0, (SIDE - 1.0) / span)[:, None, None]
            masks[idx] = polygon_masks(place_inside(v, rng, SIDE, SIDE), gx, gy)
    return masks


def _ellipse_masks(a: np.ndarray, b: np.ndarray, angle: np.ndarray, rng: np.random.Generator,
                   gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Ellipses with semi-axes (a, b) (n,) rotated by ``angle``, centred at random inside the image.

    Returns (n, H, W) bool masks over the sample grid (gy, gx).
    """
    c, s = np.cos(angle), np.sin(angle)
    half_w = np.sqrt((a * c) ** 2 + (b * s) ** 2)
    half_h = np.sqrt((a * s) ** 2 + (b * c) ** 2)
    cx = half_w + rng.uniform(size=a.size) * (SIDE - 2 * half_w)
    cy = half_h + rng.uniform(size=a.size) * (SIDE - 2 * half_h)
    dx = (gx[None, :] - cx[:, None]).astype(np.float32)
    dy = (gy[None, :] - cy[:, None]).astype(np.float32)
    # Rotated coordinates are outer sums of a column term and a row term.
    u = (dx * (c / a)[:, None])[:, None, :] + (dy * (s / a)[:, None])[:, :, None]
    w = (dx * (-s / b)[:, None])[:, None, :] + (dy * (c / b)[:, None])[:, :, None]
    u *= u
    w *= w
    u += w
    return u <= 1.0


def _count(masks: np.ndarray) -> np.ndarray:
    """(n,) number of True samples in each of n masks (n, H, W), via a contiguous uint8 sum."""
    return masks.view(np.uint8).reshape(masks.shape[0], -1).sum(axis=1, dtype=np.int64)


def _chunk_seed(root: np.random.SeedSequence, index: int) -> np.random.SeedSequence:
    # Derive children without SeedSequence.spawn, which mutates its parent (and so would make
    # two calls with the same SeedSequence differ).
    return np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (index,))


def generate(n: int, seed: int | np.random.SeedSequence, *,
             n_coverage: int = 16) -> tuple[np.ndarray, np.ndarray, Drawing]:
    """Draw ``n`` Shapeset-3x2 images.

    Args:
        n: number of images.
        seed: integer seed or SeedSequence; the same seed gives the same bytes.
        n_coverage: keep per-object coverage maps for the first this many images.

    Returns:
        x: (n, 1024) float32 in [0, 1], rows are 32x32 images in row-major order.
        y: (n,) int64 label in [0, 9), an index into :data:`LABELS`.
        drawing: a :class:`Drawing` of the objects behind each image.
    """
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    gx, gy = sample_grid(SIDE, SIDE, SUPERSAMPLE)
    x = np.empty((n, SIDE * SIDE), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    kinds = np.full((n, 2), -1, dtype=np.int64)
    grey = np.zeros((n, 2), dtype=np.float32)
    overlap = np.zeros(n, dtype=np.float32)
    m = min(n_coverage, n)
    cov_keep = np.zeros((m, 2, SIDE, SIDE), dtype=np.float32)
    # Balance over the whole split, then draw each chunk from its own stream.
    y[:] = balanced_labels(n, len(LABELS), np.random.default_rng(_chunk_seed(root, 0)))
    table = np.array([(k[0], k[-1] if len(k) == 2 else -1) for k in LABELS], dtype=np.int64)
    for c, start in enumerate(range(0, n, CHUNK)):
        stop = min(start + CHUNK, n)
        rng = np.random.default_rng(_chunk_seed(root, c + 1))
        k = table[y[start:stop]].copy()
        swap = (k[:, 1] >= 0) & (rng.uniform(size=stop - start) < 0.5)
        k[swap] = k[swap][:, ::-1]
        g = rng.uniform(*GREY_RANGE, (stop - start, 2)).astype(np.float32)
        g[k[:, 1] < 0, 1] = 0.0
        first = _draw_objects(k[:, 0], rng, gx, gy)
        second = np.zeros_like(first)
        frac = np.zeros(stop - start, dtype=np.float32)
        todo = np.flatnonzero(k[:, 1] >= 0)
        area1 = _count(first)
        for _ in range(_MAX_REDRAWS):
            if todo.size == 0:
                break
            second[todo] = _draw_objects(k[todo, 1], rng, gx, gy)
            frac[todo] = _count(first[todo] & second[todo]) / area1[todo]
            todo = todo[frac[todo] > MAX_OVERLAP]
        if todo.size:
            raise RuntimeError("could not place second objects; the overlap limit is too tight")
        scale = np.float32(1.0 / SUPERSAMPLE**2)
        c0 = coverage_counts(first, SUPERSAMPLE) * scale
        c1 = coverage_counts(second, SUPERSAMPLE) * scale
        img = g[:, 0, None, None] * c0 * (1 - c1) + g[:, 1, None, None] * c1
        x[start:stop] = np.clip(img, 0.0, 1.0).reshape(stop - start, -1)
        kinds[start:stop] = k
        grey[start:stop] = g
        overlap[start:stop] = frac
        if start < m:
            keep = min(stop, m) - start
            cov_keep[start:start + keep, 0] = c0[:keep]
            cov_keep[start:start + keep, 1] = c1[:keep]
    return x, y, Drawing(kinds=kinds, grey=grey, overlap=overlap, coverage=cov_keep)


def build(cfg: DatasetConfig) -> Dataset:
    """The Shapeset-3x2 dataset a config asks for (sizes 0 = 50,000 / 10,000 / 10,000).

    Split ``i`` (0 train, 1 valid, 2 test) is ``generate(n_i, SeedSequence([cfg.seed, i]))``.
    """
    sizes = resolve_sizes(cfg, STANDARD_SIZES)
    splits = []
    for i, n in enumerate(sizes):
        x, y, _ = generate(n, np.random.SeedSequence([cfg.seed, i]), n_coverage=0)
        splits.append(Split(x, y))
    logger.debug("generated shapeset3x2 sizes %s with seed %d", sizes, cfg.seed)
    return Dataset(name="shapeset3x2", train=splits[0], valid=splits[1], test=splits[2],
                   n_classes=len(LABELS), image_shape=(SIDE, SIDE))
