"""Lightning integration: ``SVIModule``, the fit recipe's callbacks, the posterior summary
and the ``quivers`` CLI."""

from .checkpoint import AtomicCheckpointIO
from .module import SVIModule, build_guide
from .predictions import GatherPredictions
from .recipe import LaplaceWarmStart, PosteriorAveraging

__all__ = ["SVIModule", "build_guide", "AtomicCheckpointIO", "GatherPredictions", "LaplaceWarmStart",
           "PosteriorAveraging"]
