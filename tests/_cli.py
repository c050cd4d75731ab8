"""Shared by the CLI and labeling-pipeline tests: one in-process `jacal` runner and one small trained model."""
from typer.testing import CliRunner

from jacal.cli.app import app

runner = CliRunner()


def run(*args):
    """``jacal ARGS`` in-process (arguments turned into strings); the click ``Result``."""
    return runner.invoke(app, [str(a) for a in args])


def digits_model(path, *, dropout=0.0, epochs=5, metadata=None):
    """A small MLP trained on 300 digits, saved as a jacal checkpoint at ``path``; (checkpoint, model, data)."""
    import jacal

    d = jacal.load_dataset("digits", n_train=300, seed=0)
    m = jacal.mlp(64, 10, width=32, depth=1, dropout=dropout, seed=0)
    jacal.train(m, d, epochs=epochs, seed=0)
    m.eval()
    return jacal.save_checkpoint(path, m, metadata=metadata or {"input_shape": [1, 8, 8]}), m, d
