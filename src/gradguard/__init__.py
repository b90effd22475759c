"""gradguard: keep Keras training from dying of exploding gradients.

`GradientGuard` is imported lazily, so that modules which need no deep-learning
framework (the params schema, data loading) load without importing one.
"""

from gradguard.params import Params, ParamsError, load_params, parse_params

__all__ = ["GradientGuard", "Params", "ParamsError", "load_params", "parse_params"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "GradientGuard":
        from gradguard.guard import GradientGuard

        return GradientGuard
    raise AttributeError(f"module 'gradguard' has no attribute {name!r}")
