import pytest
import torch

import jacal
from jacal import JacalError, load_checkpoint, mlp, save_checkpoint


def test_checkpoint_round_trip_and_corruption(tmp_path):
    m = mlp(64, 10, width=8, depth=2, activation="tanh", seed=1).eval()
    path = save_checkpoint(tmp_path / "m.pt", m, metadata={"dataset": "digits"})
    ck = load_checkpoint(path)
    x = torch.rand(5, 64)
    torch.testing.assert_close(ck.model(x), m(x))
    assert ck.metadata["dataset"] == "digits" and ck.kind == "mlp" and not ck.model.training
    cnn = jacal.cnn((1, 8, 8), 10, seed=0).eval()
    torch.testing.assert_close(load_checkpoint(save_checkpoint(tmp_path / "c.pt", cnn)).model(x.reshape(5, 1, 8, 8)),
                               cnn(x.reshape(5, 1, 8, 8)))
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(JacalError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(JacalError, match="not a jacal checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(TypeError, match="jacal.models"):
        save_checkpoint(tmp_path / "n.pt", torch.nn.Linear(2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "m.pt", "other.pt", "t.pt"]  # no temp files left
