"""Training InstanSeg models with SCNP: config and presets, tiles, the loop, processes and the run directory."""

from instanseg_scnp.training.config import TrainConfig
from instanseg_scnp.training.loop import TrainingDiverged, TrainResult, resume, train
from instanseg_scnp.training.presets import PRESETS

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "TrainingDiverged", "resume", "train"]
