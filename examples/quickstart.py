"""Train a small MLP on the offline digits dataset and look at per-point sensitivity.

    python examples/quickstart.py
"""
import jacal

data = jacal.load_dataset("digits")                       # offline, (N, 1, 8, 8) in [0, 1]
model = jacal.mlp(data.input_dim, data.n_classes, width=128, depth=2, seed=0)
result = jacal.train(model, data, epochs=30, lr=3e-3, batch_size=32, seed=0)
print(f"train acc {result.train_accuracy:.3f}  test acc {result.test_accuracy:.3f}  gap {result.gap:.3f}")

norms = jacal.jacobian_norm(model, data.x_test)           # (N,) exact ‖∂softmax/∂x‖_F
wrong = model(data.x_test).argmax(1) != data.y_test
print(f"mean ‖J‖_F {norms.mean():.4f}; misclassified points: {norms[wrong].mean():.4f}, "
      f"correct: {norms[~wrong].mean():.4f}")

a1, a2, a3 = data.x_train[:3]                             # an ellipse through three training points
traj = jacal.ellipse(a1, a2, a3, n_points=240).float()
exact = jacal.transitions(model, traj, method="exact")
print(f"transitions around the ellipse: sampled {exact.sampled_count}, exact {exact.count}")
