"""Simulated active learning: labeling rounds that compare acquisition strategies honestly.

One module per concern, like :mod:`jacal.replication`: :mod:`~jacal.loop.config` (the experiment,
its presets and checks), :mod:`~jacal.loop.runner` (the rounds and the training recipe),
:mod:`~jacal.loop.source` (a team's own pool and annotation export as the items),
:mod:`~jacal.loop.store` (``loop.sqlite``), :mod:`~jacal.loop.summary` (AULC, CIs, paired tests),
:mod:`~jacal.loop.figures` (``curves.png``) and :mod:`~jacal.loop.report` (``report.md`` and the
other outputs).
"""
from jacal.loop.config import LOOP_PRESETS, LoopConfig
from jacal.loop.source import LabeledSource
from jacal.loop.runner import LoopCallbacks, pointwise_check, run_loop  # noqa: F401
from jacal.loop.summary import summarize

__all__ = ["LoopConfig", "LOOP_PRESETS", "LabeledSource", "run_loop", "LoopCallbacks", "summarize"]


def __getattr__(name: str):
    if name == "write_outputs":  # the outputs (and matplotlib) load on first use, not with jacal.loop
        from jacal.loop.report import write_outputs

        return write_outputs
    raise AttributeError(f"module 'jacal.loop' has no attribute {name!r}")
