"""Models in every format jacal reads, for the format × strategy × backend matrix tests."""
import warnings

import torch
from torch import nn

import jacal
from jacal.models import load_model_file


class Net(nn.Module):
    """Not a Sequential: its own forward, a body and a head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 32), nn.ReLU(),
                                  nn.Dropout(0.2))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))


class Residual(nn.Module):
    """A forward that running the layers in order does not reproduce."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.a(x))) + x)


FORMATS = ["checkpoint", "module", "scripted", "traced", "export"]
# cells that cannot work, with the one line that says why
PINNED = {("traced", "bald"): "traced TorchScript model keeps the dropout it was traced with"}


def build_formats(root):
    """The same trained MLP in every format (and a custom module): (models, their eager twins, a pool)."""
    warnings.simplefilter("ignore")
    d = jacal.load_dataset("digits", n_train=300, seed=0)
    mlp = jacal.mlp(64, 10, width=32, depth=2, dropout=0.2, seed=0)
    jacal.train(mlp, d, epochs=3, seed=0)
    mlp.eval()
    torch.manual_seed(0)
    net = Net().eval()
    x = d.x_test[:80].reshape(80, -1)
    seq = nn.Sequential(*mlp.children()).eval()  # the same layers, as a user's own Sequential (scriptable)
    jacal.save_checkpoint(root / "mlp.pt", mlp, metadata={"input_shape": [64]})
    torch.jit.script(seq).save(str(root / "scripted.pt"))
    torch.jit.trace(seq, x[:4]).save(str(root / "traced.pt"))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(seq, (x[:4],), dynamic_shapes={"input": {0: batch}}), str(root / "mlp.pt2"))
    models = {"checkpoint": load_model_file(root / "mlp.pt").model, "module": net,
              "scripted": load_model_file(root / "scripted.pt").model,
              "traced": load_model_file(root / "traced.pt").model,
              "export": load_model_file(root / "mlp.pt2").model}
    eager = {"checkpoint": mlp, "module": net, "scripted": seq, "traced": seq, "export": seq}
    return models, eager, x
