"""``jacal serve``: a Label Studio ML backend (predictions as pre-annotations, jacal's acquisition
order as Label Studio's queue, retraining on annotation events).

Shaped like the other rooms above :mod:`jacal.pipeline`: :mod:`jacal.serve.protocol` (Label Studio
payloads ↔ jacal's items and predictions, pure functions), :mod:`jacal.serve.state` (model
versions and training jobs, written atomically, one server per folder), :mod:`jacal.serve.files`
(task images read inside the document root, regular files only, within size and pixel limits),
:mod:`jacal.serve.advice` (stop advice across model versions, kept in the state folder),
:mod:`jacal.serve.backend` (the routes' work, framework-free), :mod:`jacal.serve.worker` (its
training jobs: queue, debounce, re-runs, each new version), :mod:`jacal.serve.labelstudio` (the
Label Studio API calls, never sending the token to another host) and
:mod:`jacal.serve.app` (the Starlette routes; needs ``pip install 'jacal[serve]'``).
"""
from jacal.serve.backend import MLBackend
from jacal.serve.protocol import (NONE_OF_THESE, LabelConfig, ProtocolError, item_score, locate_image,
                                  parse_label_config, parse_predict, parse_webhook, prediction, queue_score)
from jacal.serve.state import ServeState

__all__ = ["MLBackend", "ServeState", "ProtocolError", "LabelConfig", "parse_label_config", "parse_predict",
           "parse_webhook", "locate_image", "prediction", "queue_score", "item_score", "NONE_OF_THESE"]
