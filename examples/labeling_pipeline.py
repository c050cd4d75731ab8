"""A labeling pipeline with jacal: train on what is labeled, pick what to label next, route doubtful
predictions to human review.

    python examples/labeling_pipeline.py [--workdir runs/labeling]

1. Train a classifier on a small labeled set (200 of scikit-learn's digits).
2. Write the unlabeled rest as a folder of PNG images (what a labeling tool usually holds).
3. Acquire the 50 items the annotators should label next (``jacobian``: sensitive and
   spread out), as the CSV a labeling tool imports: id, rank, score, predicted, confidence.
4. Fit a confidence estimator (max softmax + log Jacobian norm, logistic regression) on a held-out
   labeled split, and route the pool's low-confidence predictions to review.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import jacal
from jacal.io import load_image_folder, write_batch, write_rows
from jacal.confidence import ConfidenceEstimator

ap = argparse.ArgumentParser()
ap.add_argument("--workdir", default="runs/labeling")
args = ap.parse_args()
work = Path(args.workdir)
(work / "unlabeled").mkdir(parents=True, exist_ok=True)

# 1. a small labeled set, plus a held-out labeled split for the confidence estimator
data = jacal.load_dataset("digits")
rng = np.random.default_rng(0)
order = rng.permutation(len(data.x_train))
lab, held, unl = order[:200], order[200:400], order[400:]
labeled = jacal.Splits("digits-200", data.x_train[lab], data.y_train[lab], data.x_test, data.y_test, 10)
model = jacal.mlp(64, 10, width=128, depth=2, seed=0)
res = jacal.train(model, labeled, epochs=60, lr=3e-3, batch_size=32, seed=0)
print(f"trained on {len(lab)} labels: test accuracy {res.test_accuracy:.3f}")

# 2. the unlabeled pool as image files
for i in unl:
    img = (data.x_train[i, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(img, mode="L").save(work / "unlabeled" / f"digit_{i:04d}.png")
pool, ids = load_image_folder(work / "unlabeled", size=(8, 8), channels=1)

# 3. the next batch to label
batch = jacal.acquire(model, pool, 50, strategy="jacobian", seed=0)
write_batch(work / "to_label.csv", batch, ids, fmt="csv")  # or fmt="label-studio" / "argilla" with label_names
print(f"wrote {work / 'to_label.csv'}: {len(batch.indices)} items for the annotators")

# 4. which model predictions to trust: a combined estimator fitted on the held-out labeled split
est = ConfidenceEstimator("combined").learn(model, data.x_train[held], data.y_train[held])
print("held-out test metrics:", {k: round(v, 4) for k, v in est.evaluate(model, data.x_test, data.y_test).items()})
p_correct = est.probability_correct(model, pool)
review = np.flatnonzero(p_correct < 0.9)
to_review = [{"id": ids[i], "predicted": int(batch.predicted[i]), "p_correct": round(float(p_correct[i]), 4)}
             for i in review[np.argsort(p_correct[review])]]
write_rows(work / "to_review.csv", to_review, fmt="csv", fields=["id", "predicted", "p_correct"])
with torch.no_grad():
    source = [int(name[len("digit_"):-len(".png")]) for name in ids]  # files are listed by name
    truly_wrong = (model(pool).argmax(1) != data.y_train[source]).numpy()  # known here, not in real life
print(f"wrote {work / 'to_review.csv'}: {len(review)} of {len(ids)} predictions below P(correct)=0.9; "
      f"they hold {truly_wrong[review].sum()} of the {truly_wrong.sum()} actual errors")
