"""The replication suite: train model populations and check every claim of Novak et al. 2018."""
from jacal.replication.config import PRESETS, Preset, plan_models
from jacal.replication.runner import Callbacks, run_replication

__all__ = ["run_replication", "Callbacks", "PRESETS", "Preset", "plan_models"]
