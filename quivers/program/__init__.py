"""Models as programs: step specs, plates, ``MonadicProgram`` and traces."""

from .batch import PreparedBatch, subsample_indices, subsample_scale
from .enumeration import config_enumerate
from .evaluate import Evaluator, LatentSiteInfo, MissingValue
from .improper import ImproperUniform
from .indexing import vindex
from .markov import Markov, MarkovChain
from .plate import Plate
from .program import MonadicProgram
from .projected import ProjectedNormal
from .render import render_model, save_graph
from .reparam import JointReparam, LocScaleReparam, ProjectedNormalReparam, Reparam, TransformReparam
from .steps import Deterministic, Factor, Latent, Observed, Param, Step
from .trace import Site, Trace

__all__ = [
    "MonadicProgram", "Plate", "Latent", "Observed", "Deterministic", "Factor", "Param", "Step",
    "ImproperUniform", "Trace", "Site", "LatentSiteInfo", "PreparedBatch", "Evaluator", "MissingValue",
    "subsample_indices", "subsample_scale", "Markov", "MarkovChain", "vindex", "config_enumerate",
    "render_model", "save_graph", "Reparam", "JointReparam", "LocScaleReparam", "TransformReparam",
    "ProjectedNormalReparam", "ProjectedNormal",
]
