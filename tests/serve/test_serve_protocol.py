"""jacal.serve.protocol: Label Studio's ML-backend payloads, as its api_connector.py sends them, read
with plain dicts (no server, no web framework)."""
import math

import pytest

from jacal.serve import protocol as P

CONFIG = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">'
          '<Choice value="zero"/><Choice value="one"/><Choice value="none of these"/></Choices></View>')


def ls_task(i, image, **data):
    """A task as Label Studio 1.23 serializes it for /predict (TaskSimpleSerializer)."""
    return {"id": i, "data": {"image": image, **data}, "meta": {}, "created_at": "2026-12-01T10:00:00Z",
            "updated_at": "2026-12-01T10:00:00Z", "is_labeled": False, "overlap": 1, "inner_id": i,
            "total_annotations": 0, "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
            "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 3, "updated_by": [],
            "file_upload": None, "comment_authors": [], "annotations": [], "predictions": []}


def test_label_config_variants():
    c = P.parse_label_config(CONFIG)
    assert (c.from_name, c.to_name, c.value, c.choices, c.classes) == (
        "label", "image", "image", ["zero", "one", "none of these"], ["zero", "one"])
    # other names, a text object before the image, a second control that does not label the image
    other = ('<View><Header value="Which digit?"/><Text name="t" value="$caption"/>'
             '<Choices name="mood" toName="t"><Choice value="x"/></Choices>'
             '<Image name="scan" value="$url" zoom="true"/><Choices name="digit" toName="scan">'
             '<View><Choice value="7"/><Choice value="None of these" alias="none of these"/></View></Choices></View>')
    c = P.parse_label_config(other)
    assert (c.from_name, c.to_name, c.value, c.classes) == ("digit", "scan", "url", ["7"])
    for bad, message in [("<View><Image", "not valid XML"), (None, r"labeling config \(XML text\)"),
                         ('<View><Image name="i" value="$i"/><Labels name="l" toName="i"/></View>', "no <Choices"),
                         ('<View><Image name="i" value="i.png"/><Choices name="c" toName="i"><Choice value="a"/>'
                          '</Choices></View>', 'value="\\$key"'),
                         ('<View><Image name="i" value="$i"/><Choices name="c" toName="i"/></View>', "<Choice value")]:
        with pytest.raises(P.ProtocolError, match=message) as err:
            P.parse_label_config(bad)
        assert err.value.status == 400


def test_predict_setup_and_webhook_payloads():
    req = P.parse_predict({"tasks": [ls_task(1, "/data/upload/3/a.png"), ls_task(2, "b.png", id="item 2")],
                           "project": "3.1764583200", "label_config": CONFIG,
                           "params": {"login": None, "password": None, "context": None}})
    assert req.project == "3" and len(req.tasks) == 2 and req.label_config == CONFIG and req.model_version is None
    for bad, message, status in [([], "JSON object", 400), ({"tasks": "x"}, "'tasks'", 400),
                                 ({"tasks": [{"id": 1}]}, "task 0 of /predict has no 'data'", 400),
                                 ({"tasks": [], "label_config": 5}, "XML text", 400),
                                 ({"tasks": [ls_task(i, "a") for i in range(3)]}, "at most 2", 413)]:
        with pytest.raises(P.ProtocolError, match=message) as err:
            P.parse_predict(bad, max_tasks=2)
        assert err.value.status == status
    setup = {"project": "3.1764583200", "schema": CONFIG, "hostname": "http://localhost:8080",
             "access_token": "0123abcd", "extra_params": None}
    assert P.parse_setup(setup) == ("3", CONFIG, "http://localhost:8080", "0123abcd")
    assert P.parse_setup({}) == (None, None, None, None)
    with pytest.raises(P.ProtocolError, match="no <Choices"):
        P.parse_setup({"schema": "<View/>"})
    # START_TRAINING (the project as Label Studio's webhook serializer writes it) and an annotation event
    start = P.parse_webhook({"action": "START_TRAINING", "project": {"id": 3, "title": "digits", "label_config": CONFIG}})
    assert (start.action, start.project, start.label_config, start.trains) == ("START_TRAINING", "3", CONFIG, True)
    created = P.parse_webhook({"action": "ANNOTATION_CREATED", "annotation": {"id": 9, "result": []},
                               "task": ls_task(1, "a.png"), "project": {"id": 3}})
    assert created.trains and created.label_config is None
    assert not P.parse_webhook({"action": "PROJECT_UPDATED", "project": {"id": 3}}).trains
    with pytest.raises(P.ProtocolError, match="needs 'action'"):
        P.parse_webhook({"project": {"id": 3}})
    legacy = P.parse_webhook({"annotations": [ls_task(1, "a.png")], "project": "3.17", "label_config": CONFIG},
                             legacy_train=True)
    assert legacy.trains and legacy.project == "3" and len(legacy.tasks) == 1
    with pytest.raises(P.ProtocolError, match="'project' must be a project id"):
        P.parse_predict({"tasks": [], "project": [1]})


def test_image_locations(tmp_path):
    root = str(tmp_path)
    ls = "http://127.0.0.1:8080"
    cases = {
        "/abs/x.png": ("file", "/abs/x.png"),
        "file:///abs/dir%20a/x.png": ("file", "/abs/dir a/x.png"),
        "/data/local-files/?d=digits/0%2001.png": ("file", f"{root}/digits/0 01.png"),
        f"{ls}/data/local-files/?d=digits/1.png": ("file", f"{root}/digits/1.png"),
        "/data/upload/3/abc-x.png": ("http", f"{ls}/data/upload/3/abc-x.png"),
        f"{ls}/data/upload/3/y.png": ("http", f"{ls}/data/upload/3/y.png"),
        "images/7.png": ("file", f"{root}/images/7.png"),
    }
    for ref, want in cases.items():
        got = P.locate_image(ref, document_root=root, label_studio_url=ls)
        assert (got.kind, got.where) == want, ref
    for ref, kwargs, message in [
            ("/data/local-files/?d=../etc/passwd", {"document_root": root}, "leaves the document root"),
            ("/data/local-files/?d=a.png", {}, "--document-root"),
            ("/data/local-files/", {"document_root": root}, "no \\?d= path"),
            ("https://example.org/x.png", {"label_studio_url": ls}, "not on the Label Studio host"),
            ("/data/upload/1/x.png", {}, "--label-studio-url"),
            ("s3://bucket/x.png", {}, "cloud storage"),
            ("file://otherhost/x.png", {}, "another host")]:
        with pytest.raises(P.ProtocolError, match=message) as err:
            P.locate_image(ref, **kwargs)
        assert err.value.status == 422
    cfg = P.parse_label_config(CONFIG)
    with pytest.raises(P.ProtocolError, match=r"task 4 has no data.image"):
        P.task_ref({"id": 4, "data": {"img": "x"}}, cfg)


def test_scores_put_jacal_order_into_lowest_first():
    n = 5
    ranked = [P.queue_score(r, n) for r in range(1, n + 1)]
    assert ranked == sorted(ranked) and 0 < ranked[0] and ranked[-1] < 1
    raw = [3.0, -2.0, 0.5, 1e6, 0.0]  # strategy scores: higher = label first
    mapped = [P.item_score(s) for s in raw]
    assert sorted(range(5), key=lambda i: mapped[i]) == sorted(range(5), key=lambda i: -raw[i])
    assert all(1 < m < 2 for m in mapped) and max(ranked) < min(mapped)  # ranked items come before the rest
    assert P.item_score(float("nan")) is None and P.item_score(math.inf) is None


def test_prediction_and_class_names():
    cfg = P.parse_label_config(CONFIG)
    pred = P.prediction("one", 0.2, cfg, "jacal.2", confidence=0.9)
    assert pred == {"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                "value": {"choices": ["one"]}}], "score": 0.2, "model_version": "jacal.2",
                    "confidence": 0.9}
    assert P.class_names(cfg, None, 2) == ["zero", "one"]
    assert P.class_names(cfg, ["one", "zero"], 2) == ["one", "zero"]
    with pytest.raises(P.ProtocolError, match="has 3 classes but"):
        P.class_names(cfg, None, 3)
    with pytest.raises(P.ProtocolError, match=r"\['two'\] are not <Choice>s"):
        P.class_names(cfg, ["zero", "two"], 2)
