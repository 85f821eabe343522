"""Training InstanSeg models with SCNP: config and presets, seeded tiles, and a run in three steps.

:mod:`.config` and :mod:`.presets` define a run; :mod:`.loop` runs it as
:mod:`.setup` (run directory, derived settings, model), :mod:`.fit` (epochs,
checkpoints, resuming) and :mod:`.finish` (curves, export, evaluation), on the
processes of :mod:`.distributed`, with the tiles of :mod:`.samples`. Names load
on first access, so reading the config (``--help``) loads no upstream code.
"""

from instanseg_scnp._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "PRESETS": ".presets", "TrainConfig": ".config", "TrainResult": ".loop", "TrainingDiverged": ".fit",
    "resume": ".loop", "train": ".loop",
})
