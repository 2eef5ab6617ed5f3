import math

import lightning as L
import torch
from torch import distributions as dist
from user_guides import DataMeanGuide

from quivers import Latent, MonadicProgram, Observed, Param, Plate
from quivers.datasets import TensorDataModule
from quivers.guides import AutoDeltaGuide, AutoNormalGuide, init_to_value
from quivers.lightning import SVIModule


class Model(MonadicProgram):
    def __init__(self):
        super().__init__()
        data = Plate("data")
        self.declare(
            Latent("m", lambda: dist.Normal(0.0, 10.0)),
            Param("s", torch.tensor(2.0), dist.constraints.positive),
            Observed("y", lambda m, s: dist.Normal(m, s), plate=data),
        )


def test_log_predictive_density_of_a_point_mass_is_the_log_likelihood():
    model = Model()
    guide = AutoDeltaGuide(model, init_loc_fn=init_to_value(values={"m": torch.tensor(0.5)}))
    module = SVIModule(model, guide, num_val_samples=7)
    y = torch.tensor([0.0, 1.0, 3.0])
    want = dist.Normal(0.5, 2.0).log_prob(y).mean()  # every draw is the same point
    assert math.isclose(float(module.log_predictive_density({"y": y})), float(want), rel_tol=1e-6)


def test_fit_logs_metrics_and_trains_model_params_with_configured_optimizer(tmp_path):
    L.seed_everything(0)
    y = 1.0 + 0.3 * torch.randn(200)
    model = Model()
    module = SVIModule(model, AutoNormalGuide(model), optimizer="torch.optim.AdamW", lr=0.05,
                       optimizer_kwargs={"betas": (0.8, 0.99), "weight_decay": 0.0})
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.99)
    assert any(p is model._params["s"] for g in opt.param_groups for p in g["params"])
    dm = TensorDataModule({"y": y}, val_fraction=0.25, steps_per_epoch=1)
    trainer = L.Trainer(max_epochs=300, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, check_val_every_n_epoch=50)
    trainer.fit(module, dm)
    assert model.plates["data"].size == 150  # global size from the data module
    assert {"train/elbo", "train/elbo_per_obs", "val/lpd"} <= set(trainer.callback_metrics)
    assert abs(model.param_value("s").item() - 0.3) < 0.1  # the model's Param was learned


def test_validation_and_prediction_give_the_guide_the_whole_batch():
    model = Model()
    module = SVIModule(model, DataMeanGuide(model, site="m"), num_val_samples=5, num_predict_samples=4)
    y = torch.tensor([2.0, 2.5, 3.0])
    lpd = module.log_predictive_density({"y": y, "data": torch.arange(3)})
    assert math.isfinite(float(lpd))
    out = module.predict_step({"y": y})
    assert out["y"].shape == (4, 3) and out["m"].shape == (4,)


def test_row_indices_of_a_data_module_index_its_own_rows():
    dm = TensorDataModule({"y": torch.arange(10.0)}, val_fraction=0.3, with_indices=True, batch_size=4)
    for batch in dm.predict_dataloader():
        assert int(batch["data"].max()) < dm.num_data  # positions in the training rows
    assert torch.equal(dm.full_batch()["data"], torch.arange(dm.num_data))
