"""One active-learning round trip through Label Studio's file formats, offline (no server needed).

    python examples/label_studio_round.py [--workdir DIR]

1. A pool as labeling tools hold one: scikit-learn's digits written as PNG files, listed in a
   manifest (CSV: id, path) whose ids have spaces, commas and non-ASCII characters, with relative
   paths and file:// URIs.
2. A first random batch "annotated in Label Studio": its JSON export (labels from the ground truth).
3. ``jacal train --pool manifest.csv --labels export.json``: a model trained on the export.
4. ``jacal acquire --format label-studio --exclude export.json``: the next batch, as Label Studio
   task-import JSON with the model's predictions as pre-annotations (lowest score = least confident).
5. Annotators label it (simulated: the export of the whole project, labels from the ground truth),
   then train again and acquire the batch after.

It checks its own targets: the second batch shares no item with the first, and every id survives
the trip unchanged (each labeled id is found in the pool again, so every labeled item is trained on).
"""
import argparse
import csv
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
K = 40

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--workdir", default=None, help="Folder for the pool and the round's files (default: a new temp folder).")
args = ap.parse_args()
work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="jacal-ls-round-"))
(work / "images").mkdir(parents=True, exist_ok=True)
start = time.perf_counter()


def jacal_cli(*argv):
    """Run one `jacal` command as a user would, and return its --json summary."""
    cmd = ["jacal", *map(str, argv)]
    print("$", shlex.join(cmd))
    r = subprocess.run([sys.executable, "-m", "jacal.cli.app", *cmd[1:], "--json"], capture_output=True, text=True,
                       encoding="utf-8")
    if r.returncode != 0:
        sys.exit(f"`{shlex.join(cmd)}` failed:\n{r.stderr}")
    for line in r.stderr.splitlines():
        print("  ", line)
    return json.loads(r.stdout)


# 1. the pool: PNG files and a manifest, ids a labeling pipeline must carry through unchanged
digits = load_digits()
truth, rows = {}, []
for i, (img, y) in enumerate(zip(digits.images, digits.target)):
    item = [f"scan {i:04d}", f"scan,{i:04d}", f"échantillon-{i:04d}", f"数字 {i:04d}"][i % 4]
    png = work / "images" / f"{i:04d}.png"
    Image.fromarray((img * 255 / 16).round().astype(np.uint8), mode="L").save(png)
    rows.append({"id": item, "path": png.resolve().as_uri() if i % 5 == 0 else f"images/{png.name}"})
    truth[item] = NAMES[int(y)]
with open(work / "manifest.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, ["id", "path"])
    w.writeheader()
    w.writerows(rows)
print(f"pool: {len(rows)} PNG files listed in {work / 'manifest.csv'}")


def annotate(task_files, export):
    """Simulated annotators: Label Studio's JSON export of every task imported so far, labeled."""
    tasks = [t for tf in task_files for t in json.loads(Path(tf).read_text(encoding="utf-8"))]
    for n, t in enumerate(tasks, 1):
        t["id"] = n  # Label Studio's own task id; jacal's item id stays in data.id
        t["annotations"] = [{"id": n, "completed_by": 1, "was_cancelled": False, "ground_truth": False, "task": n,
                             "result": [{"id": f"r{n}", "from_name": "label", "to_name": "image", "type": "choices",
                                         "origin": "manual", "value": {"choices": [truth[t["data"]["id"]]]}}]}]
    export.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return [t["data"]["id"] for t in tasks]


# 2. a first batch picked at random and labeled (its tasks as Label Studio would have received them)
rng = np.random.default_rng(0)
starter = [rows[i] for i in rng.choice(len(rows), size=K, replace=False)]
(work / "round0_tasks.json").write_text(json.dumps([{"data": {"image": r["path"], "id": r["id"]}} for r in starter],
                                                   ensure_ascii=False), encoding="utf-8")
labeled0 = annotate([work / "round0_tasks.json"], work / "export0.json")

names = ",".join(NAMES)
common = ["--width", 64, "--depth", 1, "--epochs", 60, "--lr", 3e-3, "--batch-size", 32, "--force"]
batches, labeled = [], labeled0
for rnd in (1, 2):
    export = work / f"export{rnd - 1}.json"
    # 3. retrain from the tool's export
    t = jacal_cli("train", "--pool", work / "manifest.csv", "--labels", export, "--label-names", names,
                  "--out", work / f"model{rnd}.pt", *common)
    # every labeled id was found in the pool again: ids survived the trip unchanged
    assert t["source"]["n_labeled"] == len(labeled), (t["source"], len(labeled))
    # 4. the next batch, as Label Studio tasks with pre-annotations
    tasks_file = work / f"round{rnd}_tasks.json"
    a = jacal_cli("acquire", "--model", work / f"model{rnd}.pt", "--pool", work / "manifest.csv", "--k", K,
                  "--exclude", export, "--format", "label-studio", "--out", tasks_file, "--force")
    assert a["excluded"] == len(labeled) and not a["invalid"]
    tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    batch = [task["data"]["id"] for task in tasks]
    assert set(batch) <= set(truth) and not set(batch) & set(labeled), "a batch repeats a labeled item"
    correct = np.mean([task["predictions"][0]["result"][0]["value"]["choices"][0] == truth[task["data"]["id"]]
                       for task in tasks])
    print(f"round {rnd}: trained on {len(labeled)} labels (train acc {t['metrics']['train_accuracy']:.3f}); "
          f"{len(batch)} tasks -> {tasks_file.name}, pre-annotations right on {correct:.0%} of them")
    batches.append(batch)
    # 5. annotators label the batch; the project's export now holds every task so far
    labeled = annotate([work / "round0_tasks.json"] + [work / f"round{r}_tasks.json" for r in range(1, rnd + 1)],
                       work / f"export{rnd}.json")

assert not set(batches[0]) & set(batches[1]), "the second batch repeats an item of the first"
odd = [i for i in batches[0] + batches[1] if "," in i or " " in i or not i.isascii()]
assert odd, "no id with spaces, commas or non-ASCII characters made the trip"
print(f"second batch disjoint from the first; {len(odd)} ids with spaces, commas or non-ASCII characters made the "
      f"round trip unchanged (e.g. {odd[0]!r}); {time.perf_counter() - start:.1f}s; files in {work}")
