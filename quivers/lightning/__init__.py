"""Lightning integration: ``SVIModule``, the posterior summary and the ``quivers`` CLI."""

from .checkpoint import AtomicCheckpointIO
from .module import SVIModule, build_guide
from .predictions import GatherPredictions

__all__ = ["SVIModule", "build_guide", "AtomicCheckpointIO", "GatherPredictions"]
