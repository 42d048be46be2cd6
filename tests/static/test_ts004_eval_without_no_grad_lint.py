"""TS004 static: realistic evaluation code, buggy and legitimate, beyond the inline examples."""

from __future__ import annotations

import pytest

from helpers import expected, found

CODE = ["TS004"]

MNIST_SCRIPT = """
import torch
import torch.nn as nn
import torch.nn.functional as F


def train(model, loader, optimizer, epoch):
    model.train()
    for data, target in loader:
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()


def test(model, loader):
    model.eval()
    test_loss, correct = 0, 0
    for data, target in loader:
        output = model(data)  # expect: TS004
        test_loss += F.nll_loss(output, target, reduction="sum").item()
        correct += output.argmax(dim=1).eq(target).sum().item()
    return test_loss / len(loader.dataset), correct


def main():
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters())
    for epoch in range(1, 3):
        train(model, train_loader, optimizer, epoch)
        test(model, test_loader)


if __name__ == "__main__":
    main()
"""


def test_the_classic_mnist_test_function_is_reported_on_its_model_call() -> None:
    assert found(MNIST_SCRIPT, CODE) == expected(MNIST_SCRIPT)


def test_the_same_script_with_no_grad_around_the_test_loop_is_clean() -> None:
    fixed = MNIST_SCRIPT.replace(
        "    for data, target in loader:\n        output = model(data)  # expect: TS004\n"
        "        test_loss += F.nll_loss(output, target, reduction=\"sum\").item()\n"
        "        correct += output.argmax(dim=1).eq(target).sum().item()\n",
        "    with torch.no_grad():\n"
        "        for data, target in loader:\n"
        "            output = model(data)\n"
        "            correct += output.argmax(dim=1).eq(target).sum().item()\n")
    assert "no_grad" in fixed
    assert found(fixed, CODE) == set()


def test_the_helper_called_only_under_no_grad_from_main_is_clean() -> None:
    source = MNIST_SCRIPT.replace("        test(model, test_loader)",
                                  "        with torch.no_grad():\n            test(model, test_loader)")
    assert found(source, CODE) == set()


def test_a_call_chain_under_no_grad_two_levels_up_is_clean() -> None:
    source = """
    import torch

    def evaluate(model, loader):
        model.eval()
        return [model(x) for x, _ in loader]

    def validate_all(model, loaders):
        return {name: evaluate(model, loader) for name, loader in loaders.items()}

    def main():
        with torch.inference_mode():
            validate_all(model, loaders)
    """
    assert found(source, CODE) == set()


def test_a_method_called_through_self_without_no_grad_is_reported() -> None:
    source = """
    import torch

    class Trainer:
        def validate(self):
            self.model.eval()
            total = 0.0
            for batch in self.val_loader:
                logits = self.model(batch["x"])  # expect: TS004
                total += self.loss(logits, batch["y"]).item()
            return total

        def fit(self):
            for epoch in range(self.epochs):
                self.train_epoch()
                self.validate()
    """
    assert found(source, CODE) == expected(source)


def test_a_method_and_an_unrelated_function_of_the_same_name_are_not_confused() -> None:
    # ``evaluate(...)`` (a plain call) is not a call of the method ``Runner.evaluate``.
    source = """
    import torch

    class Runner:
        def evaluate(self, loader):
            self.model.eval()
            for x in loader:
                self.model(x)

        def run(self, loader):
            with torch.no_grad():
                self.evaluate(loader)

    evaluate(something)
    """
    assert found(source, CODE) == set()


@pytest.mark.parametrize("header", [
    "with torch.no_grad():",
    "with torch.inference_mode():",
    "with torch.set_grad_enabled(False):",
    "with torch.set_grad_enabled(mode=False):",
    "with torch.autograd.no_grad():",
    "with no_grad():",
    "with torch.no_grad(), torch.autocast('cpu'):",
    "with grad_context:",
    "with self.eval_context():",
])
def test_every_way_of_turning_autograd_off_around_the_loop_is_recognised(header: str) -> None:
    source = f"""
    import torch
    from torch import no_grad

    def evaluate(model, loader, grad_context):
        model.eval()
        {header}
            for x, y in loader:
                out = model(x)
    """
    assert found(source, CODE) == set()


def test_autocast_alone_does_not_turn_autograd_off() -> None:
    source = """
    import torch

    def evaluate(model, loader):
        model.eval()
        with torch.autocast("cpu"):
            for x, y in loader:
                out = model(x)  # expect: TS004
    """
    assert found(source, CODE) == expected(source)


def test_a_project_context_manager_is_trusted_to_disable_autograd() -> None:
    source = """
    import contextlib
    import torch

    @contextlib.contextmanager
    def evaluating(model):
        model.eval()
        with torch.no_grad():
            yield

    def evaluate(model, loader):
        model.eval()
        with evaluating(model):
            for x, y in loader:
                out = model(x)
    """
    assert found(source, CODE) == set()


def test_pgd_evaluation_with_backward_in_an_inner_loop_is_clean() -> None:
    source = """
    import torch
    import torch.nn.functional as F

    def robust_accuracy(model, loader, eps, steps):
        model.eval()
        correct = 0
        for x, y in loader:
            x_adv = x.clone()
            for _ in range(steps):
                x_adv = x_adv.detach()
                x_adv.requires_grad = True
                F.cross_entropy(model(x_adv), y).backward()
                x_adv = x_adv + eps * x_adv.grad.sign()
            correct += (model(x_adv).argmax(1) == y).sum().item()
        return correct
    """
    assert found(source, CODE) == set()


def test_outputs_backpropagated_after_the_loop_are_not_reported() -> None:
    source = """
    import torch

    def meta_step(model, batches, optimizer):
        model.eval()
        outputs = [model(x) for x in batches]
        loss = torch.stack(outputs).mean()
        loss.backward()
        optimizer.step()
    """
    assert found(source, CODE) == set()


def test_a_frozen_backbone_with_frozen_parameters_is_clean() -> None:
    source = """
    import torch

    def extract_features(backbone, loader):
        for p in backbone.parameters():
            p.requires_grad = False
        backbone.eval()
        return torch.cat([backbone(x) for x, _ in loader])
    """
    assert found(source, CODE) == set()


def test_a_teacher_in_eval_mode_beside_a_trained_student_is_clean() -> None:
    source = """
    import torch

    def distill(teacher, student, loader, optimizer, loss_fn):
        teacher.eval()
        student.train()
        for x, y in loader:
            loss = loss_fn(student(x), teacher(x).detach())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    """
    assert found(source, CODE) == set()


def test_a_training_loop_through_scaler_step_is_clean() -> None:
    source = """
    import torch

    def finetune(model, loader, optimizer, scaler, loss_fn):
        model.eval()  # keep batch-norm statistics frozen
        for x, y in loader:
            with torch.autocast("cuda"):
                loss = loss_fn(model(x), y)
            scaler.scale(loss)
            scaler.step(optimizer)
    """
    assert found(source, CODE) == set()


def test_lightning_hooks_are_left_to_the_framework() -> None:
    source = """
    import torch
    import lightning as L

    class Lit(L.LightningModule):
        def on_validation_epoch_end(self):
            self.ema.eval()
            for x in self.buffer:
                self.ema(x)
    """
    assert found(source, CODE) == set()


def test_one_finding_per_loop_even_with_several_model_calls() -> None:
    source = """
    import torch

    def evaluate(model, loader):
        model.eval()
        for x, y in loader:
            a = model(x)  # expect: TS004
            b = model(x.flip(-1))
    """
    assert found(source, CODE) == expected(source)


def test_test_time_augmentation_over_a_literal_list_inside_a_batch_loop_is_reported() -> None:
    source = """
    import torch

    def predict_tta(model, loader):
        model.eval()
        for x in loader:
            outs = [model(t(x)) for t in (identity, hflip)]  # expect: TS004
    """
    assert found(source, CODE) == expected(source)


def test_a_sampling_loop_in_eval_mode_is_reported() -> None:
    source = """
    import torch

    def sample(model, x, steps):
        model.eval()
        for t in reversed(range(steps)):
            x = x - model(x, t)  # expect: TS004
        return x
    """
    assert found(source, CODE) == expected(source)


def test_noqa_silences_it() -> None:
    source = """
    import torch

    def evaluate(model, loader):
        model.eval()
        for x, y in loader:
            out = model(x)  # noqa: TS004
    """
    assert found(source, CODE) == set()


def test_a_script_that_disables_autograd_globally_is_clean() -> None:
    source = """
    import torch

    def evaluate(model, loader):
        model.eval()
        for x, y in loader:
            out = model(x)

    torch.set_grad_enabled(False)
    evaluate(model, loader)
    """
    assert found(source, CODE) == set()


def test_enable_grad_means_gradients_are_wanted() -> None:
    source = """
    import torch

    @torch.enable_grad()
    def input_gradients(model, loader):
        model.eval()
        return [model(x) for x in loader]
    """
    assert found(source, CODE) == set()
