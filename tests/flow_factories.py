"""Importable flow factories for AutoNormalizingFlow in tests (checkpoints record them by path)."""

import zuko


def spline_flow(latent_dim):
    """A two-transform zuko neural spline flow."""
    return zuko.flows.NSF(latent_dim, transforms=2, hidden_features=(16, 16)).transform
