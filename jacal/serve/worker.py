"""The training worker of :class:`jacal.serve.backend.MLBackend`: the job queue and each new model version.

A training request (an annotation event or an explicit "Start training") becomes a job, run in the
background by one worker thread, one job at a time. Requests that arrive meanwhile are merged into
one next job, which starts after ``train_every`` annotation events or ``debounce`` seconds without
one, whichever comes first; an explicit request starts at once. Every job is recorded in the state
folder before it runs, so a stop or a crash leaves it ``queued`` or ``running`` and the next start
re-runs it (:meth:`TrainingWorker._requeue`); annotation events sent while the server was down are
caught up by comparing the project's export with the last version's (:meth:`TrainingWorker._catch_up`).

A job fetches the project's export, trains a fresh model of the checkpoint's architecture on the
items labeled with a class, writes it and the state atomically, observes it on the stop set when
there is one, swaps it in and asks Label Studio for the new predictions.

Kept apart from the routes because it is the one stateful, threaded part of the backend: the
routes only read the current model and queue jobs.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, List, Optional, Tuple

import torch

from jacal._internal.validation import JacalError, first_line
from jacal.io.formats.labelstudio import annotations_from_label_studio, key_tasks
from jacal.serve import protocol as P

log = logging.getLogger("jacal.serve")
Answer = Tuple[int, Any]


class _Stopped(Exception):
    """Raised inside a training step when the server is stopping (the job is abandoned, not failed)."""


class _NothingNew(Exception):
    """A catch-up job found the project's annotations unchanged since the last version."""


def _fingerprint(labels: dict, out_of_set: Any) -> str:
    """A digest of a project's annotations (each item's label, and the items outside the label set)."""
    import hashlib

    text = json.dumps([sorted(labels.items()), sorted(out_of_set)], ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class TrainingWorker:
    """The job queue and the training of each new version, mixed into :class:`~jacal.serve.backend.MLBackend`.

    The backend provides what these methods read: ``state`` (a :class:`~jacal.serve.state.ServeState`),
    ``client``, the training options, ``_model`` and ``_set_model`` (the served model and its swap),
    ``_decode_each`` (a task's pixels or the reason it has none), ``stop_tracker``, and the worker's
    ``_cv`` / ``_pending`` / ``_running`` / ``_stop`` set up by ``start``.
    """

    def _requeue(self) -> None:
        """Re-run the newest job a stop or a crash left unfinished (one job: it trains on the whole
        export, so it covers the others and the annotations made while the server was down)."""
        old = self.state.unfinished_jobs()
        if not old:
            self._catch_up()
            return
        last = old[-1]
        if not self.trainable or self.client is None or last.get("project") is None:
            for j in old:
                self.state.record_job({**j, "status": "abandoned", "error": "cannot re-run it: it needs the "
                                       "project's export (start with --label-studio-url and --api-key) or was a "
                                       "/train with annotations in its body; send it again"})
            log.warning("%d job(s) left unfinished by the last run cannot be re-run", len(old))
            return
        for j in old:
            self.state.record_job({**j, "status": "rerun"})
        self._pending = {"id": uuid.uuid4().hex[:12], "project": last.get("project"), "tasks": [],
                         "label_config": last.get("label_config"), "action": last.get("action", "START_TRAINING"),
                         "requested": time.time(), "explicit": True, "events": 1, "rerun_of": last["id"]}
        self.state.record_job(self._record(self._pending, "queued"))
        log.info("job %s left %s by the last run: re-run as job %s", last["id"], last.get("status"),
                 self._pending["id"])

    def _catch_up(self) -> None:
        """Annotation events sent while the server was down are lost (Label Studio does not resend
        them): on start, queue a job that compares the project's export with the last version's
        annotations and trains only if they differ."""
        versions = self.state.versions
        project = versions[-1].get("project") if versions else None
        if not self.trainable or self.client is None or project is None:
            return
        configs = [j["label_config"] for j in self.state.data["jobs"] if isinstance(j.get("label_config"), str)]
        self._pending = {"id": uuid.uuid4().hex[:12], "project": project, "tasks": [],
                         "label_config": configs[-1] if configs else None, "action": "CATCH_UP",
                         "requested": time.time(), "explicit": True, "events": 1, "catch_up": True}
        self.state.record_job(self._record(self._pending, "queued"))

    def _decode_training(self, tasks: List[dict], config: P.LabelConfig, m: dict) -> Tuple[torch.Tensor, List[int],
                                                                                          List[str]]:
        """The pixels of the annotated tasks that are readable, their positions, and the reasons of
        the others (left out of the training, so one bad file does not block every new version)."""
        x, errors = self._decode_each(tasks, config, m)
        kept = [i for i, e in enumerate(errors) if e is None]
        bad = [f"task {tasks[i].get('id', '?')}: {e}" for i, e in enumerate(errors) if e is not None]
        if not kept:
            raise JacalError(f"no annotated image is readable ({'; '.join(bad[:3])})")
        return torch.stack([x[i] for i in kept]), kept, bad

    def _request_training(self, event: P.WebhookEvent) -> Answer:
        if not self.trainable:
            raise P.ProtocolError(f"{self.model_path.name} is not a jacal checkpoint, so jacal serve cannot retrain "
                                  "it (it predicts only)", status=409)
        if not event.tasks and event.project is None:
            raise P.ProtocolError("the training request names no project", status=400)
        if not event.tasks and self.client is None:
            raise P.ProtocolError("training fetches the project's annotations: start jacal serve with "
                                  "--label-studio-url and --api-key", status=409)
        if self._stop.is_set():
            raise P.ProtocolError("the server is stopping; send the training request again after its restart", 503)
        with self._cv:
            prev = self._pending
            explicit = event.action == "START_TRAINING" or bool((prev or {}).get("explicit"))
            self._pending = {"id": prev["id"] if prev else uuid.uuid4().hex[:12], "project": event.project,
                             "tasks": event.tasks,
                             "label_config": event.label_config or (prev or {}).get("label_config"),
                             "action": event.action, "requested": time.time(), "explicit": explicit,
                             "events": (prev or {}).get("events", 0) + 1}
            self.state.record_job(self._record(self._pending, "queued"))  # a crash from here on re-runs it
            self._cv.notify_all()
            job = dict(self._pending)
        log.info("job %s %s (%s, project %s, %d event(s))", job["id"], "merged" if prev else "queued",
                 event.action, event.project, job["events"])
        return 201, {"job": job["id"], "status": "queued", "merged": prev is not None}

    @staticmethod
    def _record(job: dict, status: str) -> dict:
        return {**{k: v for k, v in job.items() if k not in ("tasks", "label_config")}, "status": status,
                "label_config": job.get("label_config")}

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (for tests and scripts); ``False`` on timeout."""
        end = time.time() + timeout
        with self._cv:
            while (self._pending is not None or self._running is not None) and time.time() < end:
                self._cv.wait(0.05)
            return self._pending is None and self._running is None

    def _due(self) -> Optional[float]:
        """Seconds until the pending job may start (0: now), ``None`` when none is pending."""
        job = self._pending
        if job is None:
            return None
        if job.get("explicit") or job["events"] >= self.train_every:
            return 0.0
        return max(0.0, self.debounce - (time.time() - job["requested"]))

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._stop.is_set():
                    due = self._due()
                    if due == 0.0:
                        break
                    self._cv.wait(due)
                if self._stop.is_set():
                    return  # a queued job stays "queued" in the state: the next start runs it
                job, self._pending = self._pending, None
                self._running = job
            record = self._record(job, "running")
            record["started"] = time.time()
            self.state.record_job(record)
            log.info("job %s started (project %s)", job["id"], job["project"])
            try:
                record.update(self._train_job(job), status="done")
                log.info("job %s done: version %s from %d labeled item(s)", job["id"], record["version"],
                         record["n_labeled"])
            except _NothingNew:
                record.update(status="skipped", reason="no annotation changed since the last version")
                log.info("job %s: no annotation changed since version %s", job["id"], self.state.current_version)
            except _Stopped:
                record.update(status="interrupted")
                log.warning("job %s interrupted by the stop; the next start re-runs it", job["id"])
            except Exception as err:  # noqa: BLE001 - a failed job is recorded and the server lives on
                record.update(status="failed", error=first_line(err, 300))
                log.warning("job %s failed: %s", job["id"], record["error"])
            record["finished"] = time.time()
            self.state.record_job(record)
            with self._cv:
                self._running = None
                self._cv.notify_all()

    def _check_stop(self, step: int, total: int) -> None:
        if self._stop.is_set():
            raise _Stopped()

    def _train_job(self, job: dict) -> dict:
        import jacal

        tasks = job["tasks"] or self.client.export(job["project"])
        self._check_stop(0, 0)
        xml = job.get("label_config") or self.label_config or self._seen_config
        if xml is None:
            raise JacalError("no labeling config: the training request carries none; pass --label-config")
        config = P.parse_label_config(xml)
        m = self._model
        names = P.class_names(config, m["label_names"], m["n_classes"])
        keyed = key_tasks(tasks)  # jacal's item id is data.id; tasks imported without one are named by their task id
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
        fingerprint = _fingerprint(ann.labels, ann.out_of_set)
        if job.get("catch_up") and self.state.versions and self.state.versions[-1].get("annotations") == fingerprint:
            raise _NothingNew()
        x, kept, unreadable = self._decode_training([by_id[i] for i in items], config, m)
        items = [items[k] for k in kept]
        y = torch.tensor([index[ann.labels[i]] for i in items], dtype=torch.int64)
        model = jacal.models.build_model(self.base_kind, self.base_config)
        train = dict(self.base_meta.get("train") or {})
        epochs = self.epochs if self.epochs is not None else float(train.get("epochs", 30))
        lr = self.lr if self.lr is not None else float(train.get("lr", 1e-3))
        batch = self.batch_size if self.batch_size is not None else int(train.get("batch_size", 64))
        data = jacal.Splits(f"label-studio:{job['project']}", x, y, x[:0], y[:0], len(names))
        result = jacal.train(model, data, optimizer=str(train.get("optimizer", "adam")), lr=lr, batch_size=batch,
                             epochs=epochs, seed=self.seed, device=self.device, progress=self._check_stop)
        version = self.state.next_version()
        meta = {**self.base_meta, "label_names": list(names), "model_version": version,
                "input_shape": [m["channels"], *m["size"]], "n_classes": len(names),
                "source": {"label_studio_project": job["project"], "n_labeled": len(items),
                           "n_out_of_set": len(ann.out_of_set)},
                "metrics": {"train_accuracy": float(result.train_accuracy)}}
        path = self.state.new_model_path(version)
        jacal.save_checkpoint(path, model.cpu().eval(), metadata=meta)  # atomic; then the state names it
        self.state.add_version(version, path, n_labeled=len(items), n_out_of_set=len(ann.out_of_set),
                               train_accuracy=float(result.train_accuracy), project=job["project"],
                               annotations=fingerprint)
        from jacal.models import load_model_file

        ck = load_model_file(path)
        advice, stop_error = None, None
        if self.stop_tracker is not None:  # observed before the swap: each version is served with its own advice
            try:
                advice = self.stop_tracker.advise(ck.model.eval(), version, labeled=len(items))
            except JacalError as err:  # the version stands; the advice says why it is missing
                stop_error = first_line(err, 300)
                log.warning("version %s: no stop advice: %s", version, stop_error)
        self._set_model(ck, advice=advice)
        out = {"version": version, "n_labeled": len(items), "n_out_of_set": len(ann.out_of_set),
               "train_accuracy": float(result.train_accuracy), "n_unreadable": len(unreadable)}
        if advice is not None:
            out["stop"] = {"stop": advice["stop"], "reason": advice["reason"]}
        if stop_error is not None:
            out["stop_error"] = stop_error
        if unreadable:
            out["unreadable"] = unreadable[:5]
        if self._stop.is_set():
            out["refresh_error"] = "skipped: the server was stopping"
        elif self.refresh and self.client is not None and job["project"] is not None:
            try:
                # predictions of the new version first: Label Studio accepts a project model version only
                # once predictions carry it (or it is the backend's title)
                self.client.retrieve_predictions(job["project"])
                self.client.set_model_version(job["project"], version)
                out["refreshed"] = True
            except JacalError as err:
                out["refresh_error"] = first_line(err)
                log.warning("version %s: Label Studio refresh failed: %s", version, out["refresh_error"])
        return out
