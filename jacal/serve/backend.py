"""The ML backend itself, without a web framework: each route of :mod:`jacal.serve.app` is one
method here that takes the parsed JSON body and returns ``(status, body)``.

* ``predict``: decode each task's image, score the items with the model and the acquisition
  strategy, answer one prediction per task (the predicted choice as a pre-annotation; the score
  puts jacal's order into Label Studio's lowest-score-first queue, :mod:`jacal.serve.protocol`;
  the item's reason, exactly :func:`jacal.acquire`'s on the request's tasks, and the version's stop
  advice as text Label Studio shows);
  Each task is answered on its own: an unreadable image gets an entry without ``result`` whose
  ``error`` says why (Label Studio skips it and logs the reason), logged here and counted in
  ``/health``; every other task still gets its prediction, so one bad file never keeps a project
  on an old model version;
* ``webhook`` / ``train``: a training request, run in the background by one worker thread
  (:mod:`jacal.serve.worker`; one job at a time; requests that arrive meanwhile are merged into one next job, which starts after
  ``train_every`` annotation events or ``debounce`` seconds without one, whichever comes first;
  an explicit request starts at once). A job fetches the
  project's export, trains a fresh model of the checkpoint's architecture on the items labeled
  with a class ("none of these" and skipped items are left out), writes it and the state
  atomically (:class:`jacal.serve.state.ServeState`), swaps it in, sets the project's model version
  and asks Label Studio to retrieve the new predictions.
* with a stop set: every model version, the first one served included, is one round of a stopping
  criterion (:class:`jacal.serve.advice.StopTracker`), saved in the state folder, logged in one line
  and shown on ``/health`` (``stop``).

Every bad input is a :class:`~jacal.serve.protocol.ProtocolError` (a 4xx with one line); the
server itself never fails on one. :meth:`MLBackend.stop` cuts a training short at its next step
(the job is recorded ``interrupted``; the last version is untouched) and :meth:`MLBackend.start`
re-runs the jobs a stop or a crash left unfinished.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from jacal._internal.validation import JacalError, first_line, nonfinite_rows
from jacal.io.batches import DEFAULT_MODEL_VERSION
from jacal.io.formats.reasons import reason_data
from jacal.io.readers import image_transform
from jacal.serve import protocol as P
from jacal.serve.advice import StopTracker
from jacal.serve.files import decode_bounded, read_local
from jacal.serve.labelstudio import LabelStudioClient
from jacal.serve.state import ServeState
from jacal.serve.worker import TrainingWorker

__all__ = ["MLBackend", "TRAIN_ON"]

#: what starts a training job: every annotation event, or only an explicit request
TRAIN_ON = ("annotations", "request")

log = logging.getLogger("jacal.serve")
Answer = Tuple[int, Any]


class MLBackend(TrainingWorker):
    """A Label Studio ML backend serving a jacal model (the routes here; the training jobs in
    :class:`~jacal.serve.worker.TrainingWorker`).

    Args:
        model: a jacal checkpoint (trainable) or a TorchScript / ``torch.export`` file (predict only).
        state_dir: where versions and jobs are kept (default: ``<model>.serve/`` beside the model).
        model_version: the first version's tag (default: the checkpoint's, else ``"jacal"``).
        strategy: the acquisition strategy whose per-item score orders the queue.
        label_config: the labeling config to use when a request carries none.
        document_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` (for ``/data/local-files/?d=`` images).
            Local images (paths, ``file://`` URIs, Local Files URLs) are read only inside it, symlinks
            resolved; without it, local images are refused.
        label_studio_url, api_key: the Label Studio server and a token (to fetch exports and images).
            Without ``label_studio_url``, a ``/setup`` may name the host only when its caller is
            authenticated (basic auth), see :meth:`setup`.
        image_size, channels: image transform (default: the checkpoint's input shape).
        epochs, lr, batch_size, seed: training of each new version (default: the checkpoint's).
        device: for scoring and training.
        refresh: after a training, set the project's model version and retrieve its predictions.
        train_on: ``"annotations"`` (default: every annotation event and every explicit request
            trains) or ``"request"`` (only Label Studio's "Start training" / ``/train``; annotation
            events are answered and ignored).
        train_every: annotation events after which a job starts without waiting for quiet.
        debounce: seconds without a new annotation event before a job starts, so a burst of
            submissions makes one training, not one each (explicit requests start at once).
        max_image_bytes: largest image file read (local or fetched).
        max_image_pixels: largest image decoded (width × height, checked from its header).
        max_scoring: requests that decode and score at once (the others wait; bounds memory).
        stop_set: unlabeled items a stopping criterion watches at every model version (a file or
            folder read like a pool; never labeled, the same items every time). ``None``: no advice.
        stop_criterion: a name in :data:`jacal.stopping.CRITERIA` (default: the saved state's, else
            jacal's recommended one).
    """

    def __init__(self, model: Union[str, Path], *, state_dir: Union[str, Path, None] = None,
                 model_version: Optional[str] = None, strategy: str = "jacobian", label_config: Optional[str] = None,
                 document_root: Union[str, Path, None] = None, label_studio_url: Optional[str] = None,
                 api_key: Optional[str] = None, image_size: Optional[Tuple[int, int]] = None,
                 channels: Optional[int] = None, epochs: Optional[float] = None, lr: Optional[float] = None,
                 batch_size: Optional[int] = None, seed: int = 0, device: Any = "cpu", refresh: bool = True,
                 max_tasks: int = 10000, train_on: str = "annotations", train_every: int = 20,
                 debounce: float = 60.0, max_image_bytes: int = 32 << 20, max_image_pixels: int = 25_000_000,
                 max_scoring: int = 4, stop_set: Union[str, Path, None] = None,
                 stop_criterion: Optional[str] = None) -> None:
        if train_on not in TRAIN_ON:
            raise JacalError(f"train_on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
        if not debounce >= 0:
            raise JacalError(f"debounce must be a number of seconds ≥ 0, not {debounce!r}")
        for name, value in (("train_every", train_every), ("max_image_bytes", max_image_bytes),
                            ("max_image_pixels", max_image_pixels), ("max_scoring", max_scoring)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise JacalError(f"{name} must be a positive integer, not {value!r}")
        self.train_on, self.debounce, self.train_every = train_on, float(debounce), train_every
        self.max_image_bytes, self.max_image_pixels, self.max_scoring = max_image_bytes, max_image_pixels, max_scoring
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
        self.stop_set, self.stop_criterion = stop_set, stop_criterion

    # ------------------------------------------------------------------ start, stop

    def start(self) -> "MLBackend":
        """Take the state folder (its lock), load the model (the state's last version when the
        folder has one), start the training worker and queue the jobs a stop or crash left unfinished.

        Raises:
            JacalError: another server on the state folder, an unreadable model or state, a
                strategy jacal does not know, or a stop set or criterion that cannot be used.
        """
        import jacal
        from jacal.models import load_model_file

        jacal.acquisition.get_strategy(self.strategy)  # an unknown name fails here, not per request
        base = load_model_file(self.model_path)
        self.trainable = base.kind in jacal.models.MODEL_KINDS
        self.base_kind, self.base_config, self.base_meta = base.kind, base.config, dict(base.metadata)
        version = self.model_version_arg or str(self.base_meta.get("model_version") or DEFAULT_MODEL_VERSION)
        self.state = ServeState(self.state_dir, self.model_path, version).load()
        try:
            current = base if not self.state.versions else load_model_file(self.state.current_model)
            self._set_model(current)
            self.stop_tracker: Optional[StopTracker] = None
            if self.stop_set is not None or self.stop_criterion is not None:
                if self.stop_set is None:
                    raise JacalError("`stop_criterion` needs `stop_set`: the unlabeled items the criterion watches")
                m = self._model
                self.stop_tracker = StopTracker(self.state.folder, self.stop_set, criterion=self.stop_criterion,
                                                input_shape=(m["channels"], *m["size"]), device=self.device).load()
                labeled = self.state.versions[-1].get("n_labeled") if self.state.versions else None
                self._set_model(current, advice=self.stop_tracker.advise(current.model.eval(), m["version"],
                                                                         labeled=labeled))
        except BaseException:
            self.state.close()
            raise
        self.client = LabelStudioClient(self.label_studio_url, self.api_key) if self.label_studio_url else None
        self._cv = threading.Condition()
        self._pending: Optional[dict] = None
        self._running: Optional[dict] = None
        self._stop = threading.Event()
        self._seen_config: Optional[str] = None
        self._scoring = threading.BoundedSemaphore(self.max_scoring)
        self._unreadable: collections.deque = collections.deque(maxlen=20)
        self._unreadable_count = 0
        self._requeue()
        self._worker = threading.Thread(target=self._work, name="jacal-serve-train", daemon=True)
        self._worker.start()
        log.info("serving model version %s from %s (state in %s)", self.state.current_version, self.model_path,
                 self.state_dir)
        return self

    def _set_model(self, ck: Any, advice: Optional[dict] = None) -> None:
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
                 "transform": image_transform(size, ch), "advice": advice}
        self._model = model  # one reference swap: a request in flight keeps the model it started with

    def request_stop(self) -> None:
        """Ask the worker to stop (returns at once): a job in training stops at its next step."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def stop(self, timeout: float = 8.0) -> bool:
        """Stop the worker and release the state folder. A job in training is cut at its next step
        and recorded ``interrupted`` (a restart re-runs it); the last version is untouched.

        Returns:
            ``True`` once the worker has ended, ``False`` if it was still busy after ``timeout``
            seconds (then the folder stays locked until the process ends).
        """
        self.request_stop()
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("the training worker did not stop within %.0f s", timeout)
            return False
        self.state.close()
        return True

    # ------------------------------------------------------------------ routes

    def health(self) -> Answer:
        """Never waits on a lock: Label Studio's health check must answer within a second."""
        m = self._model
        return 200, {"status": "UP", "model_class": "jacal", "model_version": m["version"],
                     "training": self._running is not None, "queued": self._pending is not None,
                     "last_job": self.state.last_job(),
                     "unreadable": {"count": self._unreadable_count, "recent": list(self._unreadable)},
                     "stop": self.stop_tracker.status() if self.stop_tracker is not None else None}

    def setup(self, payload: Any, *, authenticated: bool = False) -> Answer:
        """Label Studio connecting a project. Its ``hostname`` and ``access_token`` are used only when
        the server has no ``label_studio_url`` and the caller is ``authenticated`` (basic auth):
        otherwise anyone who reaches the server could choose where images and exports come from."""
        project, schema, host, token = P.parse_setup(payload)
        if schema is not None:
            self._seen_config = schema
            P.class_names(P.parse_label_config(schema), self._model["label_names"], self._model["n_classes"])
        if self.client is None and host and token:
            if authenticated:
                self.client = LabelStudioClient(host, token)
                log.info("Label Studio host set by an authenticated /setup: %s", self.client.url)
            else:
                log.warning("ignored the Label Studio host a /setup named (%s): without basic auth, pass "
                            "--label-studio-url", host[:200])
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
        with self._scoring:
            x, errors = self._decode_each(req.tasks, config, m)
            ok = [i for i, e in enumerate(errors) if e is None]
            res, at = self._score(m["model"], torch.stack([x[i] for i in ok])) if ok else (None, [])
        rank = {int(j): r for r, j in enumerate(res.indices)} if res is not None else {}
        stop = _stop_line(m["version"], m["advice"])
        results: List[dict] = []
        for i, err in enumerate(errors):
            if err is not None:  # no "result": Label Studio skips this task and logs the error
                results.append({"model_version": m["version"], "error": err})
                continue
            k = at[ok.index(i)]
            why = reason_data(res, rank[k], label_names=names) if k in rank else {}
            reason = why.pop("reason", None)
            results.append(P.prediction(names[int(res.predicted[k])], P.item_score(res.scores[k]), config,
                                        m["version"], confidence=float(res.confidence[k]), reason=reason,
                                        reason_fields=why, stop=stop))
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

    def _read(self, ref: str) -> bytes:
        where = P.locate_image(ref, document_root=self.document_root,
                               label_studio_url=self.client.url if self.client else self.label_studio_url)
        if where.kind == "file":
            return read_local(where.where, root=self.document_root, ref=ref, max_bytes=self.max_image_bytes)
        if self.client is None:
            raise P.ProtocolError(f"image {ref!r} is on Label Studio: pass --label-studio-url and --api-key", 422)
        try:
            return self.client.fetch(where.where, max_bytes=self.max_image_bytes)
        except JacalError as err:
            raise P.ProtocolError(first_line(err, 300), status=422) from None

    def _decode_one(self, ref: str, m: dict) -> torch.Tensor:
        return decode_bounded(self._read(ref), m["channels"], m["transform"], ref=ref,
                              max_pixels=self.max_image_pixels)

    def _decode_each(self, tasks: List[dict], config: P.LabelConfig, m: dict) -> Tuple[List, List[Optional[str]]]:
        """Each task's pixels, or the one-line reason it has none (logged and kept for ``/health``)."""
        x: List[Optional[torch.Tensor]] = []
        errors: List[Optional[str]] = []
        for task in tasks:  # decoding is per file by nature; scoring is batched
            try:
                x.append(self._decode_one(P.task_ref(task, config), m))
                errors.append(None)
            except P.ProtocolError as err:
                x.append(None)
                errors.append(first_line(err, 300))
                self._note_unreadable(task.get("id"), errors[-1])
        return x, errors

    def _note_unreadable(self, task_id: Any, reason: str) -> None:
        task_id = task_id if isinstance(task_id, (int, str)) and not isinstance(task_id, bool) else None
        self._unreadable_count += 1
        self._unreadable.append({"task": task_id, "reason": reason, "at": round(time.time(), 3)})
        log.warning("task %s: no prediction: %s", task_id if task_id is not None else "?", reason)

    def _score(self, model: torch.nn.Module, x: torch.Tensor) -> Tuple[Any, List[int]]:
        """:func:`jacal.acquire` over the request's distinct items, every valid one picked, so each has
        its rank and its reason (the same as acquiring them as one pool), and where each row of ``x``
        is in that result: copies of an image (the same file imported twice) share their first
        copy's prediction and reason. The diversity seeding draws each pick away from the earlier
        ones, so it has no pick to give once only copies of picked items are left."""
        import jacal

        groups = torch.unique(x.reshape(len(x), -1), dim=0, return_inverse=True)[1].tolist()
        slot: Dict[int, int] = {}  # a group of equal rows -> its place among the kept rows (first copies, in order)
        keep: List[int] = []
        for i, g in enumerate(groups):
            if g not in slot:
                slot[g] = len(keep)
                keep.append(i)
        at = [slot[g] for g in groups]
        x = x[keep]
        k = max(1, int((~nonfinite_rows(x)).sum()))  # acquire picks among the items with finite values
        try:
            res = jacal.acquire(model, x, k, strategy=self.strategy, seed=self.seed, device=self.device)
        except ValueError as err:  # e.g. every image decodes to NaN
            raise P.ProtocolError(first_line(err), status=422) from None
        return res, at

def _stop_line(version: str, advice: Optional[dict]) -> Optional[str]:
    """The one line a labeling view shows for ``version``'s stop advice (``None``: no advice)."""
    if not advice or advice.get("model_version") != version:
        return None
    return f"model {version}: {'stop labeling' if advice['stop'] else 'keep labeling'} — {advice['reason']}"
