"""Do two groups of trajectories start apart, stay apart, and end in regions of different size?
Tests on distances in the original function space (not on an embedding's picture), the parts
of finding F10 of Erhan et al. (2010) [J], usable on any trajviz file with two groups.

Inputs are the (T, R, R) matrices of RMS distances between R nets at T aligned checkpoints
(:func:`trajviz.trajectories.divergence.distance_matrices`) and each net's group, A or B.

- **Separability at a checkpoint**: leave-one-out k-NN group accuracy, the fraction of nets whose
  group is the majority group among their k nearest *other* nets (ties: the group of the nearest
  tied net). Neighbours are scikit-learn's (``NearestNeighbors(metric="precomputed")``). k is at
  most n_min - 1, the number of other nets in the smaller group, so that every vote *can* go to a
  net's own group; a larger k is forced down (one-line warning), and the default is the largest
  odd k <= min(5, n_min - 1) (:func:`choose_k`).
- **Permutation test** (:func:`permutation_test_knn`, by :func:`scipy.stats.permutation_test`):
  the statistic is the number of correctly classified nets at each checkpoint; the null
  distribution comes from relabelling *whole runs* (one relabelling applies to every
  checkpoint). Independent runs: any split of the R runs into groups of the observed sizes.
  Paired runs (a run of each group shares its seed, initial weights and example order with one
  of the other group, :func:`seed_pairs`): only swaps within pairs. Exact (every relabelling)
  when there are at most ``n_permutations`` of them, otherwise ``n_permutations`` random ones
  (p = (count + 1) / (n + 1)). One-sided: p at checkpoint t = share of relabellings whose accuracy
  at t is at least the observed. Max-T adjusted p-values (Westfall & Young 1993) control the
  family-wise error over checkpoints: p_maxT(t) = share of relabellings whose *largest*
  accuracy over the checkpoints after the first is at least the observed accuracy at t.
- **start apart**: the per-checkpoint p-value at the first checkpoint analysed (checkpoint 0 of
  a run that trajviz trained: recorded after pre-training, before any fine-tuning update).
- **stay apart**: separable at *every* checkpoint after the first. p = the largest per-checkpoint
  p-value over those checkpoints: the intersection-union test (Berger 1982) of "separable at
  every later checkpoint", whose chance of calling every later checkpoint separable when at
  least one of them is not is at most p; no multiplicity correction is needed because each of
  the tests must reject.
- **verdict** of a test (:func:`separation_verdict`), at alpha = 0.05: *reproduced* if p <= alpha;
  *not reproduced* if p > 0.5, i.e. the observed accuracy is no higher than that of at least half
  of the relabellings: no sign of separation (for stay apart: at some later checkpoint);
  *inconclusive* otherwise (some separation, not significant), or when there is no test (a group
  with fewer than 3 runs) or the test cannot reach alpha even at perfect separation (too few
  relabellings, e.g. 3 + 3 independent runs: 20 relabellings, p >= 2/20).
- **spread** of a group at a checkpoint: the mean distance over all pairs of its nets (the one
  definition of "spread" in trajviz). **end spread ratio**: B's spread over A's at the last
  checkpoint, with a 95% percentile bootstrap interval over runs (each group's runs resampled
  with replacement, pairs of a run with itself left out; paired runs resampled by pair), from
  ``numpy.random.default_rng(seed)``; resamples with fewer than 2 distinct runs in a group are
  dropped, and if they are more than 5% of all, there is no interval.

Public API: :func:`separation` -> :class:`Separation` (``to_dict()`` is the ``"separation"``
object of ``trajviz divergence``'s JSON output); :func:`choose_k`, :func:`knn_neighbours`,
:func:`knn_correct`, :func:`permutation_test_knn`, :func:`seed_pairs`, :func:`separation_verdict`,
:func:`end_spread_ratio`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from trajviz.errors import ConfigError

log = logging.getLogger(__name__)

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
#: level of the start-apart and stay-apart tests
ALPHA = 0.05
#: p-value above which a separation test's verdict is "not reproduced" (accuracy at chance level)
NO_SIGN = 0.5
#: fewest runs per group for which the tests are run
MIN_RUNS = 3
#: default k of the k-NN accuracy, before :func:`choose_k` caps it by the group sizes
DEFAULT_K = 5
#: default number of random relabellings when there are more than this many in all
N_PERMUTATIONS = 9999
#: share of bootstrap resamples that may be undefined before the interval is refused
MAX_UNDEFINED = 0.05


# --------------------------------------------------------------------------- k and neighbours


def choose_k(group_sizes: Sequence[int], k: int | None = None) -> tuple[int, str]:
    """k of the leave-one-out k-NN accuracy for groups of these sizes, and a one-line message
    when a requested k had to be lowered (else "").

    k never exceeds n_min - 1 (the other nets of the smallest group): with more neighbours a net
    of that group has votes that must go to the other group, whatever the data. ``k=None``: the
    largest odd k <= min(DEFAULT_K, n_min - 1) (odd: no ties between two groups). A requested k
    above the cap becomes the largest odd k <= n_min - 1. Raises if a group has fewer than 2 runs
    (no leave-one-out neighbour of its own)."""
    n_min = min(group_sizes) if len(group_sizes) else 0
    cap = n_min - 1
    if cap < 1:
        raise ConfigError(f"k-NN group accuracy needs at least 2 runs in every group (smallest "
                          f"group has {n_min})")
    if k is not None and k < 1:
        raise ConfigError(f"k = {k}: must be a positive integer")
    odd_cap = cap if cap % 2 else cap - 1
    if k is None:
        wanted = min(DEFAULT_K, cap)
        return (wanted if wanted % 2 else wanted - 1), ""
    if k <= cap:
        return k, ""
    return odd_cap, (f"k = {k} is more than the {cap} other run(s) of the smallest group "
                     f"({n_min} runs), so some votes would have to go to the other group; "
                     f"using k = {odd_cap}")


def knn_neighbours(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of each net's k nearest *other* nets, nearest first: (R, R) -> (R, k), or
    (T, R, R) -> (T, R, k); by scikit-learn's ``NearestNeighbors(metric="precomputed")``, whose
    ``kneighbors()`` without a query leaves each point out of its own neighbours."""
    from sklearn.neighbors import NearestNeighbors

    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim == 2:
        return knn_neighbours(dist[None], k)[0]
    r = dist.shape[-1]
    if not 1 <= k <= r - 1:
        raise ConfigError(f"k = {k}: must lie between 1 and the number of other nets ({r - 1})")
    out = np.empty(dist.shape[:-1] + (k,), dtype=np.int64)
    for t in range(dist.shape[0]):
        d = dist[t].copy()
        np.fill_diagonal(d, 0.0)
        nn = NearestNeighbors(n_neighbors=k, metric="precomputed").fit(d)
        out[t] = nn.kneighbors(return_distance=False)
    return out


def knn_correct(neighbours: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each net's k-NN majority vote finds its own group.

    ``neighbours`` (T, R, k) from :func:`knn_neighbours`; ``labels`` (..., R) integer group codes
    (leading axes: several labellings at once). Ties go to the group of the nearest tied net.
    Returns bool (..., T, R)."""
    labels = np.asarray(labels)
    votes = labels[..., neighbours]  # (..., T, R, k)
    own = labels[..., None, :]  # (..., 1, R)
    n_groups = int(labels.max()) + 1 if labels.size else 0
    if n_groups <= 2:
        k = neighbours.shape[-1]
        ones = (votes == 1).sum(axis=-1)
        pred = np.where(2 * ones > k, 1, np.where(2 * ones < k, 0, votes[..., 0]))
        return pred == own
    counts = np.stack([(votes == g).sum(axis=-1) for g in range(n_groups)], axis=-1)
    best = counts.max(axis=-1, keepdims=True)
    tied = np.take_along_axis(counts, votes, axis=-1) == best  # (..., T, R, k): vote in a top group
    pred = np.take_along_axis(votes, np.argmax(tied, axis=-1)[..., None], axis=-1)[..., 0]
    return pred == own


# --------------------------------------------------------------------------- pairing


def seed_pairs(seeds_a: Sequence[int], seeds_b: Sequence[int]) -> list[tuple[int, int]] | None:
    """Pairs (i, j) of a run of A and a run of B with the same seed, as positions in the two
    lists, when *every* run of both groups has exactly one partner (seeds unique, >= 0, the same
    set in both groups); else None."""
    a, b = [int(s) for s in seeds_a], [int(s) for s in seeds_b]
    if (not a or len(a) != len(b) or min(a + b) < 0 or len(set(a)) != len(a)
            or set(a) != set(b)):
        return None
    where_b = {s: j for j, s in enumerate(b)}
    return [(i, where_b[s]) for i, s in enumerate(a)]


# --------------------------------------------------------------------------- permutation test


@dataclass
class PermutationResult:
    """Per-checkpoint k-NN accuracy and p-values of :func:`permutation_test_knn`."""

    accuracy: np.ndarray  # (T,)
    p_value: np.ndarray  # (T,) one-sided, per checkpoint
    p_value_maxt: np.ndarray  # (T,) max-T adjusted over the checkpoints after the first
    n_relabellings: int  # relabellings drawn (all of them when exact)
    exact: bool
    p_min: float  # smallest p-value the test can give

    @property
    def stay_p_value(self) -> float:
        """Largest per-checkpoint p-value after the first checkpoint (intersection-union)."""
        return float(self.p_value[1:].max()) if self.p_value.size > 1 else math.nan


def permutation_test_knn(neighbours: np.ndarray, in_b: np.ndarray,
                         pairs: Sequence[tuple[int, int]] | None = None, *,
                         n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> PermutationResult:
    """Permutation test of the leave-one-out k-NN group accuracy at every checkpoint, by
    :func:`scipy.stats.permutation_test` (module docstring).

    ``neighbours`` (T, R, k) from :func:`knn_neighbours`; ``in_b`` (R,) bool, True for group B;
    ``pairs``: (index of an A run, index of its B partner) into 0..R-1, covering every run, or
    None for independent runs."""
    from scipy.stats import permutation_test

    in_b = np.asarray(in_b, dtype=bool)
    r = in_b.size
    idx_a, idx_b = np.flatnonzero(~in_b), np.flatnonzero(in_b)
    if pairs is not None:
        pairs = list(pairs)
        idx_a = np.array([i for i, _ in pairs])
        idx_b = np.array([j for _, j in pairs])
        if sorted(idx_a.tolist() + idx_b.tolist()) != list(range(r)) or in_b[idx_a].any() \
                or not in_b[idx_b].all():
            raise ConfigError("pairs must match every run of group A with one run of group B")

    def n_correct(xa: np.ndarray, xb: np.ndarray, axis: int = -1) -> np.ndarray:
        # xa, xb: (..., nA), (..., nB) run indices given labels A and B by one relabelling
        lead = np.broadcast_shapes(xa.shape[:-1], xb.shape[:-1])
        labels = np.zeros(lead + (r,), dtype=np.int8)
        np.put_along_axis(labels, np.broadcast_to(xb, lead + xb.shape[-1:]).astype(np.intp), 1,
                          axis=-1)
        return knn_correct(neighbours, labels).sum(axis=-1)  # (..., T)

    t_len, _, k = neighbours.shape
    batch = max(1, int(2e7 // max(1, t_len * r * k)))
    res = permutation_test((idx_a, idx_b), n_correct, vectorized=True,
                           permutation_type="samples" if pairs is not None else "independent",
                           n_resamples=n_permutations, batch=batch, alternative="greater",
                           rng=np.random.default_rng(seed))
    null = np.asarray(res.null_distribution).reshape(-1, t_len)
    observed = np.asarray(res.statistic).reshape(t_len)
    n_total = (2 ** len(idx_a) if pairs is not None else math.comb(r, len(idx_a)))
    exact = null.shape[0] == n_total and n_permutations >= n_total
    adj = 0 if exact else 1
    family = slice(1, None) if t_len > 1 else slice(None)
    top = null[:, family].max(axis=1)
    p_maxt = (np.sum(top[:, None] >= observed[None, :], axis=0) + adj) / (null.shape[0] + adj)
    # the observed split and its mirror image (labels swapped: same partition, same accuracy)
    # always count as at least as extreme when the groups are the same size
    same_partition = 2 if len(idx_a) == len(idx_b) else 1
    p_min = same_partition / n_total if exact else 1.0 / (null.shape[0] + 1)
    return PermutationResult(accuracy=observed / r, p_value=np.asarray(res.pvalue, float).reshape(t_len),
                             p_value_maxt=p_maxt, n_relabellings=int(null.shape[0]), exact=exact,
                             p_min=float(p_min))


def separation_verdict(p_value: float, p_min: float, alpha: float = ALPHA) -> str:
    """Verdict of a separation test from its p-value and the smallest p-value it can give
    (module docstring)."""
    if not math.isfinite(p_value) or p_min > alpha:
        return INCONCLUSIVE
    if p_value <= alpha:
        return REPRODUCED
    if p_value > NO_SIGN:
        return NOT_REPRODUCED
    return INCONCLUSIVE


# --------------------------------------------------------------------------- end spread


def group_spread(dist: np.ndarray, members: np.ndarray) -> float:
    """Mean distance over pairs of distinct runs among ``members`` (indices; repeats allowed,
    pairs of a run with itself left out). ``dist`` (R, R). NaN with fewer than 2 distinct runs."""
    members = np.asarray(members)
    mask = members[:, None] != members[None, :]
    if not mask.any():
        return math.nan
    return float(dist[members[:, None], members[None, :]][mask].mean())


@dataclass
class Interval:
    value: float
    ci_low: float
    ci_high: float
    note: str = ""

    def to_dict(self) -> dict[str, float | None]:
        return {k: _num(getattr(self, k)) for k in ("value", "ci_low", "ci_high")}


def end_spread_ratio(dist: np.ndarray, in_b: np.ndarray,
                     pairs: Sequence[tuple[int, int]] | None = None, *, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95) -> Interval:
    """B's spread over A's at one checkpoint (``dist`` (R, R)) with a percentile bootstrap
    interval over runs (module docstring)."""
    in_b = np.asarray(in_b, dtype=bool)
    a, b = np.flatnonzero(~in_b), np.flatnonzero(in_b)
    sa, sb = group_spread(dist, a), group_spread(dist, b)
    value = sb / sa if sa > 0 else math.nan
    if not math.isfinite(value) or n_boot < 1:
        return Interval(value, math.nan, math.nan, "no interval: the ratio is undefined"
                        if not math.isfinite(value) else "")
    rng = np.random.default_rng(seed)
    reps = np.full(n_boot, np.nan)
    if pairs is not None:
        pa = np.array([i for i, _ in pairs])
        pb = np.array([j for _, j in pairs])
    for i in range(n_boot):
        if pairs is not None:
            pick = rng.integers(0, len(pa), len(pa))
            ra, rb = pa[pick], pb[pick]
        else:
            ra, rb = rng.choice(a, a.size), rng.choice(b, b.size)
        s_a, s_b = group_spread(dist, ra), group_spread(dist, rb)
        if s_a > 0 and math.isfinite(s_b):
            reps[i] = s_b / s_a
    ok = np.isfinite(reps)
    if 1 - ok.mean() > MAX_UNDEFINED:
        return Interval(value, math.nan, math.nan,
                        f"no interval: {1 - ok.mean():.0%} of resamples had fewer than 2 distinct "
                        "runs in a group")
    lo, hi = np.percentile(reps[ok], [50 * (1 - level), 50 * (1 + level)])
    note = "" if lo <= value <= hi else ("the point value lies outside its percentile interval "
                                         "(the ratio is biased under resampling)")
    return Interval(value, float(lo), float(hi), note)


# --------------------------------------------------------------------------- the whole analysis


@dataclass
class ClaimTest:
    p_value: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"p_value": _num(self.p_value), "verdict": self.verdict}


@dataclass
class Separation:
    """Separation of groups A and B over checkpoints (module docstring for every definition)."""

    groups: tuple[str, str]
    checkpoint: np.ndarray  # (T,) checkpoint indices
    knn_accuracy: np.ndarray  # (T,)
    p_value: np.ndarray  # (T,) per checkpoint, NaN when there is no test
    p_value_maxt: np.ndarray  # (T,)
    start_apart: ClaimTest
    stay_apart: ClaimTest
    end_spread_ratio: Interval
    k: int
    paired: bool
    n_relabellings: int = 0
    exact: bool = False
    p_min: float = math.nan
    notes: list[str] = field(default_factory=list)
    #: paired runs: share of nets whose nearest neighbour at the first checkpoint is their seed
    #: partner in the other group (NaN when not paired)
    twin_nearest: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """The ``"separation"`` object of ``trajviz divergence``'s JSON (docs/project.md)."""
        return {"per_checkpoint": [{"checkpoint": int(c), "knn_accuracy": _num(a),
                                    "p_value": _num(p)}
                                   for c, a, p in zip(self.checkpoint, self.knn_accuracy,
                                                      self.p_value)],
                "start_apart": self.start_apart.to_dict(),
                "stay_apart": self.stay_apart.to_dict(),
                "end_spread_ratio": self.end_spread_ratio.to_dict()}

    def attrs(self) -> dict[str, Any]:
        """How the tests were run (for a table's attributes)."""
        return {"groups": list(self.groups), "k": self.k, "paired": self.paired,
                "n_relabellings": self.n_relabellings, "exact": self.exact,
                "p_min": _num(self.p_min), "alpha": ALPHA, "notes": list(self.notes),
                "twin_nearest": _num(self.twin_nearest)}

    def format(self) -> str:
        a, b = self.groups
        lines = [f"separation of {a} and {b} ({self.k}-NN, "
                 f"{'paired by seed' if self.paired else 'independent runs'}; "
                 + (f"{'exact, ' if self.exact else ''}{self.n_relabellings} relabellings)"
                    if self.n_relabellings else "no test)")]
        for name, t in (("start apart", self.start_apart), ("stay apart", self.stay_apart)):
            p = "n/a" if not math.isfinite(t.p_value) else f"{t.p_value:.3g}"
            lines.append(f"  {name}: p = {p}: {t.verdict}")
        e = self.end_spread_ratio
        ci = ("" if not (math.isfinite(e.ci_low) and math.isfinite(e.ci_high))
              else f" [{e.ci_low:.3g}, {e.ci_high:.3g}]")
        lines.append(f"  end spread ratio ({b} / {a}): "
                     + ("n/a" if not math.isfinite(e.value) else f"{e.value:.3g}{ci}"))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def separation(dist: np.ndarray, labels: Sequence[str], groups: Sequence[str], *,
               checkpoint: np.ndarray | None = None, seeds: Sequence[int] | None = None,
               paired: bool | None = None, k: int | None = None,
               n_permutations: int = N_PERMUTATIONS, n_boot: int = 1000,
               seed: int = 0) -> Separation:
    """Separation tests of groups ``groups = (A, B)`` from (T, R, R) distances.

    ``labels`` (R,): each net's group (nets of other groups are left out). ``seeds`` (R,): each
    net's seed; ``paired``: True (runs of one seed share initial weights across the groups),
    False (independent), or None: paired when the seeds pair every run of A with one of B
    (:func:`seed_pairs`; pairing is valid for independent runs too, only less powerful).
    Fewer than :data:`MIN_RUNS` runs in a group: no test (NaN p-values, verdicts inconclusive) and a
    one-line warning."""
    if len(groups) != 2 or groups[0] == groups[1]:
        raise ConfigError(f"separation compares exactly two groups; got {list(groups)}")
    labels = np.asarray(labels)
    keep = np.flatnonzero(np.isin(labels, list(groups)))
    dist = np.asarray(dist, dtype=np.float64)[:, keep[:, None], keep[None, :]]
    labels = labels[keep]
    in_b = labels == groups[1]
    t_len = dist.shape[0]
    checkpoint = np.arange(t_len) if checkpoint is None else np.asarray(checkpoint)
    sizes = [int((~in_b).sum()), int(in_b.sum())]
    notes: list[str] = []
    pairs = None
    if seeds is not None and paired is not False:
        s = np.asarray(seeds)[keep]
        found = seed_pairs(s[~in_b].tolist(), s[in_b].tolist())
        if found is not None:
            ia, ib = np.flatnonzero(~in_b), np.flatnonzero(in_b)
            pairs = [(int(ia[i]), int(ib[j])) for i, j in found]
        elif paired:
            notes.append("runs were declared paired but their seeds do not pair every run of "
                         f"{groups[0]} with one of {groups[1]}: tested as independent runs")
    elif paired and seeds is None:
        raise ConfigError("paired runs need the runs' seeds")
    nan = np.full(t_len, np.nan)
    if min(sizes) < 2:
        msg = (f"no separation test: group {groups[int(sizes[1] < sizes[0])]} has "
               f"{min(sizes)} run(s); the tests need at least {MIN_RUNS} runs per group")
        log.warning(msg)
        return Separation(tuple(groups), checkpoint, nan, nan, nan,
                          ClaimTest(math.nan, INCONCLUSIVE), ClaimTest(math.nan, INCONCLUSIVE),
                          Interval(math.nan, math.nan, math.nan), 0, pairs is not None,
                          notes=notes + [msg])
    k_used, msg = choose_k(sizes, k)
    if msg:
        log.warning(msg)
        notes.append(msg)
    nbrs = knn_neighbours(dist, k_used)
    acc = knn_correct(nbrs, in_b.astype(np.int8)).mean(axis=-1)
    twin = math.nan
    if pairs is not None:
        partner = np.empty(in_b.size, dtype=np.int64)
        for i, j in pairs:
            partner[i], partner[j] = j, i
        twin = float(np.mean(nbrs[0, :, 0] == partner))
    if min(sizes) < MIN_RUNS:
        msg = (f"no separation test: group {groups[int(sizes[1] < sizes[0])]} has "
               f"{min(sizes)} runs; the permutation tests need at least {MIN_RUNS} runs per group")
        log.warning(msg)
        return Separation(tuple(groups), checkpoint, acc, nan, nan,
                          ClaimTest(math.nan, INCONCLUSIVE), ClaimTest(math.nan, INCONCLUSIVE),
                          Interval(math.nan, math.nan, math.nan), k_used, pairs is not None,
                          notes=notes + [msg])
    end = end_spread_ratio(dist[-1], in_b, pairs, n_boot=n_boot, seed=seed)
    if end.note:
        notes.append(f"end spread ratio: {end.note}")
    perm = permutation_test_knn(nbrs, in_b, pairs, n_permutations=n_permutations, seed=seed)
    start = ClaimTest(float(perm.p_value[0]), separation_verdict(float(perm.p_value[0]), perm.p_min))
    stay_p = perm.stay_p_value
    stay = ClaimTest(stay_p, separation_verdict(stay_p, perm.p_min))
    if perm.p_min > ALPHA:
        notes.append(f"with {sizes[0]} + {sizes[1]} runs"
                     f"{' in pairs' if pairs is not None else ''} the permutation test cannot "
                     f"reach p <= {ALPHA} (smallest possible p = {perm.p_min:.3g}): more runs needed")
    return Separation(tuple(groups), checkpoint, acc, perm.p_value, perm.p_value_maxt, start, stay,
                      end, k_used, pairs is not None, perm.n_relabellings, perm.exact, perm.p_min,
                      notes, twin)


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v
