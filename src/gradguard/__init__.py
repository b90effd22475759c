"""gradguard: keep Keras training from dying of exploding gradients.

The flat public API: `from gradguard import GradientGuard, ShardSequence, load_model, ...`.
Every name is imported lazily, on first use, so that a module needing no
deep-learning framework (the params schema, data preparation) loads none.
The subpackages group the code by concern:

    gradguard.functional   the guard's math as pure `keras.ops` functions
    gradguard.data         sources, shard sets, streaming, augmentation
    gradguard.training     models, callbacks, recovery, resume, fit, multi-host
    gradguard.evaluation   scores, curves, the verdict, the metrics gate
"""

from __future__ import annotations

import importlib

# Public name -> the module that defines it (one table; `python -m` stages import modules).
_EXPORTS = {
    # the guard and its math
    "GradientGuard": "gradguard.guard",
    "StepRow": "gradguard.functional.state",
    "GuardedLossScaleOptimizer": "gradguard.loss_scale",
    "CLIP_MODES": "gradguard.settings",
    "clip_by_value": "gradguard.functional.clipping",
    "clip_by_norm": "gradguard.functional.clipping",
    "clip_by_global_norm": "gradguard.functional.clipping",
    "adaptive_clip": "gradguard.functional.clipping",
    "autoclip_threshold": "gradguard.functional.thresholds",
    "zscore_threshold": "gradguard.functional.thresholds",
    "global_norm": "gradguard.functional.clipping",
    "spike_check": "gradguard.functional.detection",
    # params and errors
    "Params": "gradguard.params",
    "load_params": "gradguard.params",
    "parse_params": "gradguard.params",
    "ParamsError": "gradguard.errors",
    "DataError": "gradguard.errors",
    "ClusterError": "gradguard.errors",
    # data
    "ShardSequence": "gradguard.data.stream",
    "ShardWriter": "gradguard.data.shards",
    "read_index": "gradguard.data.shards",
    "iter_shards": "gradguard.data.shards",
    "load_images": "gradguard.data.sources",
    "Augmenter": "gradguard.data.augment",
    # training
    "build_cnn": "gradguard.training.families",
    "build_initializer": "gradguard.training.families",
    "build_mlp": "gradguard.training.families",
    "build_model": "gradguard.training.families",
    "build_rnn": "gradguard.training.families",
    "SparseSpectral": "gradguard.training.families",
    "build_optimizer": "gradguard.training.models",
    "load_model": "gradguard.training.models",
    "save_model": "gradguard.training.models",
    "GradientStatsLogger": "gradguard.training.callbacks",
    "DivergenceMonitor": "gradguard.training.callbacks",
    "read_stats": "gradguard.training.callbacks",
    "ExplosionRecovery": "gradguard.training.recovery",
    "cluster_from_env": "gradguard.training.multihost",
    "initialize": "gradguard.training.multihost",
    "broadcast_folder": "gradguard.training.multihost",
    "check_agreement": "gradguard.training.multihost",
    "start_local_cluster": "gradguard.training.local",
    "RunRecord": "gradguard.training.outcome",
    "write_verdict": "gradguard.training.outcome",
    # evaluation
    "run_verdict": "gradguard.verdict",
    "VerdictRules": "gradguard.verdict",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
