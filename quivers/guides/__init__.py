"""Guides: variational distributions as ``nn.Module`` s.

Every automatic guide builds all of its parameters in ``__init__`` from the model's
step specs, through the shared :class:`LatentRegistry`.
"""

from .auto import AutoGuide
from .composite import AutoCallable, AutoGuideList
from .continuous import AutoContinuous
from .dais import AutoDAIS, AutoSurrogateLikelihoodDAIS
from .delta import AutoDelta, AutoDeltaGuide
from .discrete import AutoDiscreteParallel
from .flows import AutoBNAFNormal, AutoIAFNormal, AutoNormalizingFlow
from .gaussian import (
    AutoBatchedLowRankMultivariateNormal,
    AutoBatchedMultivariateNormal,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)
from .guide import Guide
from .initialization import (
    init_to_feasible,
    init_to_generated,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from .laplace import AutoLaplaceApproximation
from .normal import AutoNormal, AutoNormalGuide
from .registry import LatentRegistry, LatentSite
from .semi_dais import AutoSemiDAIS
from .structured import AutoStructured
from .warm_start import WarmStart, laplace_warm_start

__all__ = [
    "AutoDiscreteParallel",
    "Guide", "AutoGuide", "AutoNormalGuide", "AutoNormal", "AutoDeltaGuide", "AutoDelta",
    "AutoContinuous", "AutoDiagonalNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal",
    "AutoBatchedMultivariateNormal", "AutoBatchedLowRankMultivariateNormal", "AutoLaplaceApproximation",
    "AutoStructured", "AutoIAFNormal", "AutoBNAFNormal", "AutoNormalizingFlow",
    "AutoGuideList", "AutoCallable", "AutoDAIS", "AutoSurrogateLikelihoodDAIS", "AutoSemiDAIS",
    "LatentRegistry", "LatentSite", "init_to_median", "init_to_mean", "init_to_feasible",
    "init_to_uniform", "init_to_value", "init_to_sample", "init_to_generated", "laplace_warm_start", "WarmStart",
]
