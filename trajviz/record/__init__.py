"""Recording: a model's outputs on a fixed probe set at every checkpoint, into a trajviz file.

- :mod:`trajviz.record.recorder`: :class:`Recorder` (any PyTorch training loop) and
  :class:`RunRecorder` (one run's appends);
- :mod:`trajviz.record.adapters`: how a probe set is fed to any model (one tensor, a tuple, a
  dict) and class probabilities read from what it returns, with the checks of ``output=``;
- :mod:`trajviz.record.background`: :class:`BackgroundWriter`, which keeps the store's writes off
  the training loop's critical path.
"""

from trajviz.record.recorder import OUTPUT_KINDS, Recorder, RunRecorder

__all__ = ["OUTPUT_KINDS", "Recorder", "RunRecorder"]
