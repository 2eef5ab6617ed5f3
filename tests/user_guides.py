"""A user's own Guide subclass, importable by class_path (used by the CLI tests)."""

import torch
from torch import distributions as dist
from torch import nn

from quivers.guides import Guide


class ScalarNormalGuide(Guide):
    """Independent Normal per latent site of eight schools (real or positive via exp)."""

    def __init__(self, model, init_log_scale: float = -1.0):
        super().__init__()
        self.names = ["mu", "tau", "eta"]
        self.loc = nn.ParameterDict({"mu": nn.Parameter(torch.zeros(1)), "tau": nn.Parameter(torch.zeros(1)),
                                     "eta": nn.Parameter(torch.zeros(8))})
        self.log_scale = nn.ParameterDict({k: nn.Parameter(torch.full_like(v, init_log_scale))
                                           for k, v in self.loc.items()})

    @property
    def latent_names(self):
        return self.names

    def _q(self, k):
        return dist.Normal(self.loc[k], self.log_scale[k].exp())

    def rsample(self, batch=None, sample_shape=()):
        ss = torch.Size(sample_shape)
        out = {k: self._q(k).rsample(ss) for k in self.names}
        out["tau"] = out["tau"].exp()
        return out

    def log_prob(self, batch, sites):
        lt = sites["tau"].log()
        return (self._q("mu").log_prob(sites["mu"]).sum(-1) + self._q("eta").log_prob(sites["eta"]).sum(-1)
                + (self._q("tau").log_prob(lt) - lt).sum(-1))


class DataMeanGuide(Guide):
    """``q(site) = N(mean(batch[field]) + shift, scale)``: a guide of one global site that
    reads the observed values, as an encoder of the data does."""

    def __init__(self, model, site: str = "mu", field: str = "y", scale: float = 0.1):
        super().__init__(model)
        self.site, self.field, self.scale = site, field, scale
        self.shift = nn.Parameter(torch.zeros(()))

    @property
    def latent_names(self):
        return [self.site]

    def _q(self, batch):
        return dist.Normal(batch[self.field].mean() + self.shift, self.scale)

    def rsample(self, batch=None, sample_shape=()):
        return {self.site: self._q(batch).rsample(torch.Size(sample_shape))}

    def log_prob(self, batch, sites):
        return self._q(batch).log_prob(sites[self.site])
