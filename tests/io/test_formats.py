"""The labeling tools' file shapes, pinned value by value: what jacal writes for each tool (batch rows,
Label Studio tasks and predictions, Argilla records) and what it reads back from each tool's export
after annotators answered those very items."""
import json
from types import SimpleNamespace

import numpy as np

import jacal.io as jio
from jacal.serve.protocol import LabelConfig, prediction

NAMES = ["cat", "dog", "bird"]


def _result():
    """Two picks of a three-item pool, with reasons: item 2 first, then item 0."""
    return SimpleNamespace(indices=np.array([2, 0]), scores=np.array([0.5, 0.1, 0.9]),
                           predicted=np.array([1, 0, 2]), confidence=np.array([0.6, 0.7, 0.4]),
                           strategy="margin", reasons=["near dog", "near bird"],
                           reason_fields={"runner_up": np.array([1, 2]), "margin": np.array([0.25, float("nan")])})


def test_batch_rows_are_pinned():
    assert jio.batch_rows(_result(), ["a", "b", "c"]) == [
        {"id": "c", "rank": 1, "score": 0.9, "predicted": 2, "confidence": 0.4, "reason": "near dog",
         "runner_up": 1, "margin": 0.25},
        {"id": "a", "rank": 2, "score": 0.5, "predicted": 1, "confidence": 0.6, "reason": "near bird",
         "runner_up": 2, "margin": None}]


def test_label_studio_tasks_are_pinned_and_read_back():
    tasks = jio.label_studio_tasks(_result(), ["a", "b", "c"], label_names=NAMES, uris=["ua", "ub", "uc"],
                                   model_version="v1")
    assert tasks == [
        {"data": {"image": "uc", "id": "c", "al_score": 0.9, "al_rank": 1, "strategy": "margin",
                  "al_reason": "near dog", "al_runner_up": "dog", "al_margin": 0.25},
         "predictions": [{"model_version": "v1", "score": 0.4, "result": [
             {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["bird"]}}]}]},
        {"data": {"image": "ua", "id": "a", "al_score": 0.5, "al_rank": 2, "strategy": "margin",
                  "al_reason": "near bird", "al_runner_up": "bird", "al_margin": None},
         "predictions": [{"model_version": "v1", "score": 0.6, "result": [
             {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}]}]}]
    # annotators accept the first pre-annotation and skip the second: the export reads back
    exported = json.loads(json.dumps(tasks))
    exported[0]["annotations"] = [{"result": exported[0]["predictions"][0]["result"], "was_cancelled": False}]
    exported[1]["annotations"] = [{"result": [], "was_cancelled": True}]
    ann = jio.annotations_from_label_studio(exported, label_names=NAMES)
    assert (ann.ids, ann.labels, ann.out_of_set, ann.tool) == (["c", "a"], {"c": "bird"}, ["a"], "label-studio")


def test_argilla_records_are_pinned_and_read_back(tmp_path):
    records = jio.argilla_records(_result(), ["a", "b", "c"], label_names=NAMES, uris=["ua", "ub", "uc"],
                                  model_version="v1")
    assert records == [
        {"id": "c", "fields": {"image": "uc"},
         "metadata": {"al_score": 0.9, "al_rank": 1, "al_reason": "near dog", "al_runner_up": "dog", "al_margin": 0.25},
         "suggestions": {"label": {"value": "bird", "score": 0.4, "agent": "v1"}}},
        {"id": "a", "fields": {"image": "ua"},
         "metadata": {"al_score": 0.5, "al_rank": 2, "al_reason": "near bird", "al_runner_up": "bird",
                      "al_margin": None},
         "suggestions": {"label": {"value": "dog", "score": 0.6, "agent": "v1"}}}]
    records[0]["responses"] = {"label": [{"value": "bird", "user_id": "u1"}, {"value": "cat", "user_id": "u2"},
                                         {"value": "bird", "user_id": "u3"}]}
    records[1]["responses"] = {"label": [{"value": "dog", "user_id": "u1", "status": "discarded"}]}
    (tmp_path / "argilla.json").write_text(json.dumps(records), encoding="utf-8")
    ann = jio.read_annotations(tmp_path / "argilla.json", tool="argilla", label_names=NAMES)
    assert (ann.ids, ann.labels, ann.out_of_set, ann.tool) == (["c", "a"], {"c": "bird"}, ["a"], "argilla")


def test_tabular_batch_reads_back_as_a_list_of_ids(tmp_path):
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"batch.{fmt}"
        assert jio.write_batch(out, _result(), ["a", "b", "c"], fmt=fmt) == 2
        ann = jio.read_annotations(out)
        assert (ann.ids, ann.labels, ann.tool) == (["c", "a"], {}, "csv")


def test_label_studio_prediction_is_pinned():
    config = LabelConfig("label", "image", "image", ["cat", "dog"], reason_area="al_reason", stop_area="al_stop")
    assert prediction("dog", 0.25, config, "v1", confidence=0.5, reason="near cat", reason_fields={"margin": 0.1},
                      stop="keep labeling") == {
        "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}},
                   {"from_name": "al_reason", "to_name": "image", "type": "textarea", "value": {"text": ["near cat"]}},
                   {"from_name": "al_stop", "to_name": "image", "type": "textarea",
                    "value": {"text": ["keep labeling"]}}],
        "score": 0.25, "model_version": "v1", "confidence": 0.5, "reason": "near cat",
        "reason_fields": {"margin": 0.1}}
