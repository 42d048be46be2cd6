"""TS015 static (best effort): focused cases beyond the inline VALID / INVALID examples."""

from __future__ import annotations

from helpers import expected, found, lint

CODES = ["TS015"]


def test_the_message_names_the_layer_and_the_optimizer() -> None:
    source = """
        import torch
        from torch import nn
        def build(model):
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            model.fc = nn.Linear(8, 2).to("cpu")
            return opt
    """
    (finding,) = lint(source, CODES)
    assert finding.line == 6
    assert "`model.fc` is not in `opt`, built before it" in finding.message


def test_an_optimizer_imported_from_its_module_and_a_nested_attribute() -> None:
    source = """
        from torch import nn
        from torch.optim.adam import Adam
        def build(model, loader, step):
            optimizer = Adam(model.parameters())
            if model.needs_head:
                model.backbone.head = nn.Conv2d(64, 10, 1)  # expect: TS015
            for batch in loader:
                step(model, optimizer, batch)
    """
    assert found(source, CODES) == expected(source)


def test_a_layer_added_in_a_loop_after_the_optimizer() -> None:
    source = """
        import torch
        from torch import nn
        def grow(model, stages, train):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            for i in range(stages):
                model.add_module(f"block{i}", nn.Linear(8, 8))  # expect: TS015
                model.register_module("extra", nn.LSTM(8, 8))  # expect: TS015
                train(model, optimizer)
    """
    assert found(source, CODES) == expected(source)


def test_an_optimizer_rebuilt_each_stage_is_fine() -> None:
    source = """
        import torch
        from torch import nn
        def grow(model, stages, train):
            for i in range(stages):
                model.fc = nn.Linear(8, 8)
                optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
                train(model, optimizer)
    """
    assert found(source, CODES) == set()


def test_unknown_layer_classes_are_not_guessed() -> None:
    source = """
        import torch
        import torchvision
        def build(model, Head):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            model.head = Head(512, 10)
            model.backbone = torchvision.models.resnet18()
            model.norm = torch.nn.InstanceNorm2d(3)
            return optimizer
    """
    assert found(source, CODES) == set()


def test_noqa_silences_the_line() -> None:
    source = """
        import torch
        def build(model):
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            model.fc = torch.nn.Linear(8, 2)  # noqa: TS015
            return opt
    """
    assert found(source, CODES) == set()
