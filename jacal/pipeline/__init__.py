"""A labeling pipeline's steps on files: each reads its inputs, calls the library, writes its output
atomically and returns a summary. Every ``jacal`` command that works on files is one call here, so a
pipeline runs the same steps from Python without the command line:

* :func:`acquire_batch`: a model file and a pool in, the next batch to label out, as CSV / JSON
  lines or Label Studio / Argilla tasks (``jacal acquire``);
* :func:`confidence_file`: per-item confidence of a model's predictions, failure-detection metrics
  when labels are given, a fitted estimator saved or reused (``jacal confidence``);
* :func:`score_file`: per-point Jacobian norms of a dataset split or an array file (``jacal score``);
* :func:`train_checkpoint`: a classifier trained on a dataset or on the pool items a labeling
  tool's export labels, saved as a checkpoint (``jacal train``).

Each returns the summary ``dict`` that the command prints with ``--json``. Bad input raises
:class:`jacal.JacalError` with one line, before any output file is written; what is worth telling
but not fatal (skipped items, unknown ids, ignored options) goes to ``on_warning`` (default:
:func:`warnings.warn`). ``progress(done, total)`` follows the long pass.

Each step is a module of this package (``acquire``, ``stop``, ``confidence``, ``score``, ``train``),
with what they share in ``_common``; every step is imported from here.
"""
from jacal.pipeline.acquire import acquire_batch
from jacal.pipeline.confidence import confidence_file
from jacal.pipeline.score import score_file
from jacal.pipeline.stop import stop_advice
from jacal.pipeline.train import train_checkpoint

__all__ = ["acquire_batch", "stop_advice", "confidence_file", "score_file", "train_checkpoint"]
