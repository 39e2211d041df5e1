"""Trajectory analyses: which runs and checkpoints (``runs``), streaming PCA (``pca``), the
embedders (``embedders``: t-SNE, ISOMAP, UMAP, PCA), joint embeddings and their files
(``embedding``), divergence measures in the original function space (``divergence``), and the
tests of whether two groups start and stay apart (``separation``).

Nothing here imports torch. The entry points::

    emb = trajviz.trajectories.embed(["runs/default.h5"], method="tsne")   # -> Embedding
    emb.save("runs/default.emb.h5"); emb = Embedding.load("runs/default.emb.h5")
    table = trajviz.trajectories.divergence_table(["runs/default.h5"])      # ``trajviz divergence``
"""

from trajviz.trajectories.divergence import DivergenceTable, divergence_table
from trajviz.trajectories.embedding import METHODS, Embedding, embed
from trajviz.trajectories.pca import StreamingPCA
from trajviz.trajectories.runs import (REPRESENTATIONS, SelectedRun, open_experiments,
                                       parse_checkpoints, represent, select)
from trajviz.trajectories.separation import Separation, separation

__all__ = ["METHODS", "REPRESENTATIONS", "DivergenceTable", "Embedding", "SelectedRun",
           "Separation", "StreamingPCA", "divergence_table", "embed", "open_experiments",
           "parse_checkpoints", "represent", "select", "separation"]
