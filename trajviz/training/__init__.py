"""Training the studies' networks, stage by stage:

- :mod:`~trajviz.training.nets`: :class:`StackedMLP`, K sigmoid MLPs of one shape held as
  stacked tensors (one batched matmul trains them all);
- :mod:`~trajviz.training.sdae` and :mod:`~trajviz.training.rbm`: greedy layer-wise
  pre-training (stacked denoising autoencoders; RBMs by CD-k);
- :mod:`~trajviz.training.initialization`: a pre-training method spec (``sdae+hist``,
  ``rbm+reinit=2``, ...) turned into initial weights;
- :mod:`~trajviz.training.fast`: the hand-derived, fused SGD steps (``engine.backend = "fast"``);
- :mod:`~trajviz.training.selection`: the checkpoint chosen by validation error;
- :mod:`~trajviz.training.resume`: a batch's training state at a checkpoint (parameters, every
  random stream, position in the example order), kept in the file so ``--resume`` continues
  mid-run;
- :mod:`~trajviz.training.runner`: :func:`record_experiment`, a config's nets trained and
  recorded at every checkpoint through :mod:`trajviz.record` (``trajviz record``).

Nothing is imported here, so importing one stage does not import torch for the others.
"""
