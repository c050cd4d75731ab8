"""The labeling-pipeline tests' data: a trained model, one pool in every form, and a reader of every batch format."""
import csv
import json

import numpy as np

from _cli import digits_model

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
N = 40


def odd_id(j):
    """Ids a labeling pipeline must carry through unchanged: spaces, commas, quotes, non-ASCII."""
    return [f"item {j}", f"item,{j}", f"élément-{j}", f"数字{j}", f'say "{j}"'][j % 5]


def write_manifest(path, rows):
    """A CSV manifest with ``id`` and ``path`` columns (CSV-quoted where the values need it)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["id", "path"])
        w.writeheader()
        w.writerows(rows)


def build(root):
    """A trained model and one 40-item pool in every form (arrays with odd ids, flat and nested image
    folders, CSV and JSON-lines manifests), with what each form's ids name: a dict."""
    from PIL import Image

    ck, _, d = digits_model(root / "model.pt", metadata={"input_shape": [1, 8, 8], "n_classes": 10})
    x = d.x_test[:N].numpy()
    ids = [odd_id(j) for j in range(N)]
    truth = {ids[j]: NAMES[int(d.y_test[j])] for j in range(N)}
    pixels = (x[:, 0] * 255).round().astype(np.uint8)
    np.savez(root / "pool.npz", x=x, ids=np.array(ids))
    np.save(root / "pool.npy", x)
    flat, nested, files = root / "flat", root / "nested", root / "files"
    for folder in (flat, nested, files):
        folder.mkdir()
    item_of = {"npy": {str(j): j for j in range(N)}, "npz": {ids[j]: j for j in range(N)}}
    item_of.update({k: {} for k in ("folder", "nested", "csv", "jsonl")})
    rows = []
    for j in range(N):
        img = Image.fromarray(pixels[j], mode="L")
        name = f"{j:02d} é,{j}.png"  # file names with spaces, commas and non-ASCII characters
        img.save(flat / name)
        item_of["folder"][name] = j
        (nested / NAMES[int(d.y_test[j])]).mkdir(exist_ok=True)
        img.save(nested / NAMES[int(d.y_test[j])] / name)
        item_of["nested"][f"{NAMES[int(d.y_test[j])]}/{name}"] = j
        img.save(files / f"{j:02d}.png")
        rows.append({"id": ids[j], "path": f"files/{j:02d}.png"})
        item_of["csv"][ids[j]] = item_of["jsonl"][ids[j]] = j
    write_manifest(root / "manifest.csv", rows)
    with open(root / "manifest.jsonl", "w", encoding="utf-8") as f:  # absolute file:// URIs
        for r in rows:
            f.write(json.dumps({"id": r["id"], "uri": (root / r["path"]).resolve().as_uri()}, ensure_ascii=False) + "\n")
    pools = {"npy": root / "pool.npy", "npz": root / "pool.npz", "folder": flat, "nested": nested,
             "csv": root / "manifest.csv", "jsonl": root / "manifest.jsonl"}
    return {"root": root, "model": ck, "pools": pools, "item_of": item_of, "ids": ids, "truth": truth, "x": x,
            "y": d.y_test[:N].numpy()}


def read_batch(path, fmt, version="jacal", strategy="margin"):
    """(ids in rank order, predicted names or indices, confidences) from any batch format."""
    text = path.read_text(encoding="utf-8")
    if fmt == "csv":
        rows = list(csv.DictReader(text.splitlines()))
        return [r["id"] for r in rows], [r["predicted"] for r in rows], [float(r["confidence"]) for r in rows]
    if fmt == "jsonl":
        rows = [json.loads(ln) for ln in text.splitlines()]
        return [str(r["id"]) for r in rows], [str(r["predicted"]) for r in rows], [r["confidence"] for r in rows]
    items = json.loads(text)
    if fmt == "label-studio":
        assert [t["data"]["al_rank"] for t in items] == list(range(1, len(items) + 1))
        for t in items:
            assert set(t["data"]) >= {"id", "al_score", "al_rank", "strategy"} and t["data"]["strategy"] == strategy
            (pred,) = t["predictions"]
            assert pred["model_version"] == version
            (res,) = pred["result"]
            assert res["from_name"] == "label" and res["to_name"] == "image" and res["type"] == "choices"
        return ([str(t["data"]["id"]) for t in items], [t["predictions"][0]["result"][0]["value"]["choices"][0] for t in items],
                [t["predictions"][0]["score"] for t in items])
    assert [r["metadata"]["al_rank"] for r in items] == list(range(1, len(items) + 1))
    for r in items:
        assert set(r) == {"id", "fields", "metadata", "suggestions"} and set(r["suggestions"]) == {"label"}
        assert r["suggestions"]["label"]["agent"] == version and "al_score" in r["metadata"]
    return ([r["id"] for r in items], [r["suggestions"]["label"]["value"] for r in items],
            [r["suggestions"]["label"]["score"] for r in items])
