"""quivers: PyTorch-native variational inference.

Models are :class:`MonadicProgram` modules declared as step specs; guides are
``nn.Module`` s in :mod:`quivers.guides`; objectives, ``SVI`` and ``Predictive`` live in
:mod:`quivers.infer`; Lightning integration in :mod:`quivers.lightning`.
"""

from . import constraints, errors
from ._version import __version__
from .program import (
    Deterministic,
    Factor,
    ImproperUniform,
    Latent,
    Markov,
    MonadicProgram,
    Observed,
    Param,
    Plate,
    ProjectedNormal,
    Site,
    Trace,
    config_enumerate,
    render_model,
    vindex,
)
from .validation import enable_validation, is_validation_enabled, validation_enabled

__all__ = [
    "__version__", "errors", "constraints", "MonadicProgram", "Plate", "Latent", "Observed", "Deterministic",
    "Factor", "Param", "ImproperUniform", "Trace", "Site", "Markov", "vindex", "config_enumerate", "enable_validation",
    "is_validation_enabled", "validation_enabled", "render_model", "ProjectedNormal",
]
