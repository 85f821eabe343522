"""Training InstanSeg models with SCNP: config, tiles, the loop, processes and the run directory."""

from instanseg_scnp.training.config import TrainConfig, auto_window
from instanseg_scnp.training.loop import TrainResult, resume, train

__all__ = ["TrainConfig", "TrainResult", "auto_window", "resume", "train"]
