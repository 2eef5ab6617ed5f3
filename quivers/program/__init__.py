"""Models as programs: step specs, plates, ``MonadicProgram`` and traces."""

from .improper import ImproperUniform
from .plate import Plate
from .program import LatentSiteInfo, MonadicProgram, PreparedBatch
from .steps import Deterministic, Factor, Latent, Observed, Param, Step
from .trace import Site, Trace

__all__ = [
    "MonadicProgram", "Plate", "Latent", "Observed", "Deterministic", "Factor", "Param", "Step",
    "ImproperUniform", "Trace", "Site", "LatentSiteInfo", "PreparedBatch",
]
