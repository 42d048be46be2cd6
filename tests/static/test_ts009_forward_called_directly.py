"""TS009 static: direct forward() calls in realistic code, and the legitimate look-alikes."""

from __future__ import annotations

import pytest

from helpers import expected, found

CODE = ["TS009"]


def test_a_wrapper_module_calling_its_inner_models_forward_is_reported() -> None:
    source = """
import torch
from torch import nn


class Backbone(nn.Module):
    def forward(self, x):
        return x


class Ensemble(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.heads = nn.ModuleList([nn.Linear(4, 2) for _ in range(3)])

    def forward(self, x):
        features = self.backbone.forward(x)  # expect: TS009
        return torch.stack([head.forward(features) for head in self.heads])  # expect: TS009
"""
    assert found(source, CODE) == expected(source)


def test_a_ddp_models_inner_module_forward_is_reported() -> None:
    source = """
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
def evaluate(model, x):
    return model.module.forward(x)  # expect: TS009
"""
    assert found(source, CODE) == expected(source)


@pytest.mark.parametrize("source", [
    # a base-class call through a parent class of this file
    """
import torch
class Base(torch.nn.Module):
    def forward(self, x):
        return x
class Child(Base):
    def forward(self, x):
        return Base.forward(self, x) * 2
""",
    # a non-module helper class with a forward method (the HMM forward algorithm)
    """
import torch
class HMM:
    def forward(self, observations):
        return observations.cumsum(0)
hmm = HMM()
alpha = hmm.forward(torch.randn(5))
""",
    # a local class that is not a module, even with a model-like name
    """
import torch
class ModelRunner:
    def forward(self, x):
        return x
model = ModelRunner()
out = model.forward(1)
""",
    # a forward method passed, not called
    """
import torch
traced = torch.jit.trace(model.forward, example)
hook = model.forward
""",
    # forward_features (timm) is a different method
    """
import torch
feats = model.forward_features(images)
""",
])
def test_legitimate_patterns_are_silent(source: str) -> None:
    assert found(source, CODE) == set()
