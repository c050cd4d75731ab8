"""The ML backend itself, without a web framework: each route of :mod:`jacal.serve.app` is one
method here that takes the parsed JSON body and returns ``(status, body)``.

* ``predict``: decode each task's image, score the items with the model and the acquisition
  strategy, answer one prediction per task (the predicted choice as a pre-annotation; the score
  puts jacal's order into Label Studio's lowest-score-first queue, :mod:`jacal.serve.protocol`);
* ``webhook`` / ``train``: a training request, run in the background by one worker thread (one job
  at a time; requests that arrive meanwhile are merged into one next job). A job fetches the
  project's export, trains a fresh model of the checkpoint's architecture on the items labeled
  with a class ("none of these" and skipped items are left out), writes it and the state
  atomically (:class:`jacal.serve.state.ServeState`), swaps it in, sets the project's model version
  and asks Label Studio to retrieve the new predictions.

Every bad input is a :class:`~jacal.serve.protocol.ProtocolError` (a 4xx with one line); the
server itself never fails on one.
"""
from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import torch

from jacal._validation import JacalError, first_line
from jacal.io.annotations import annotations_from_label_studio
from jacal.io.batches import DEFAULT_MODEL_VERSION
from jacal.io.readers import decode_image, image_transform
from jacal.serve import protocol as P
from jacal.serve.labelstudio import LabelStudioClient
from jacal.serve.state import ServeState

__all__ = ["MLBackend", "TRAIN_ON"]

#: what starts a training job: every annotation event, or only an explicit request
TRAIN_ON = ("annotations", "request")

log = logging.getLogger("jacal.serve")
Answer = Tuple[int, Any]


class MLBackend:
    """A Label Studio ML backend serving a jacal model.

    Args:
        model: a jacal checkpoint (trainable) or a TorchScript / ``torch.export`` file (predict only).
        state_dir: where versions and jobs are kept (default: ``<model>.serve/`` beside the model).
        model_version: the first version's tag (default: the checkpoint's, else ``"jacal"``).
        strategy: the acquisition strategy whose per-item score orders the queue.
        label_config: the labeling config to use when a request carries none.
        document_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` (for ``/data/local-files/?d=`` images).
        label_studio_url, api_key: the Label Studio server and a token (to fetch exports and images).
        image_size, channels: image transform (default: the checkpoint's input shape).
        epochs, lr, batch_size, seed: training of each new version (default: the checkpoint's).
        device: for scoring and training.
        refresh: after a training, set the project's model version and retrieve its predictions.
        train_on: ``"annotations"`` (default: every annotation event and every explicit request
            trains) or ``"request"`` (only Label Studio's "Start training" / ``/train``; annotation
            events are answered and ignored).
        debounce: seconds without a new annotation event before a job starts, so a burst of
            submissions makes one training, not one each (explicit requests start at once).
    """

    def __init__(self, model: Union[str, Path], *, state_dir: Union[str, Path, None] = None,
                 model_version: Optional[str] = None, strategy: str = "jacobian", label_config: Optional[str] = None,
                 document_root: Union[str, Path, None] = None, label_studio_url: Optional[str] = None,
                 api_key: Optional[str] = None, image_size: Optional[Tuple[int, int]] = None,
                 channels: Optional[int] = None, epochs: Optional[float] = None, lr: Optional[float] = None,
                 batch_size: Optional[int] = None, seed: int = 0, device: Any = "cpu", refresh: bool = True,
                 max_tasks: int = 10000, train_on: str = "annotations", debounce: float = 2.0) -> None:
        if train_on not in TRAIN_ON:
            raise JacalError(f"train_on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
        if not debounce >= 0:
            raise JacalError(f"debounce must be a number of seconds ≥ 0, not {debounce!r}")
        self.train_on, self.debounce = train_on, float(debounce)
        self.model_path = Path(model)
        self.state_dir = Path(state_dir) if state_dir is not None else self.model_path.with_suffix(".serve")
        self.model_version_arg = model_version
        self.strategy = strategy
        self.label_config = label_config
        self.document_root = str(document_root) if document_root is not None else None
        self.label_studio_url = label_studio_url
        self.api_key = api_key
        self.image_size, self.channels = image_size, channels
        self.epochs, self.lr, self.batch_size, self.seed = epochs, lr, batch_size, seed
        self.device = device
        self.refresh = refresh
        self.max_tasks = max_tasks

    # ------------------------------------------------------------------ start, stop

    def start(self) -> "MLBackend":
        """Load the model (the state's last version when the state folder has one) and start the
        training worker.

        Raises:
            JacalError: an unreadable model or state, or a strategy jacal does not know.
        """
        import jacal
        from jacal.checkpoint import load_model_file

        jacal.acquisition.get_strategy(self.strategy)  # an unknown name fails here, not per request
        base = load_model_file(self.model_path)
        self.trainable = base.kind in jacal.models.MODEL_KINDS
        self.base_kind, self.base_config, self.base_meta = base.kind, base.config, dict(base.metadata)
        version = self.model_version_arg or str(self.base_meta.get("model_version") or DEFAULT_MODEL_VERSION)
        self.state = ServeState(self.state_dir, self.model_path, version).load()
        current = base if not self.state.versions else load_model_file(self.state.current_model)
        self._set_model(current)
        self.client = LabelStudioClient(self.label_studio_url, self.api_key) if self.label_studio_url else None
        self._cv = threading.Condition()
        self._pending: Optional[dict] = None
        self._running: Optional[dict] = None
        self._stop = False
        self._seen_config: Optional[str] = None
        self._worker = threading.Thread(target=self._work, name="jacal-serve-train", daemon=True)
        self._worker.start()
        return self

    def _set_model(self, ck: Any) -> None:
        shape = ck.metadata.get("input_shape") or self.base_meta.get("input_shape")
        if self.image_size is not None:
            size, ch = tuple(self.image_size), self.channels or (int(shape[0]) if shape and len(shape) == 3 else 1)
        elif shape and len(shape) == 3:
            size, ch = (int(shape[1]), int(shape[2])), self.channels or int(shape[0])
        else:
            raise JacalError(f"{self.model_path} records no image input shape (C, H, W): pass --image-size and "
                             "--channels")
        with torch.no_grad():
            z = ck.model(torch.zeros((2, ch, *size)))
        model = {"model": ck.model.eval(), "version": self.state.current_version, "size": size, "channels": ch,
                 "n_classes": int(z.shape[1]), "label_names": ck.metadata.get("label_names"),
                 "transform": image_transform(size, ch)}
        self._model = model  # one reference swap: a request in flight keeps the model it started with

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker after the job in flight (a job cut short leaves the last version intact)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._worker.join(timeout)

    # ------------------------------------------------------------------ routes

    def health(self) -> Answer:
        m = self._model
        return 200, {"status": "UP", "model_class": "jacal", "model_version": m["version"],
                     "training": self._running is not None, "last_job": self.state.last_job()}

    def setup(self, payload: Any) -> Answer:
        project, schema, host, token = P.parse_setup(payload)
        if schema is not None:
            self._seen_config = schema
            P.class_names(P.parse_label_config(schema), self._model["label_names"], self._model["n_classes"])
        if self.client is None and host and token:  # Label Studio's own hostname and (legacy) token
            self.client = LabelStudioClient(host, token)
        return 200, {"model_version": self._model["version"]}

    def predict(self, payload: Any) -> Answer:
        req = P.parse_predict(payload, max_tasks=self.max_tasks)
        config = P.parse_label_config(req.label_config or self.label_config)
        if req.label_config:
            self._seen_config = req.label_config
        m = self._model
        names = P.class_names(config, m["label_names"], m["n_classes"])
        if not req.tasks:
            return 200, {"results": [], "model_version": m["version"]}
        x = self._decode([P.task_ref(t, config) for t in req.tasks], req.tasks, m)
        res = self._score(m["model"], x)
        results = [P.prediction(names[int(res.predicted[i])], P.item_score(res.scores[i]), config, m["version"],
                                confidence=float(res.confidence[i]))
                   for i in range(len(req.tasks))]
        return 200, {"results": results, "model_version": m["version"]}

    def webhook(self, payload: Any) -> Answer:
        event = P.parse_webhook(payload)
        if not event.trains:
            return 200, {"status": "ignored", "action": event.action}
        if self.train_on == "request" and event.action != "START_TRAINING":
            return 200, {"status": "ignored", "action": event.action,
                         "reason": "this server trains on explicit requests only (--train-on request)"}
        return self._request_training(event)

    def train(self, payload: Any) -> Answer:
        return self._request_training(P.parse_webhook(payload, legacy_train=True))

    # ------------------------------------------------------------------ scoring

    def _read(self, ref: str) -> Any:
        where = P.locate_image(ref, document_root=self.document_root,
                               label_studio_url=self.client.url if self.client else self.label_studio_url)
        if where.kind == "file":
            return where.where
        if self.client is None:
            raise P.ProtocolError(f"image {ref!r} is on Label Studio: pass --label-studio-url and --api-key", 422)
        return io.BytesIO(self.client.fetch(where.where))

    def _decode(self, refs: List[str], tasks: List[dict], m: dict) -> torch.Tensor:
        out, bad = [], []
        for ref, task in zip(refs, tasks):  # decoding is per file by nature; scoring is batched
            try:
                out.append(decode_image(self._read(ref), m["channels"], m["transform"]))
            except P.ProtocolError as err:
                bad.append(f"task {task.get('id', '?')}: {first_line(err)}")
            except (OSError, ValueError, SyntaxError, JacalError) as err:
                bad.append(f"task {task.get('id', '?')}: cannot read {ref!r} ({first_line(err, 120)})")
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise P.ProtocolError(f"{len(bad)} image(s) unreadable: {'; '.join(bad[:3])}{more}", status=422)
        return torch.stack(out)

    def _score(self, model: torch.nn.Module, x: torch.Tensor) -> Any:
        import jacal

        try:
            return jacal.acquire(model, x, 1, strategy=self.strategy, seed=self.seed, device=self.device)
        except ValueError as err:  # e.g. an image that decodes to NaN
            raise P.ProtocolError(first_line(err), status=422) from None

    # ------------------------------------------------------------------ training

    def _request_training(self, event: P.WebhookEvent) -> Answer:
        if not self.trainable:
            raise P.ProtocolError(f"{self.model_path.name} is not a jacal checkpoint, so jacal serve cannot retrain "
                                  "it (it predicts only)", status=409)
        if not event.tasks and event.project is None:
            raise P.ProtocolError("the training request names no project", status=400)
        if not event.tasks and self.client is None:
            raise P.ProtocolError("training fetches the project's annotations: start jacal serve with "
                                  "--label-studio-url and --api-key", status=409)
        with self._cv:
            merged = self._pending is not None
            explicit = event.action == "START_TRAINING" or bool((self._pending or {}).get("explicit"))
            self._pending = {"id": uuid.uuid4().hex[:12], "project": event.project, "tasks": event.tasks,
                             "label_config": event.label_config or (self._pending or {}).get("label_config"),
                             "action": event.action, "requested": time.time(), "explicit": explicit}
            self._cv.notify_all()
            job = dict(self._pending)
        job.pop("tasks")
        return 201, {"job": job["id"], "status": "queued", "merged": merged}

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (for tests and scripts); ``False`` on timeout."""
        end = time.time() + timeout
        with self._cv:
            while (self._pending is not None or self._running is not None) and time.time() < end:
                self._cv.wait(0.05)
            return self._pending is None and self._running is None

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._stop:
                    if self._pending is None:
                        self._cv.wait()
                        continue
                    quiet = time.time() - self._pending["requested"]  # a burst of events: wait for its end
                    if self._pending.get("explicit") or quiet >= self.debounce:
                        break
                    self._cv.wait(self.debounce - quiet)
                if self._stop:
                    return
                job, self._pending = self._pending, None
                self._running = job
            record = {k: v for k, v in job.items() if k != "tasks"}
            record.update(status="running", started=time.time())
            self.state.record_job(record)
            try:
                record.update(self._train_job(job), status="done")
            except Exception as err:  # noqa: BLE001 - a failed job is recorded and the server lives on
                record.update(status="failed", error=first_line(err, 300))
                log.warning("training job %s failed: %s", job["id"], record["error"])
            record["finished"] = time.time()
            self.state.record_job(record)
            with self._cv:
                self._running = None
                self._cv.notify_all()

    def _train_job(self, job: dict) -> dict:
        import jacal

        tasks = job["tasks"] or self.client.export(job["project"])
        xml = job.get("label_config") or self.label_config or self._seen_config
        if xml is None:
            raise JacalError("no labeling config: the training request carries none; pass --label-config")
        config = P.parse_label_config(xml)
        m = self._model
        names = P.class_names(config, m["label_names"], m["n_classes"])
        keyed = []
        for t in tasks:  # jacal's item id is data.id; tasks imported without one are named by their task id
            if isinstance(t, dict) and isinstance(t.get("data"), dict) and "id" not in t["data"]:
                t = {**t, "data": {**t["data"], "id": f"task {t.get('id')}"}}
            keyed.append(t)
        ann = annotations_from_label_studio(keyed, question=config.from_name, source=f"project {job['project']}")
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({lab for lab in ann.labels.values() if lab not in index})
        if unknown:
            raise JacalError(f"labels {unknown[:5]} are not classes of the model ({', '.join(names[:10])})")
        by_id = {str(t["data"]["id"]): t for t in keyed if isinstance(t, dict) and isinstance(t.get("data"), dict)}
        items = [i for i in ann.ids if i in ann.labels]
        if not items:
            raise JacalError(f"project {job['project']} has no annotation with a class yet "
                             f"({len(ann.out_of_set)} outside the label set)")
        x = self._decode([P.task_ref(by_id[i], config) for i in items], [by_id[i] for i in items], m)
        y = torch.tensor([index[ann.labels[i]] for i in items], dtype=torch.int64)
        model = jacal.models.build_model(self.base_kind, self.base_config)
        train = dict(self.base_meta.get("train") or {})
        epochs = self.epochs if self.epochs is not None else float(train.get("epochs", 30))
        lr = self.lr if self.lr is not None else float(train.get("lr", 1e-3))
        batch = self.batch_size if self.batch_size is not None else int(train.get("batch_size", 64))
        data = jacal.Splits(f"label-studio:{job['project']}", x, y, x[:0], y[:0], len(names))
        result = jacal.train(model, data, optimizer=str(train.get("optimizer", "adam")), lr=lr, batch_size=batch,
                             epochs=epochs, seed=self.seed, device=self.device)
        version = self.state.next_version()
        meta = {**self.base_meta, "label_names": list(names), "model_version": version,
                "input_shape": [m["channels"], *m["size"]], "n_classes": len(names),
                "source": {"label_studio_project": job["project"], "n_labeled": len(items),
                           "n_out_of_set": len(ann.out_of_set)},
                "metrics": {"train_accuracy": float(result.train_accuracy)}}
        path = self.state.new_model_path(version)
        jacal.save_checkpoint(path, model.cpu().eval(), metadata=meta)  # atomic; then the state names it
        self.state.add_version(version, path, n_labeled=len(items), n_out_of_set=len(ann.out_of_set),
                               train_accuracy=float(result.train_accuracy), project=job["project"])
        from jacal.checkpoint import load_model_file

        self._set_model(load_model_file(path))
        out = {"version": version, "n_labeled": len(items), "n_out_of_set": len(ann.out_of_set),
               "train_accuracy": float(result.train_accuracy)}
        if self.refresh and self.client is not None and job["project"] is not None:
            try:
                # predictions of the new version first: Label Studio accepts a project model version only
                # once predictions carry it (or it is the backend's title)
                self.client.retrieve_predictions(job["project"])
                self.client.set_model_version(job["project"], version)
                out["refreshed"] = True
            except JacalError as err:
                out["refresh_error"] = first_line(err)
        return out
