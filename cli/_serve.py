"""`jacal serve`: a Label Studio ML backend (:mod:`jacal.serve`)."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from jacal._internal.validation import JacalError
from ._common import warn
from ._options import STRATEGY_METAVAR, DeviceOpt, JsonOpt, ModelOpt, strategy_name


class TrainOn(str, Enum):
    annotations = "annotations"
    request = "request"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    model: ModelOpt,
    host: Annotated[str, typer.Option(help="Address to bind. The default serves this machine only; another address "
                                           "exposes the model (use --basic-auth-user/--basic-auth-pass).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9090,
    state_dir: Annotated[Optional[Path], typer.Option(help="Where trained versions and jobs are kept (a restart resumes "
                                                           "from the last version). Default: MODEL.serve/ beside the "
                                                           "model.", file_okay=False)] = None,
    model_version: Annotated[Optional[str], typer.Option(help="The first version's tag (default: the checkpoint's, else "
                                                              "'jacal'); each training adds .1, .2, ...")] = None,
    strategy: Annotated[str, typer.Option(metavar=STRATEGY_METAVAR, callback=strategy_name,
                                          help="Acquisition strategy whose per-item score orders Label Studio's "
                                               "queue (lowest prediction score first).")] = "jacobian",
    label_config: Annotated[Optional[Path], typer.Option(help="The project's labeling config (XML), for requests that "
                                                              "carry none.", exists=True, dir_okay=False)] = None,
    document_root: Annotated[Optional[Path], typer.Option(help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT: where "
                                                               "/data/local-files/?d= image URLs point. Local images "
                                                               "(paths, file:// URIs) are read only inside it, "
                                                               "symlinks resolved; without it they are refused.",
                                                          exists=True, file_okay=False)] = None,
    label_studio_url: Annotated[Optional[str], typer.Option(envvar="LABEL_STUDIO_URL",
                                                            help="The Label Studio server (to fetch the project's "
                                                                 "annotations and its images), e.g. "
                                                                 "http://127.0.0.1:8080. Without it, the host a "
                                                                 "/setup names is used only behind basic auth.")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="LABEL_STUDIO_API_KEY", show_default=False,
                                                   help="A Label Studio access token (Account & Settings > Personal "
                                                        "Access Token, or a legacy token).")] = None,
    basic_auth_user: Annotated[Optional[str], typer.Option(envvar="JACAL_SERVE_USER",
                                                           help="Require HTTP basic auth (set the same in the "
                                                                "project's Model settings).")] = None,
    basic_auth_pass: Annotated[Optional[str], typer.Option(envvar="JACAL_SERVE_PASSWORD", show_default=False,
                                                           help="Password of --basic-auth-user.")] = None,
    image_size: Annotated[Optional[List[int]], typer.Option(help="Resize images to H W (default: the checkpoint's "
                                                                 "input shape).")] = None,
    channels: Annotated[Optional[int], typer.Option(help="1 (grayscale) or 3 (RGB); default: the checkpoint's.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Epochs of each retraining (default: the checkpoint's).")] = None,
    refresh: Annotated[bool, typer.Option(help="After a training, set the project's model version to the new one and "
                                               "ask Label Studio to retrieve its predictions.")] = True,
    train_on: Annotated[TrainOn, typer.Option(help="What starts a retraining: 'annotations' (annotations Label "
                                                   "Studio reports: after --train-every of them or --debounce "
                                                   "seconds of quiet) or 'request' (only the project's Start "
                                                   "training button / POST /train).")] = TrainOn.annotations,
    train_every: Annotated[int, typer.Option(min=1, help="Retrain after this many new annotations, without waiting "
                                                         "for quiet. Each retraining is a new version and a "
                                                         "prediction refresh of the whole project in Label "
                                                         "Studio.")] = 20,
    debounce: Annotated[float, typer.Option(min=0.0, help="Or retrain after this many seconds without a new "
                                                          "annotation (an annotator's pause), whichever comes "
                                                          "first.")] = 60.0,
    max_body_mb: Annotated[float, typer.Option(min=0.01, help="Largest request body in MB (a larger one is "
                                                              "refused with 413 before it is read).")] = 32.0,
    max_image_pixels: Annotated[int, typer.Option(min=1, help="Largest image decoded, in pixels (checked from the "
                                                              "header; larger images get no prediction).")]
    = 25_000_000,
    stop_set: Annotated[Optional[Path], typer.Option(help="Unlabeled items a stopping criterion watches at every model "
                                                          "version (.npy/.npz/.pt, an image folder or a manifest, as "
                                                          "acquire's --pool; never labeled, the same every time). The "
                                                          "advice is logged per version, kept in the state folder and "
                                                          "shown on /health.")] = None,
    stop_criterion: Annotated[Optional[str], typer.Option(help="Criterion of the stop advice (default: the state's, "
                                                                "else jacal's recommended one; see jacal.stopping).")]
    = None,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's).")] = None,
    device: DeviceOpt = "cpu",
    json_out: JsonOpt = False,
) -> None:
    """Serve a model as a Label Studio ML backend: predictions as pre-annotations, jacal's acquisition
    order as the project's queue, a new model version after each round of annotations. Stops on
    SIGTERM / Ctrl-C after the requests in flight (4 s at most), cutting a training short (its job is
    re-run on the next start), and exits 0."""
    try:
        import uvicorn

        from jacal.serve.app import create_app
    except ImportError as err:
        raise JacalError(f"jacal serve needs its web stack ({err.name} is missing): pip install 'jacal[serve]'") from None
    import torch

    from jacal.serve import MLBackend

    if (basic_auth_user is None) != (basic_auth_pass is None):
        raise JacalError("--basic-auth-user and --basic-auth-pass go together")
    if not _loopback(host) and basic_auth_user is None:
        warn(f"serving on {host} without --basic-auth-user: anyone who reaches it can use the model")
    if threads:
        torch.set_num_threads(threads)
    _log_to_stderr()
    backend = MLBackend(model, state_dir=state_dir, model_version=model_version, strategy=strategy,
                        label_config=label_config.read_text(encoding="utf-8") if label_config else None,
                        document_root=document_root, label_studio_url=label_studio_url, api_key=api_key,
                        image_size=tuple(image_size) if image_size else None, channels=channels, epochs=epochs,
                        device=device, refresh=refresh, train_on=train_on.value, train_every=train_every,
                        debounce=debounce, max_image_pixels=max_image_pixels, stop_set=stop_set,
                        stop_criterion=stop_criterion).start()
    if document_root is None:
        warn("no --document-root: tasks with local image paths get no prediction (Label Studio uploads and "
             "URLs on --label-studio-url still work)")
    info = {"url": f"http://{host}:{port}", "model": str(model), "model_version": backend.state.current_version,
            "state_dir": str(backend.state_dir), "trainable": backend.trainable, "pid": os.getpid()}
    if backend.stop_tracker is not None:
        st = backend.stop_tracker.status()
        info["stop"] = {k: st[k] for k in ("stop", "reason", "criterion", "model_version")}
    typer.echo(json.dumps(info) if json_out else
               f"jacal serve: {info['url']} (model version {info['model_version']}; state in {info['state_dir']}"
               f"{'' if backend.trainable else '; predict only'})")
    app = create_app(backend, basic_auth=(basic_auth_user, basic_auth_pass) if basic_auth_user else None,
                     max_body=int(max_body_mb * 1024 * 1024))

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # the first SIGTERM / Ctrl-C also stops the training at its next step
            if not self.should_exit:
                logging.getLogger("jacal.serve").info("stopping (%s): finishing the requests in flight",
                                                      signal.Signals(sig).name)
            backend.request_stop()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                   timeout_graceful_shutdown=4))
    stopped = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stopped.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}  # uvicorn re-raises the signal it handled into these
    try:
        server.run()  # SIGTERM / SIGINT: stop accepting, finish the requests in flight (4 s at most), return
    finally:
        ended = backend.stop(timeout=4.0)
        logging.getLogger("jacal.serve").info("stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise JacalError(f"could not listen on {host}:{port} (in use, or not an address of this machine)")
    # Leave at once: the state is already durable (fsync'd) and the folder unlocked, while the
    # interpreter's own teardown of torch takes seconds on a busy machine; and if a training step
    # outlived the grace time (its job stays "running" and is re-run on start), a normal exit under
    # that running torch thread would abort the process.
    if not ended:
        logging.getLogger("jacal.serve").warning("a training step outlived the stop; its job is re-run on start")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _log_to_stderr() -> None:
    """The operator's log on stderr: 4xx answers and their reasons, jobs, versions (never a token)."""
    logger = logging.getLogger("jacal.serve")
    if not any(getattr(h, "_jacal", False) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s jacal serve %(levelname)s %(message)s"))
        handler._jacal = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class _Stderr(logging.StreamHandler):
    """A handler writing to the ``sys.stderr`` of the moment (a test runner swaps it)."""

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass
