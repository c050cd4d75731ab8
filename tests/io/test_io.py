"""jacal.io and the labeling-pipeline CLI: annotations back in, round trips through the tools' exports,
lazy decoding, and bad input as one-line errors that leave no output file behind (every pool format ×
every output format: tests/integration/test_pipeline.py)."""
import csv
import json

import numpy as np
import pytest
import torch

import jacal
import jacal.io as jio
from _cli import run as _run
from _helpers import one_line_error
from _pools import NAMES, build, read_batch as _read_batch, write_manifest


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build(tmp_path_factory.mktemp("io"))

def _label_studio_export(tasks_file, truth, cancel_first=False):
    """What Label Studio exports after annotators labeled every imported task (its JSON export format)."""
    tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    for n, t in enumerate(tasks):
        t["id"] = 1000 + n  # Label Studio's own task id, not jacal's
        value = {"choices": [truth[t["data"]["id"]]]}
        ann = {"id": n, "result": [{"id": f"r{n}", "from_name": "label", "to_name": "image", "type": "choices",
                                    "value": value, "origin": "manual"}],
               "was_cancelled": False, "ground_truth": False, "completed_by": 1, "task": t["id"]}
        cancelled = {**ann, "was_cancelled": True, "result": [{**ann["result"][0], "value": {"choices": ["zero"]}}]}
        t["annotations"] = [cancelled, ann] if cancel_first else [ann]
    return tasks


def _argilla_export(records_file, truth):
    """What Argilla's dataset.records.to_json writes after annotators answered every record."""
    records = json.loads(records_file.read_text(encoding="utf-8"))
    for r in records:
        r["responses"] = {"label": [{"value": truth[r["id"]], "user_id": "6f0c0a3e-5a4b-4c4f-8c1d-1c1c1c1c1c1c"}]}
        r.update({"vectors": {}, "status": "completed", "_server_id": "0b8ad2a4-8f52-4a39-9c34-1e0f4d5b8f53"})
    return records


@pytest.mark.parametrize("tool", ["label-studio", "argilla"])
def test_round_trip_through_a_tool_export(setup, tmp_path, tool):
    root, truth = setup["root"], setup["truth"]
    names = ",".join(NAMES)
    first = tmp_path / "first.json"
    r = _run("acquire", "--model", setup["model"], "--pool", root / "manifest.csv", "--k", 12, "--out", first,
             "--format", tool, "--label-names", names, "--strategy", "margin")
    assert r.exit_code == 0, r.output
    export = tmp_path / "export.json"
    done = _label_studio_export(first, truth, cancel_first=True) if tool == "label-studio" else _argilla_export(first, truth)
    export.write_text(json.dumps(done, ensure_ascii=False), encoding="utf-8")
    ann = jio.read_annotations(export, tool=tool, label_names=NAMES)
    assert ann.tool == tool and ann.labels == {i: truth[i] for i in ann.ids} and len(ann.ids) == 12
    assert set(ann.ids) <= set(setup["ids"])  # ids survived the trip unchanged
    # retrain from the export: the checkpoint keeps the label names, so acquire needs no --label-names
    model2 = tmp_path / "model2.pt"
    r = _run("train", "--pool", root / "manifest.csv", "--labels", export, "--label-names", names, "--out", model2,
             "--width", 32, "--depth", 1, "--epochs", 100, "--lr", 0.01, "--json")
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    assert meta["label_names"] == NAMES and meta["source"]["n_labeled"] == 12 and meta["input_shape"] == [1, 8, 8]
    assert meta["metrics"]["test_accuracy"] is None and meta["metrics"]["train_accuracy"] > 0.5
    second = tmp_path / "second.json"
    r = _run("acquire", "--model", model2, "--pool", root / "manifest.csv", "--k", 12, "--out", second, "--format", tool,
             "--exclude", export, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["excluded"] == 12
    ids2, predicted2, _ = _read_batch(second, tool, strategy="jacobian")
    assert not set(ids2) & set(ann.ids) and set(ids2) <= set(setup["ids"])
    assert set(predicted2) <= set(NAMES)  # the names came from the checkpoint


def test_csv_labels_and_plain_id_lists(setup, tmp_path):
    ids = setup["ids"]
    with open(tmp_path / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows([[ids[0], "3"], [ids[1], "3"], [ids[2], ""]])  # ids with commas and quotes, CSV-quoted
    ann = jio.read_annotations(tmp_path / "labels.csv")
    assert ann.tool == "csv" and ann.ids == ids[:3] and ann.labels == {ids[0]: "3", ids[1]: "3"}
    (tmp_path / "plain.txt").write_text("id\nitem 0\nélément-2\n", encoding="utf-8")
    assert jio.read_ids(tmp_path / "plain.txt") == ["item 0", "élément-2"]
    (tmp_path / "rows.jsonl").write_text('{"id": "item 0", "label": "one"}\n{"id": 7}\n')
    assert jio.read_annotations(tmp_path / "rows.jsonl", label_names=NAMES).labels == {"item 0": "one"}
    assert jio.parse_label_names('"a, b", c,d') == ["a, b", "c", "d"]
    # without label names the labels are class indices; with them, names
    pool = jio.open_pool(setup["pools"]["csv"], infer_image_shape=True)
    assert pool.input_shape == (1, 8, 8)
    lab = jio.labeled_items(pool, ann)
    assert lab.label_names == [str(i) for i in range(4)] and lab.y.tolist() == [3, 3] and lab.x.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(lab.x.numpy(), setup["x"][:2], atol=0.5 / 255 + 1e-6)


def test_majority_label_and_single_choice(tmp_path):
    tasks = [{"id": 1, "data": {"id": "a", "image": "x.png"}, "annotations": [
        {"result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [c]}}],
         "was_cancelled": False} for c in ("two", "one", "two")]}]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    assert jio.read_annotations(tmp_path / "ls.json").labels == {"a": "two"}
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["one", "two"]
    (tmp_path / "multi.json").write_text(json.dumps(tasks))
    with pytest.raises(jacal.JacalError, match="2 choices"):
        jio.read_annotations(tmp_path / "multi.json")
    with pytest.raises(jacal.JacalError, match="pass `question`"):
        jio.read_annotations(tmp_path / "ls.json", question="sentiment")


def test_unreadable_files_are_skipped_with_one_warning_each(setup, tmp_path):
    root = setup["root"]
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    rows = [{"id": "gone", "path": str(tmp_path / "missing.png")}, {"id": "broken", "path": str(tmp_path / "broken.png")},
            {"id": "web", "path": "https://example.org/x.png"}]
    rows += [{"id": i, "path": str(root / "files" / f"{j:02d}.png")} for j, i in enumerate(setup["ids"][:10])]
    write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "b.csv"
    r = _run("acquire", "--model", setup["model"], "--pool", tmp_path / "m.csv", "--k", 10, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: skipped item")]
    assert len(warnings) == 3
    assert "'gone': file not found" in warnings[0] and "'broken': cannot read" in warnings[1] and "not a local file" in warnings[2]
    assert json.loads(r.stdout)["invalid"] == ["gone", "broken", "web"]
    assert {row["id"] for row in csv.DictReader(out.open(encoding="utf-8"))} == set(setup["ids"][:10])
    one_line_error(_run("acquire", "--model", setup["model"], "--pool", tmp_path / "m.csv", "--k", 11, "--out",
                        tmp_path / "c.csv"), "after exclusions (10)")
    assert not (tmp_path / "c.csv").exists()


def test_manifest_pool_decodes_lazily_one_batch_at_a_time(setup):
    pool = jio.open_pool(setup["pools"]["csv"], image_size=(8, 8), channels=1)
    assert pool.items.decoded == 0  # opening reads the manifest, not the images
    assert not any(isinstance(v, torch.Tensor) for v in vars(pool.items).values())  # it keeps no pixels
    seen = []
    model = jacal.load_checkpoint(setup["model"]).model
    jacal.acquire(model, pool.items, 3, strategy="margin", batch_size=8,
                  progress=lambda done, n: seen.append((done, pool.items.decoded)))
    assert [s[0] for s in seen] == [8, 16, 24, 32, 40]
    assert all(decoded == done for done, decoded in seen)  # decoded chunk by chunk, never ahead of scoring


def test_nested_folder_ids_are_relative_paths(setup):
    x, ids = jio.load_image_folder(setup["pools"]["nested"], size=(8, 8), channels=1)
    assert ids == sorted(setup["item_of"]["nested"]) and all("/" in i for i in ids)
    order = [setup["item_of"]["nested"][i] for i in ids]
    np.testing.assert_allclose(x.numpy(), setup["x"][order], atol=0.5 / 255 + 1e-6)


def test_bad_input_is_one_line_and_writes_nothing(setup, tmp_path):
    root, model = setup["root"], setup["model"]
    out = tmp_path / "out.json"

    def bad(fragment, *args, pool=root / "manifest.csv", fmt="label-studio"):
        one_line_error(_run("acquire", "--model", model, "--pool", pool, "--k", 3, "--out", out, "--format", fmt, *args),
                       fragment)
        assert not out.exists() and not list(tmp_path.glob(".out.json.*"))

    (tmp_path / "noid.csv").write_text("name,path\na,files/00.png\n")
    bad("no 'id' column", pool=tmp_path / "noid.csv")
    (tmp_path / "nopath.jsonl").write_text('{"id": "a", "file": "files/00.png"}\n')
    bad("no 'path' or 'uri' column", pool=tmp_path / "nopath.jsonl")
    (tmp_path / "dup.csv").write_text("id,path\na,files/00.png\nb,files/01.png\na,files/02.png\n")
    bad("'a' twice (rows 2 and 4)", pool=tmp_path / "dup.csv")
    bad("Invalid value for '--pool': path", pool=tmp_path / "none.csv")
    bad("Invalid value for '--exclude': file", "--exclude", tmp_path / "none.json")
    (tmp_path / "names.csv").write_text(f'id,label\n"{setup["ids"][1]}",seven\n', encoding="utf-8")
    bad("is labeled 'seven', which is not one of the label names (0, 1", "--exclude", tmp_path / "names.csv")
    argilla = _argilla_export_file(setup, tmp_path)
    bad("is Argilla JSON, not Label Studio JSON", "--exclude", argilla, "--label-names", ",".join(NAMES))
    (tmp_path / "coco.json").write_text('[{"image_id": 1, "category_id": 3}]')
    bad("neither a Label Studio export", "--exclude", tmp_path / "coco.json")
    bad("has 3 names but the model has 10 classes", "--label-names", "a,b,c")
    bad("repeats 'a'", "--label-names", "a,a,b,c,d,e,f,g,h,i")
    one_line_error(_run("acquire", "--model", model, "--pool", root / "manifest.csv", "--k", 3, "--out", out), "--format")
    assert not out.exists()
    # train from an export: the same checks, and no checkpoint written
    ck = tmp_path / "m.pt"
    one_line_error(_run("train", "--labels", argilla, "--out", ck), "--pool and --labels go together")
    one_line_error(_run("train", "--pool", root / "manifest.csv", "--labels", argilla, "--out", ck), "not class indices")
    one_line_error(_run("train", "--pool", root / "manifest.csv", "--labels", argilla, "--label-names", "a,b", "--out",
                        ck), "not one of the label names (a, b)")
    assert not ck.exists()


def _argilla_export_file(setup, tmp_path):
    recs = [{"id": i, "fields": {"image": "x.png"}, "metadata": {}, "suggestions": {},
             "responses": {"label": [{"value": setup["truth"][i], "user_id": "u"}]}, "vectors": {}, "status": "completed",
             "_server_id": None} for i in setup["ids"][:3]]
    path = tmp_path / "argilla.json"
    path.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    return path


def test_argilla_records_load_with_the_argilla_sdk(setup, tmp_path):
    """Our records are what Argilla's own Record.from_dict reads, and its to_dict is what we read back."""
    rg = pytest.importorskip("argilla")
    out = tmp_path / "records.json"
    r = _run("acquire", "--model", setup["model"], "--pool", setup["pools"]["jsonl"], "--k", 5, "--out", out,
             "--format", "argilla", "--label-names", ",".join(NAMES), "--strategy", "margin")
    assert r.exit_code == 0, r.output
    written = json.loads(out.read_text(encoding="utf-8"))
    exported = []
    for d in written:
        rec = rg.Record.from_dict(d)
        assert rec.id == d["id"] and rec.fields["image"] == d["fields"]["image"]
        s = rec.suggestions["label"]
        assert (s.value, s.score, s.agent) == (d["suggestions"]["label"]["value"], d["suggestions"]["label"]["score"], "jacal")
        assert dict(rec.metadata) == d["metadata"]
        rec.responses.add(rg.Response("label", setup["truth"][d["id"]], user_id="6f0c0a3e-5a4b-4c4f-8c1d-1c1c1c1c1c1c"))
        exported.append(rec.to_dict())
    (tmp_path / "export.json").write_text(json.dumps(exported, default=str, ensure_ascii=False), encoding="utf-8")
    ann = jio.read_annotations(tmp_path / "export.json", tool="argilla", label_names=NAMES)
    assert ann.labels == {d["id"]: setup["truth"][d["id"]] for d in written}


def test_label_studio_tasks_validate_with_the_label_studio_sdk(setup, tmp_path):
    """Our tasks pass the Label Studio SDK's own checks against an image-classification config."""
    pytest.importorskip("label_studio_sdk")
    from label_studio_sdk.label_interface import LabelInterface
    from label_studio_sdk.label_interface.objects import PredictionValue

    config = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">'
              + "".join(f'<Choice value="{n}"/>' for n in NAMES) + "</Choices></View>")
    li = LabelInterface(config)
    out = tmp_path / "tasks.json"
    r = _run("acquire", "--model", setup["model"], "--pool", setup["pools"]["csv"], "--k", 5, "--out", out,
             "--format", "label-studio", "--label-names", ",".join(NAMES))
    assert r.exit_code == 0, r.output
    tasks = json.loads(out.read_text(encoding="utf-8"))
    for t in tasks:
        assert all(t["data"].get(o.value_name) for o in li.objects if o.value_is_variable)  # $image is there
        (pred,) = t["predictions"]
        assert PredictionValue(**pred).model_version == "jacal"
        assert li.validate_prediction(pred, return_errors=True) == []
    wrong = json.loads(json.dumps(tasks[0]["predictions"][0]))
    wrong["result"][0]["value"]["choices"] = ["ten"]  # the same validator does catch a bad prediction
    assert li.validate_prediction(wrong, return_errors=True)


def test_public_names_resolve_and_internals_stay_out():
    """Every public name of jacal.io resolves; file plumbing and the CLI's helpers are not part of it."""
    assert all(hasattr(jio, name) for name in jio.__all__)
    for internal in ("atomic_open", "atomic_path", "output_format", "resolve_label_names", "default_label_names"):
        assert internal not in jio.__all__ and not hasattr(jio, internal), internal
    import jacal.features

    assert not {"shard_job", "concat_features", "iter_pool", "pool_length", "has_dropout"} & set(jacal.features.__all__)


def _ls_csv_export(path, rows, sep=","):
    """Label Studio's CSV / TSV export (label_studio_sdk converter, csv2.convert): one row per annotation, the
    columns sorted, non-numeric values quoted, ``id`` holding data.id (jacal's id) and the label in the column
    named after the <Choices> control."""
    fields = ["annotation_id", "annotator", "created_at", "id", "image", "label", "lead_time", "updated_at"]
    with open(path, "w", newline="", encoding="utf8") as f:
        w = csv.DictWriter(f, fieldnames=fields, quoting=csv.QUOTE_NONNUMERIC, delimiter=sep)
        w.writeheader()
        for n, (item, label) in enumerate(rows):
            w.writerow({"annotation_id": n + 1, "annotator": n % 3 + 1, "created_at": "2026-12-01T10:00:00Z",
                        "id": item, "image": f"/data/local-files/?d=x/{n}.png", "label": label, "lead_time": 2.5,
                        "updated_at": "2026-12-01T10:00:00Z"})


@pytest.mark.parametrize("sep", [",", "\t"])
def test_label_studio_csv_and_tsv_exports_take_the_majority(tmp_path, sep):
    path = tmp_path / ("export.tsv" if sep == "\t" else "export.csv")
    _ls_csv_export(path, [("scan,1", "nine"), ("scan,1", "zero"), ("scan,1", "nine"), ('say "2"', "one"),
                          ("数字 3", "none of these"), ("数字 3", "two"), ("数字 3", "None of these")], sep=sep)
    ann = jio.read_annotations(path, label_names=NAMES)
    assert ann.ids == ["scan,1", 'say "2"', "数字 3"] and ann.labels == {"scan,1": "nine", 'say "2"': "one"}
    assert ann.out_of_set == ["数字 3"] and ann.tool == "csv"
    (tmp_path / "ids.tsv").write_text("name\tpath\na\tb\n")
    with pytest.raises(jacal.JacalError, match="TSV without an 'id' column"):
        jio.read_annotations(tmp_path / "ids.tsv")
    (tmp_path / "two.txt").write_text("a\tb\nc\td\n")
    with pytest.raises(jacal.JacalError, match="tab-separated without an 'id' column"):
        jio.read_annotations(tmp_path / "two.txt")


def test_json_min_export_is_refused_naming_the_export_to_use(tmp_path):
    # JSON-MIN puts Label Studio's task id in "id" over jacal's data.id: it cannot be read back
    rows = [{"image": "/data/local-files/?d=x/0.png", "id": 17, "label": "zero", "annotator": 1, "annotation_id": 3,
             "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:00Z", "lead_time": 1.0}]
    (tmp_path / "min.json").write_text(json.dumps(rows))
    with pytest.raises(jacal.JacalError, match="JSON-MIN export.*export the project as JSON"):
        jio.read_annotations(tmp_path / "min.json")


def test_none_of_these_and_skips_are_out_of_set_in_every_tool(tmp_path):
    def ls_ann(choice=None, cancelled=False):
        return {"was_cancelled": cancelled, "result": [] if choice is None else [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}

    tasks = [{"id": 1, "data": {"id": "a"}, "annotations": [ls_ann("none of these")]},
             {"id": 2, "data": {"id": "b"}, "annotations": [ls_ann(cancelled=True)]},  # skipped: out of set
             {"id": 3, "data": {"id": "c"}, "annotations": [ls_ann(cancelled=True), ls_ann("two")]},  # labeled wins
             {"id": 4, "data": {"id": "d"}, "annotations": [ls_ann("one"), ls_ann("none of these"),
                                                            ls_ann("none of these")]},  # majority: out of set
             {"id": 5, "data": {"id": "e"}, "annotations": []}]  # queued
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    ann = jio.read_annotations(tmp_path / "ls.json", label_names=NAMES)
    assert ann.ids == ["a", "b", "c", "d", "e"] and ann.labels == {"c": "two"} and ann.out_of_set == ["a", "b", "d"]
    assert ann.label_indices(NAMES) == {"c": 2}
    records = [{"id": "p", "fields": {}, "responses": {"label": [{"value": "None of these", "user_id": "u"}]}},
               {"id": "q", "fields": {}, "responses": {"label": [{"value": None, "user_id": "u", "status": "discarded"}]}},
               {"id": "r", "fields": {}, "responses": {"label": [{"value": "one", "user_id": "u"}]}}]
    (tmp_path / "argilla.json").write_text(json.dumps(records))
    ann = jio.read_annotations(tmp_path / "argilla.json", label_names=NAMES)
    assert ann.labels == {"r": "one"} and ann.out_of_set == ["p", "q"]
    (tmp_path / "rows.jsonl").write_text('{"id": "x", "label": "none of these"}\n{"id": "y", "label": "one"}\n')
    assert jio.read_annotations(tmp_path / "rows.jsonl").out_of_set == ["x"]
    with pytest.raises(jacal.JacalError, match="reserved answer"):
        jio.parse_label_names("zero,none of these")


def test_several_files_are_one_union(tmp_path):
    (tmp_path / "a.csv").write_text("id,label\nx,one\ny,two\nz,\n")
    (tmp_path / "b.csv").write_text("id,label\ny,none of these\nw,three\n")
    m = jio.read_all_annotations([tmp_path / "a.csv", tmp_path / "b.csv"], label_names=NAMES)
    assert m.ids == ["x", "y", "z", "w"] and m.labels == {"x": "one", "w": "three"} and m.out_of_set == ["y"]
    assert m.counts == {str(tmp_path / "a.csv"): 3, str(tmp_path / "b.csv"): 2}
    assert jio.read_all_annotations(tmp_path / "a.csv").labels == {"x": "one", "y": "two"}


def test_batch_rank_is_the_strategy_order_and_score_its_per_item_score(tmp_path):
    """``rank`` keeps the strategy's order (for k-means++ strategies the draw order) and ``score`` is the
    per-item score, not re-sorted; every strategy a user chooses has its meaning documented."""
    import csv

    import torch

    model = jacal.mlp(12, 3, width=16, depth=1, seed=0).eval()
    pool = torch.rand(80, 12)
    res = jacal.acquire(model, pool, 6, strategy="jacobian", seed=0)
    ids = [f"item{i}" for i in range(80)]
    jio.write_batch(tmp_path / "b.csv", res, ids, fmt="csv")
    rows = list(csv.DictReader(open(tmp_path / "b.csv")))
    assert [r["id"] for r in rows] == [ids[i] for i in res.indices]
    assert [int(r["rank"]) for r in rows] == list(range(1, 7))
    np.testing.assert_allclose([float(r["score"]) for r in rows], res.scores[res.indices], rtol=1e-12)
    study_variants = {"jacobian-closed", "jacobian-id-half", "jacobian-features", "margin-knn"}
    built_in = {n for n, cls in jacal.STRATEGIES.items() if cls.__module__.startswith("jacal.")}
    for name in built_in - study_variants:
        assert f"``{name}``" in jio.batches.__doc__, name
