"""Lightning integration: ``SVIModule``, the posterior summary and the ``quivers`` CLI."""

from .checkpoint import AtomicCheckpointIO
from .module import SVIModule, build_guide

__all__ = ["SVIModule", "build_guide", "AtomicCheckpointIO"]
