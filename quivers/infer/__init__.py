"""Objectives, the ``SVI`` loop, ``Predictive`` and the PSIS diagnostic."""

from .averaging import IterateAverage
from .compiled import CompiledObjective
from .discrete import infer_discrete
from .elbo import ELBO, Trace_ELBO, TraceMeanField_ELBO
from .fused import FusedStep
from .inference_data import draws_inference_data, to_inference_data
from .mcmc import MCMC, NUTS
from .neutra import NeuTraReparam
from .predictive import Predictive
from .psis import PSISDiagnostic, psis_diagnostic
from .renyi import RenyiELBO
from .run import PlateauRule, SVIRunResult
from .svi import SVI
from .tail_adaptive import TraceTailAdaptive_ELBO
from .traceenum import TraceEnum_ELBO
from .tracegraph import TraceGraph_ELBO
from .whitened import WhitenedAdam

__all__ = ["ELBO", "Trace_ELBO", "TraceMeanField_ELBO", "RenyiELBO", "TraceTailAdaptive_ELBO", "TraceEnum_ELBO",
           "TraceGraph_ELBO", "SVI", "SVIRunResult", "FusedStep", "IterateAverage",
           "PlateauRule", "Predictive", "CompiledObjective", "psis_diagnostic", "PSISDiagnostic", "WhitenedAdam",
           "to_inference_data", "draws_inference_data", "infer_discrete", "NUTS", "MCMC",
           "NeuTraReparam"]
