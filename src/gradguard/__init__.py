"""gradguard: keep Keras training from dying of exploding gradients."""

from gradguard.guard import GradientGuard
from gradguard.params import Params, ParamsError, load_params, parse_params

__all__ = ["GradientGuard", "Params", "ParamsError", "load_params", "parse_params"]
__version__ = "0.1.0"
