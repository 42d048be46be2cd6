"""The runtime monitor inside PyTorch Lightning's real ``Trainer`` (installed, not mocked).

Lightning drives the loop itself: it builds the optimizers, calls ``zero_grad`` /
``backward`` / ``step`` from its own code (inside the optimizer's closure, in
automatic optimization), switches train/eval mode and ``inference_mode`` around
validation, and logs tensors. None of that may look like a pitfall: on correct
use every check stays silent. A pitfall written in the user's LightningModule is
reported with its code at the user's line, never at a line inside Lightning.

Tiny models, synthetic tensors, a few steps, everything Lightning could write to
disk or print turned off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Type

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import devices
from helpers import injected_line, run_pytest_trainsafe, watch
from pytest_trainsafe.finding import Finding

pl = pytest.importorskip("pytorch_lightning")

# Lightning's advice for real runs (more dataloader workers, a logger...) and a deprecation
# inside Lightning: irrelevant here.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore:.*LeafSpec")]

FEATURES, CLASSES = 8, 2


def _loader(samples: int = 16) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (samples,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=4)


def _trainer(tmp_path: Path, device: str = "cpu", **options: Any) -> "pl.Trainer":
    settings: Dict[str, Any] = dict(
        max_epochs=1, limit_train_batches=4, limit_val_batches=2, num_sanity_val_steps=1,
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, default_root_dir=tmp_path,
        enable_checkpointing=False, logger=False, enable_progress_bar=False, enable_model_summary=False,
    )
    settings.update(options)
    return pl.Trainer(**settings)


def _only(findings: List[Finding], code: str) -> None:
    """Exactly one finding: ``code``, at the line of this file marked ``# injected: <code>``."""
    got = [(f.code, f.path, f.line) for f in findings]
    assert got == [(code, __file__, injected_line(__file__, code))], findings


class Classifier(pl.LightningModule):
    """A correct LightningModule: batch-norm and dropout (mode matters), logging, a scheduler."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1)}


class ClosureOptimizer(Classifier):
    """LBFGS: Lightning's closure (zero_grad, training_step, backward) runs inside ``step()``."""

    def configure_optimizers(self) -> Any:
        return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=2)


class HeadBuiltInSetup(Classifier):
    """A head built in ``setup()``, which runs before ``configure_optimizers``: the optimizer sees it."""

    def setup(self, stage: str) -> None:
        self.extra = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        return self.head(features) + self.extra(features)


class GAN(pl.LightningModule):
    """Manual optimization, two optimizers: the generator's loss backpropagates through the discriminator."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, FEATURES))
        self.discriminator = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real, _ = batch
        g_opt, d_opt = self.optimizers()
        fake = self.generator(torch.randn_like(real))
        ones, zeros = torch.ones(len(real), 1, device=real.device), torch.zeros(len(real), 1, device=real.device)
        bce = nn.functional.binary_cross_entropy_with_logits
        d_loss = bce(self.discriminator(real), ones) + bce(self.discriminator(fake.detach()), zeros)
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        self.clip_gradients(d_opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
        d_opt.step()
        g_loss = bce(self.discriminator(fake), ones)
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        self.log_dict({"g_loss": g_loss, "d_loss": d_loss})

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        real, _ = batch
        self.log("val_score", self.discriminator(self.generator(real)).mean())

    def configure_optimizers(self) -> Any:
        return (torch.optim.Adam(self.generator.parameters(), lr=1e-3),
                torch.optim.Adam(self.discriminator.parameters(), lr=1e-3))


class ManualAccumulation(Classifier):
    """Manual optimization with gradient accumulation: two backwards per step, then ``zero_grad``."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        x, y = batch
        self.manual_backward(nn.functional.cross_entropy(self(x), y) / 2)
        if (batch_idx + 1) % 2 == 0:
            optimizer.step()
            optimizer.zero_grad()


# -- correct use: no finding at all ----------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("options", [
    {},
    {"accumulate_grad_batches": 2, "gradient_clip_val": 0.5},
], ids=["plain", "accumulate-and-clip"])
def test_automatic_optimization_fit_then_validate_is_clean(tmp_path: Path, device: str,
                                                           options: Dict[str, Any]) -> None:
    def run() -> None:
        model = Classifier()
        trainer = _trainer(tmp_path, device, **options)
        trainer.fit(model, _loader(), _loader())
        trainer.validate(model, _loader(), verbose=False)

    findings = watch(run)
    assert findings == [], findings


@pytest.mark.parametrize("module", [GAN, ManualAccumulation, ClosureOptimizer, HeadBuiltInSetup],
                         ids=lambda cls: cls.__name__)
def test_other_correct_training_styles_are_clean(tmp_path: Path, module: Type["pl.LightningModule"]) -> None:
    def run() -> None:
        model = module()
        trainer = _trainer(tmp_path)
        trainer.fit(model, _loader(), _loader())
        trainer.validate(model, _loader(), verbose=False)

    findings = watch(run)
    assert findings == [], findings


# -- a pitfall in the user's LightningModule: its code, at the user's line -------------


class LayerInForward(Classifier):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Linear(16, CLASSES)(self.body(x))  # injected: TS002


class SumInTrainingStep(Classifier):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        losses = nn.functional.cross_entropy(self(x), y, reduction="none")
        return sum(losses) / len(y)  # injected: TS005


class ManualWithoutZeroGrad(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        x, y = batch
        self.manual_backward(nn.functional.cross_entropy(self(x), y))
        optimizer.step()  # injected: TS001


class HeadBuiltInTrainingStep(Classifier):
    """A head created lazily at the first batch, after Lightning built the optimizer from ``parameters()``."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.extra is None:
            self.extra = nn.Linear(16, CLASSES)  # injected: TS015
        features = self.body(x)
        return nn.functional.cross_entropy(self.head(features) + self.extra(features), y)


@pytest.mark.parametrize("module, code", [
    (LayerInForward, "TS002"),
    (SumInTrainingStep, "TS005"),
    (ManualWithoutZeroGrad, "TS001"),
    (HeadBuiltInTrainingStep, "TS015"),
], ids=lambda value: value if isinstance(value, str) else value.__name__)
def test_a_pitfall_in_the_lightning_module_is_reported_at_the_users_line(
        tmp_path: Path, module: Type["pl.LightningModule"], code: str) -> None:
    findings = watch(lambda: _trainer(tmp_path).fit(module(), _loader()))
    _only(findings, code)


# -- the real plugin, end to end -------------------------------------------------------

_TRAINING_TESTS = '''
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Buggy(Model):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return sum(nn.functional.cross_entropy(self(x), y, reduction="none"))


def loader():
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 8, generator=generator),
                                    torch.randint(0, 2, (8,), generator=generator)), batch_size=4)


def fit(model, root):
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                         devices=1, default_root_dir=root, enable_checkpointing=False, logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader(), loader())
    trainer.validate(model, loader(), verbose=False)


def test_training(tmp_path):
    fit(Model(), tmp_path)


def test_the_plugin_is_watching(trainsafe, tmp_path):
    fit(Buggy(), tmp_path)
    assert trainsafe.codes == {"TS005"}
'''


def test_pytest_trainsafe_passes_on_a_correct_lightning_test_file(tmp_path: Path) -> None:
    status, output = run_pytest_trainsafe(tmp_path, "test_lightning_training.py", _TRAINING_TESTS)
    assert status == 0, output
    assert "2 passed" in output, output
