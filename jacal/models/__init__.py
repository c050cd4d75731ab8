"""Models: the builders, the checkpoint format, and the loader of every model file jacal reads.

:mod:`jacal.models.builders` builds the paper's fully-connected nets (:class:`MLP`) and a small CNN
(:class:`SmallCNN`); each records its constructor arguments in ``.config``, so that
:mod:`jacal.models.checkpoint` can save it and rebuild it (:func:`save_checkpoint`,
:func:`load_checkpoint`). :func:`load_model_file` also reads TorchScript files and ``torch.export``
programs. How jacal takes embeddings and MC-dropout passes from such compiled models, and prepares
a user's model for derivatives without changing it, is private (``_compiled``, ``_utils``).
"""
from jacal.models.builders import ACTIVATIONS, MLP, MODEL_KINDS, SmallCNN, build_model, cnn, mlp
from jacal.models.checkpoint import Checkpoint, load_checkpoint, load_model_file, save_checkpoint

__all__ = ["MLP", "SmallCNN", "mlp", "cnn", "ACTIVATIONS", "build_model", "MODEL_KINDS",
           "save_checkpoint", "load_checkpoint", "load_model_file", "Checkpoint"]
