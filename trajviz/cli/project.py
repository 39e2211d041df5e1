"""``trajviz project``: joint embedding of checkpoints from one or more trajviz files."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trajviz.cli import HelpFormatter, add_common

log = logging.getLogger("trajviz.cli.project")

DESCRIPTION = """\
Embed every selected checkpoint of every selected run jointly in 2-D or 3-D (the function-space
picture of Erhan et al. 2009/2010): each checkpoint is the net's outputs on the whole probe set,
in a representation (probs, sqrt = Hellinger geometry, log), reduced by streaming PCA read
checkpoint by checkpoint from HDF5, then embedded with t-SNE (openTSNE), ISOMAP, UMAP, PCA,
aligned UMAP (one map per checkpoint, runs aligned between them) or PHATE (extra
trajviz[phate]); or with InPCA (intensive PCA of the predicted distributions themselves:
Bhattacharyya distances, double centring, the largest |eigenvalues| including negative ones;
prints its explained stress).
Files are embedded together only if they share a probe set; diverged runs are left out with a
warning. Writes an embedding file (docs/format.md, "Embedding files") with quality figures
(trustworthiness, k-NN preservation).

With --into EMBEDDING, the selected checkpoints are added to an existing embedding without
moving its points (checkpoints already there are skipped); the embedding's method,
representation, dims and parameters are used and --method/--representation/--dims/--pca-dims/
--param are ignored.

checkpoint selection (--checkpoints): START:STOP[:STRIDE], a Python slice over each run's
checkpoint index (0 = before training, -1 = the last); e.g. 0:20:2, ::5, 10:, -1.
examples:
  trajviz project runs/default.h5 -o runs/default.tsne.h5
  trajviz project runs/default.h5 --method isomap --representation sqrt -o iso.h5
  trajviz project a.h5 b.h5 --groups none,sdae --checkpoints ::2 --param perplexity=20 -o e.h5
  trajviz project more_seeds.h5 --into e.h5 -o e_plus.h5
"""


def register(sub: argparse._SubParsersAction) -> None:
    from trajviz.trajectories.embedding import METHODS, REPRESENTATIONS

    p = sub.add_parser("project", help="embed checkpoints of many runs jointly (t-SNE, ISOMAP, UMAP, "
                                       "PCA, InPCA, aligned UMAP, PHATE)",
                       description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="trajviz HDF5 file(s)")
    p.add_argument("-o", "--output", type=Path, required=True, help="embedding file to write (.h5)")
    p.add_argument("--method", choices=METHODS, default="tsne", help="embedding method")
    p.add_argument("--representation", choices=REPRESENTATIONS, default="probs",
                   help="probs: probabilities; sqrt: square roots (Hellinger); log: log-probabilities")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="output dimensions")
    p.add_argument("--pca-dims", type=int, default=50,
                   help="streaming PCA dimensions before the method (the studies' t-SNE: 30)")
    p.add_argument("--groups", default=None,
                   help="comma-separated groups to keep, e.g. none,sdae (default: all groups)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                   help="keep runs whose attribute KEY is one of the values, e.g. seed=0,1 (repeatable)")
    p.add_argument("--checkpoints", default=None, metavar="START:STOP[:STRIDE]",
                   help="checkpoint indices per run (default: all)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter, e.g. perplexity=30, n_neighbors=10, min_dist=0.1 "
                        "(repeatable; see docs/project.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of every stochastic step")
    p.add_argument("--into", type=Path, default=None, metavar="EMBEDDING",
                   help="add the selected checkpoints to this existing embedding file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_common(p)
    p.set_defaults(func=run, parser_defaults={k: p.get_default(k) for k in
                                              ("method", "representation", "dims", "pca_dims")})


def _params(items: list[str]) -> dict[str, str]:
    from trajviz.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE, e.g. perplexity=30")
        out[key.strip()] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from trajviz.errors import OutputExistsError
    from trajviz.trajectories.embedding import Embedding, embed

    if args.output.exists() and not args.overwrite:
        raise OutputExistsError(f"{args.output} exists; pass --overwrite to replace it")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    if args.into is not None:
        base = Embedding.load(args.into)
        for opt, stored in (("method", base.method), ("representation", base.attrs.get("representation")),
                            ("dims", base.coords.shape[1]), ("pca_dims", base.attrs.get("pca_dims"))):
            given = getattr(args, opt)
            if given != args.parser_defaults[opt] and given != stored:
                log.warning("--into: using the embedding's %s %s, not %s", opt, stored, given)
        emb = base.add(args.files, groups=groups, where=args.where, checkpoints=args.checkpoints,
                       progress=not args.quiet)
    else:
        emb = embed(args.files, method=args.method, representation=args.representation,
                    dims=args.dims, pca_dims=args.pca_dims, groups=groups, where=args.where,
                    checkpoints=args.checkpoints, seed=args.seed, params=_params(args.param),
                    progress=not args.quiet)
    emb.save(args.output, overwrite=args.overwrite)
    if not args.quiet:
        a = emb.attrs
        counts = ", ".join(f"{g} {len({r for r, gg in zip(emb.run, emb.group) if gg == g})}"
                           for g in emb.groups)
        added = f" ({int(emb.added.sum())} added)" if emb.added.any() else ""
        stress = a.get("params", {}).get("explained_stress")
        stress = "" if stress is None else f"; explained stress {stress:.3f}"
        print(f"{a['method']} embedding of {emb.coords.shape[0]} checkpoints{added}, runs per group: "
              f"{counts}; representation {a['representation']}, PCA {a['pca_dims']} dims keep "
              f"{100 * a['pca_explained_variance']:.2f}% of the variance; trustworthiness "
              f"{a['quality_trustworthiness']:.3f}, {a['quality_k']}-NN preservation "
              f"{a['quality_knn_preservation']:.3f}{stress}")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
