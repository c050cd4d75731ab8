"""Label Studio's ML-backend protocol as pure functions: its payloads in, jacal's items and
predictions out. No web framework and no network here, so every rule is tested with plain dicts.

What Label Studio sends (``label_studio/ml/api_connector.py``; the reference server is
HumanSignal/label-studio-ml-backend, ``label_studio_ml/api.py``):

* ``POST /setup``: ``{"project": "ID.TIMESTAMP", "schema": label_config, "hostname", "access_token",
  "model_version", "extra_params"}`` → ``{"model_version": ...}``;
* ``POST /predict``: ``{"tasks": [{"id", "data": {...}, ...}], "project", "label_config",
  "model_version", "params": {"login", "password", "context"}}`` → ``{"results": [{"result": [...],
  "score", "model_version"}], "model_version"}``, one result per task, in task order (Label Studio
  keeps only those three keys of a result: what it should show, such as an item's reason, goes into
  ``result``, see :func:`prediction`);
* ``POST /webhook``: ``{"action": "ANNOTATION_CREATED" | ... | "START_TRAINING", "project": {"id",
  "label_config", ...}, ...}`` (and the older ``POST /train`` with ``{"annotations": [...], "project",
  "label_config"}``).

The score: Label Studio's uncertainty sampling serves the task whose prediction has the **lowest**
score first. jacal ranks by acquisition (higher = label first), so the score it answers is
:func:`queue_score` (a rank in jacal's acquisition order over the pool, in (0, 1)) or, for an item
outside that order, :func:`item_score` (a decreasing map of the strategy's per-item score into
[1, 2)): lower score, earlier in the queue, whichever way it was computed.
"""
from __future__ import annotations

import math
import os
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, unquote, urljoin, urlparse
from urllib.request import url2pathname

from jacal._internal.validation import JacalError
from jacal.io.formats.labelstudio import choice_result, text_result
from jacal.io.labels import NONE_OF_THESE, is_none_of_these

__all__ = ["ProtocolError", "LabelConfig", "parse_label_config", "PredictRequest", "parse_predict", "parse_setup",
           "WebhookEvent", "parse_webhook", "TRAIN_EVENTS", "ImageRef", "locate_image", "task_ref",
           "prediction", "queue_score", "item_score", "project_id", "REASON_AREA", "STOP_AREA"]

#: webhook actions that (re)start training; the others are answered and ignored
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED",
                "ANNOTATION_DELETED", "START_TRAINING")

#: the ``<TextArea name=...>`` on the image that, when the labeling config has it, shows each
#: prediction's reason (why jacal puts the item where it is in the queue) in the labeling view
REASON_AREA = "al_reason"
#: the ``<TextArea name=...>`` that shows the stop advice of the prediction's model version
STOP_AREA = "al_stop"


class ProtocolError(JacalError):
    """A payload Label Studio (or anyone) sent that jacal cannot use: answered with a 4xx and a one-line
    message (``status`` is the HTTP status)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class LabelConfig:
    """What jacal needs from a project's labeling config.

    Attributes:
        from_name: the ``<Choices name=...>`` control jacal predicts.
        to_name: the ``<Image name=...>`` object it labels.
        value: the task data key holding the image (``value="$image"`` → ``"image"``).
        choices: every ``<Choice value=...>``, in config order.
        reason_area: the ``<TextArea name="al_reason">`` on the image, when the config has one.
        stop_area: the ``<TextArea name="al_stop">`` on the image, when the config has one.
    """

    from_name: str
    to_name: str
    value: str
    choices: List[str]
    reason_area: Optional[str] = None
    stop_area: Optional[str] = None

    @property
    def classes(self) -> List[str]:
        """The choices that are classes (:data:`NONE_OF_THESE` left out)."""
        return [c for c in self.choices if not is_none_of_these(c)]


def parse_label_config(xml: Any) -> LabelConfig:
    """The first ``<Choices>`` of ``xml`` whose ``toName`` is an ``<Image>``, and the text areas
    :data:`REASON_AREA` and :data:`STOP_AREA` on that image when the config has them.

    >>> c = parse_label_config('<View><Image name="img" value="$url"/><Choices name="label" toName="img">'
    ...                        '<Choice value="cat"/><Choice value="none of these"/></Choices></View>')
    >>> (c.from_name, c.to_name, c.value, c.choices, c.classes)
    ('label', 'img', 'url', ['cat', 'none of these'], ['cat'])

    Raises:
        ProtocolError: not XML, or no ``<Choices>`` labeling an ``<Image>``.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise ProtocolError(f"label_config must be the project's labeling config (XML text), got {type(xml).__name__}")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise ProtocolError(f"label_config is not valid XML ({err})") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag == "Image" and el.get("name")}
    for el in root.iter():
        if el.tag != "Choices" or el.get("toName") not in images:
            continue
        value = images[el.get("toName")]
        if not value.startswith("$") or len(value) < 2:
            raise ProtocolError(f'<Image name="{el.get("toName")}"> needs value="$key" (the task data key of the image)')
        choices = [c.get("value") or c.get("alias") for c in el.iter() if c.tag == "Choice"]
        if not choices or any(not c for c in choices):
            raise ProtocolError(f'<Choices name="{el.get("name")}"> needs <Choice value="..."/> children')
        to_name = str(el.get("toName"))
        areas = {a.get("name") for a in root.iter() if a.tag == "TextArea" and a.get("toName") == to_name}
        return LabelConfig(str(el.get("name")), to_name, value[1:], [str(c) for c in choices],
                           REASON_AREA if REASON_AREA in areas else None, STOP_AREA if STOP_AREA in areas else None)
    raise ProtocolError("label_config has no <Choices toName=...> labeling an <Image>: jacal serves image classification")


def project_id(project: Any) -> Optional[str]:
    """``"12"`` from Label Studio's project uid ``"12.1700000000"``, a ``{"id": 12}`` or ``12``.

    >>> project_id("12.1700000000"), project_id({"id": 3}), project_id(None)
    ('12', '3', None)
    """
    if isinstance(project, dict):
        project = project.get("id")
    if project is None or project == "":
        return None
    if isinstance(project, bool) or not isinstance(project, (str, int)):
        raise ProtocolError(f"'project' must be a project id, got {type(project).__name__}")
    return str(project).split(".", 1)[0]


def _object(payload: Any, what: str) -> dict:
    if not isinstance(payload, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(payload).__name__}")
    return payload


@dataclass
class PredictRequest:
    """A parsed ``/predict`` payload: ``tasks`` (each a dict with ``data``), the label config (or
    ``None``: the server's), the project id and the model version Label Studio asks for."""

    tasks: List[dict]
    label_config: Optional[str]
    project: Optional[str]
    model_version: Optional[str] = None


def parse_predict(payload: Any, *, max_tasks: int = 10000) -> PredictRequest:
    """Check a ``/predict`` payload.

    >>> parse_predict({"tasks": [{"id": 1, "data": {"image": "a.png"}}], "project": "4.17"}).project
    '4'

    Raises:
        ProtocolError: not an object, no ``tasks`` list, a task without a ``data`` object, too many tasks.
    """
    payload = _object(payload, "the /predict body")
    tasks = payload.get("tasks")
    if not isinstance(tasks, list):
        raise ProtocolError("the /predict body needs 'tasks': a list of Label Studio tasks")
    if len(tasks) > max_tasks:
        raise ProtocolError(f"the /predict body has {len(tasks)} tasks; at most {max_tasks} per request", status=413)
    for n, t in enumerate(tasks):
        if not isinstance(t, dict) or not isinstance(t.get("data"), dict):
            raise ProtocolError(f"task {n} of /predict has no 'data' object")
    config = payload.get("label_config")
    if config is not None and not isinstance(config, str):
        raise ProtocolError("'label_config' must be the labeling config's XML text")
    version = payload.get("model_version")
    return PredictRequest(tasks, config, project_id(payload.get("project")),
                          str(version) if isinstance(version, (str, int)) and version != "" else None)


def parse_setup(payload: Any) -> Tuple[Optional[str], Optional[str], Optional[str], Optional[str]]:
    """``(project id, label config, hostname, access token)`` of a ``/setup`` payload (all optional)."""
    payload = _object(payload, "the /setup body")
    schema = payload.get("schema", payload.get("label_config"))
    if schema is not None:
        parse_label_config(schema)  # a config jacal cannot serve is said at connection time
    host, token = payload.get("hostname"), payload.get("access_token")
    return (project_id(payload.get("project")), schema, host if isinstance(host, str) and host else None,
            token if isinstance(token, str) and token else None)


@dataclass
class WebhookEvent:
    """A parsed ``/webhook`` (or ``/train``) payload.

    Attributes:
        action: e.g. ``"ANNOTATION_CREATED"`` or ``"START_TRAINING"``.
        project: the project id (``None`` when the payload names none).
        label_config: the project's config when the payload carries it.
        trains: whether the action starts training (:data:`TRAIN_EVENTS`).
        tasks: annotated tasks the payload carries (``/train``), else empty.
    """

    action: str
    project: Optional[str]
    label_config: Optional[str]
    trains: bool
    tasks: List[dict] = field(default_factory=list)


def parse_webhook(payload: Any, *, legacy_train: bool = False) -> WebhookEvent:
    """Check a ``/webhook`` payload (``legacy_train``: a ``/train`` payload, always a training request).

    >>> e = parse_webhook({"action": "ANNOTATION_CREATED", "project": {"id": 2, "label_config": "<View/>"}})
    >>> (e.action, e.project, e.trains)
    ('ANNOTATION_CREATED', '2', True)
    """
    payload = _object(payload, "the /train body" if legacy_train else "the /webhook body")
    project = payload.get("project")
    config = project.get("label_config") if isinstance(project, dict) else payload.get("label_config")
    if legacy_train:
        tasks = payload.get("annotations")
        if not isinstance(tasks, list):
            raise ProtocolError("the /train body needs 'annotations': a list of annotated tasks")
        return WebhookEvent("START_TRAINING", project_id(project), config if isinstance(config, str) else None,
                            True, [t for t in tasks if isinstance(t, dict)])
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise ProtocolError("the /webhook body needs 'action' (e.g. ANNOTATION_CREATED or START_TRAINING)")
    return WebhookEvent(action, project_id(project), config if isinstance(config, str) else None,
                        action in TRAIN_EVENTS)


@dataclass
class ImageRef:
    """Where a task's image is: ``kind`` ``"file"`` (``where`` a local path) or ``"http"`` (``where`` a
    URL on the Label Studio host, fetched with its token)."""

    kind: str
    where: str


def task_ref(task: dict, config: LabelConfig) -> str:
    """The image reference in ``task["data"][config.value]``.

    Raises:
        ProtocolError: the task has no such key, or its value is not text.
    """
    data = task.get("data") or {}
    ref = data.get(config.value)
    if not isinstance(ref, str) or not ref:
        raise ProtocolError(f"task {task.get('id', '?')} has no data.{config.value} (the $"
                            f"{config.value} of <Image name=\"{config.to_name}\">)", status=422)
    return ref


def _inside(root: str, rel: str) -> str:
    """``root/rel``, refusing a ``rel`` that climbs out of ``root``."""
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if norm.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ProtocolError(f"image path {rel!r} leaves the document root", status=422)
    return os.path.join(root, *norm.split("/"))


def locate_image(ref: str, *, document_root: Optional[str] = None, label_studio_url: Optional[str] = None) -> ImageRef:
    """Where the image ``ref`` (a task's ``$image`` value) is.

    * a local path or a ``file://`` URI: that file, only with ``document_root`` (a relative path is
      relative to it; whether the file, symlinks resolved, lies inside it is checked where it is
      opened, :func:`jacal.serve.files.read_local`); without ``document_root`` local paths are refused;
    * Label Studio's Local Files URL ``/data/local-files/?d=REL`` (or with its host): ``document_root/REL``
      (the ``LOCAL_FILES_DOCUMENT_ROOT`` Label Studio serves; never outside it);
    * ``/data/upload/...`` and other paths on the Label Studio host, and ``http(s)://`` URLs on that
      host: fetched from it with the project's token.

    >>> locate_image("/data/local-files/?d=digits/0001.png", document_root="/srv").where
    '/srv/digits/0001.png'
    >>> locate_image("/data/upload/3/x.png", label_studio_url="http://127.0.0.1:8080").where
    'http://127.0.0.1:8080/data/upload/3/x.png'

    Raises:
        ProtocolError: a local path or Local Files URL without ``document_root``, a relative path
            climbing out of it, a URL of another host, or a Label Studio path without ``label_studio_url``.
    """
    parsed = urlparse(ref)
    ls = urlparse(label_studio_url) if label_studio_url else None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ProtocolError(f"cannot read {ref!r}: a file:// URI on another host", status=422)
        return _local(ref, url2pathname(parsed.path), document_root)
    if parsed.scheme in ("http", "https") or (parsed.scheme == "" and ref.startswith("/data/")):
        on_ls = parsed.scheme == "" or (ls is not None and (parsed.scheme, parsed.netloc) == (ls.scheme, ls.netloc))
        if parsed.path.rstrip("/").endswith("/data/local-files") and on_ls:
            rel = parse_qs(parsed.query).get("d", [""])[0]
            if not rel:
                raise ProtocolError(f"Local Files URL {ref!r} has no ?d= path", status=422)
            if document_root is None:
                raise ProtocolError(f"task image {ref!r} is a Label Studio Local Files URL: start jacal serve with "
                                    "--document-root (Label Studio's LOCAL_FILES_DOCUMENT_ROOT)", status=422)
            return ImageRef("file", _inside(document_root, unquote(rel)))
        if not on_ls:
            raise ProtocolError(f"task image {ref!r} is not on the Label Studio host"
                                + (f" ({label_studio_url})" if label_studio_url else " (pass --label-studio-url)")
                                + "; jacal fetches images only from there", status=422)
        if ls is None:
            raise ProtocolError(f"task image {ref!r} is on the Label Studio host: pass --label-studio-url", status=422)
        return ImageRef("http", urljoin(label_studio_url.rstrip("/") + "/", ref) if parsed.scheme == "" else ref)
    if len(parsed.scheme) > 1:  # s3://, gs://... (a one-letter scheme is a Windows drive)
        raise ProtocolError(f"cannot read {ref!r}: {parsed.scheme}:// images are served by Label Studio's cloud "
                            "storage (connect it and let Label Studio presign them)", status=422)
    return _local(ref, ref, document_root)


def _local(ref: str, path: str, document_root: Optional[str]) -> ImageRef:
    if document_root is None:
        raise ProtocolError(f"task image {ref!r} is a local path: start jacal serve with --document-root DIR "
                            "(jacal reads local images only inside it)", status=422)
    if not Path(path).is_absolute():
        path = _inside(document_root, path)
    return ImageRef("file", os.fspath(path))


def queue_score(rank: int, n: int) -> float:
    """The Label Studio score of the item jacal ranks ``rank`` (1 = label first) of ``n``: in (0, 1),
    increasing with the rank, so Label Studio's lowest-first order is jacal's order.

    >>> [round(queue_score(r, 3), 3) for r in (1, 2, 3)]
    [0.25, 0.5, 0.75]
    """
    return rank / (n + 1)


def item_score(score: float) -> Optional[float]:
    """The Label Studio score of an item outside jacal's ranked queue, from the strategy's per-item
    score ``score`` (higher = label first): ``1.5 - atan(score) / pi`` in (1, 2), decreasing, so it
    sorts after every ranked item and by the strategy among its kind. ``None`` for NaN.

    >>> item_score(0.0), item_score(1e9) < item_score(1.0) < item_score(-1.0)
    (1.5, True)
    """
    score = float(score)
    return None if not math.isfinite(score) else 1.5 - math.atan(score) / math.pi


def prediction(label: str, score: Optional[float], config: LabelConfig, model_version: str, *,
               confidence: Optional[float] = None, reason: Optional[str] = None,
               reason_fields: Optional[Dict[str, Any]] = None, stop: Optional[str] = None) -> dict:
    """One entry of ``/predict``'s ``results``: the predicted choice from ``config.from_name`` to
    ``config.to_name`` (a pre-annotation), ``score`` and ``model_version``.

    Label Studio keeps only ``result``, ``score`` and ``model_version`` of an entry. So the item's
    ``reason`` (one line) goes into ``result`` as text of the config's :data:`REASON_AREA` text
    area, and the version's ``stop`` advice (one line) into its :data:`STOP_AREA`, when the config
    has them. The labeling view shows them, and so does the Data Manager's prediction results
    column. ``reason``, ``reason_fields`` and ``confidence`` are also top-level keys, for clients
    that call ``/predict`` themselves.

    >>> cfg = LabelConfig("label", "image", "image", ["cat", "dog"], reason_area="al_reason")
    >>> p = prediction("dog", 0.25, cfg, "jacal", reason="between dog and cat, 0.1 from the boundary")
    >>> [r["value"] for r in p["result"]]
    [{'choices': ['dog']}, {'text': ['between dog and cat, 0.1 from the boundary']}]
    """
    out = {"result": [choice_result(config.from_name, config.to_name, label)],
           "score": score, "model_version": model_version}
    if confidence is not None and math.isfinite(confidence):  # NaN: an item the model gives no finite output
        out["confidence"] = confidence
    if reason is not None:
        out["reason"], out["reason_fields"] = reason, dict(reason_fields or {})
        if config.reason_area:
            out["result"].append(text_result(config.reason_area, config.to_name, reason))
    if stop is not None and config.stop_area:
        out["result"].append(text_result(config.stop_area, config.to_name, stop))
    return out


def class_names(config: LabelConfig, stored: Optional[Sequence[str]], n_classes: int) -> List[str]:
    """The names of the model's classes: the checkpoint's (each must be a choice of ``config``), else
    the config's classes when there are ``n_classes`` of them.

    Raises:
        ProtocolError: names that do not match the config (the message says what to change).
    """
    if stored is not None:
        missing = [n for n in stored if n not in config.choices]
        if missing:
            raise ProtocolError(f"the model's classes {missing[:5]} are not <Choice>s of <Choices name="
                                f"\"{config.from_name}\">; add them to the labeling config", status=422)
        return list(stored)
    if len(config.classes) != n_classes:
        raise ProtocolError(f"the model has {n_classes} classes but <Choices name=\"{config.from_name}\"> has "
                            f"{len(config.classes)} (besides {NONE_OF_THESE!r}); train with --label-names", status=422)
    return list(config.classes)
