"""`jacal serve`: a Label Studio ML backend (:mod:`jacal.serve`)."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from jacal._validation import JacalError
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
                                                               "/data/local-files/?d= image URLs point.",
                                                          exists=True, file_okay=False)] = None,
    label_studio_url: Annotated[Optional[str], typer.Option(envvar="LABEL_STUDIO_URL",
                                                            help="The Label Studio server (to fetch the project's "
                                                                 "annotations and its images), e.g. "
                                                                 "http://127.0.0.1:8080.")] = None,
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
    train_on: Annotated[TrainOn, typer.Option(help="What starts a retraining: 'annotations' (every annotation "
                                                   "Label Studio reports, after --debounce seconds of quiet) or "
                                                   "'request' (only the project's Start training button / "
                                                   "POST /train).")] = TrainOn.annotations,
    debounce: Annotated[float, typer.Option(min=0.0, help="Seconds without a new annotation before a retraining "
                                                          "starts, so a burst of submissions trains once.")] = 2.0,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's).")] = None,
    device: DeviceOpt = "cpu",
    json_out: JsonOpt = False,
) -> None:
    """Serve a model as a Label Studio ML backend: predictions as pre-annotations, jacal's acquisition
    order as the project's queue, a new model version after each round of annotations. Stops on
    SIGTERM / Ctrl-C after the requests in flight."""
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
    backend = MLBackend(model, state_dir=state_dir, model_version=model_version, strategy=strategy,
                        label_config=label_config.read_text(encoding="utf-8") if label_config else None,
                        document_root=document_root, label_studio_url=label_studio_url, api_key=api_key,
                        image_size=tuple(image_size) if image_size else None, channels=channels, epochs=epochs,
                        device=device, refresh=refresh, train_on=train_on.value, debounce=debounce).start()
    info = {"url": f"http://{host}:{port}", "model": str(model), "model_version": backend.state.current_version,
            "state_dir": str(backend.state_dir), "trainable": backend.trainable, "pid": os.getpid()}
    typer.echo(json.dumps(info) if json_out else
               f"jacal serve: {info['url']} (model version {info['model_version']}; state in {info['state_dir']}"
               f"{'' if backend.trainable else '; predict only'})")
    app = create_app(backend, basic_auth=(basic_auth_user, basic_auth_pass) if basic_auth_user else None)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=30))
    stopped = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stopped.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}  # uvicorn re-raises the signal it handled into these
    try:
        server.run()  # SIGTERM / SIGINT: stop accepting, finish the requests in flight, return
    finally:
        backend.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise JacalError(f"could not listen on {host}:{port} (in use, or not an address of this machine)")
