"""TS004 at runtime: an evaluation pass with autograd on is reported; gradient work in eval mode is not."""

from __future__ import annotations

import gc
import inspect
import weakref

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from conftest import devices  # noqa: E402
from helpers import classification_batches, watch  # noqa: E402

CODES = ["TS004"]


def _net(device: str = "cpu") -> "nn.Module":
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3)).to(device)


def _batches(n: int = 4, device: str = "cpu", batch: int = 5):
    return classification_batches(device, n, batch=batch, classes=3, seed=1)


def _line_of(function, text: str) -> int:
    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


# -- the bug -------------------------------------------------------------------------------


def evaluate_without_no_grad(model, loader) -> float:
    model.eval()
    correct = 0
    for x, y in loader:
        out = model(x)
        correct += (out.argmax(1) == y).sum().item()
    return correct / sum(len(y) for _, y in loader)


@pytest.mark.parametrize("device", devices())
def test_an_evaluation_loop_without_no_grad_is_reported_at_the_model_call(device: str) -> None:
    findings = watch(evaluate_without_no_grad, _net(device), _batches(device=device), codes=CODES)
    assert [(f.code, f.line) for f in findings] == [("TS004", _line_of(evaluate_without_no_grad, "out = model(x)"))]
    assert "Sequential" in findings[0].message or "Sequential" in findings[0].detail


def test_an_evaluation_helper_called_from_main_without_no_grad_is_reported() -> None:
    def main() -> None:
        model = _net()
        for _ in range(2):  # the epochs of a training script
            evaluate_without_no_grad(model, _batches(2))

    findings = watch(main, codes=CODES)
    assert [f.line for f in findings] == [_line_of(evaluate_without_no_grad, "out = model(x)")]


def test_a_model_with_a_tuple_output_is_reported() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(8, 3)

        def forward(self, x):
            h = self.body(x).relu()
            return self.a(h), self.b(h)

    def evaluate(model) -> None:
        model.eval()
        for x, _ in _batches(3):
            logits_a, logits_b = model(x)

    assert [f.code for f in watch(evaluate, TwoHeads(), codes=CODES)] == ["TS004"]


def test_a_detector_whose_outputs_vary_in_size_is_reported() -> None:
    class Detector(nn.Module):
        """Takes a list of images, returns one dict per image with a varying number of boxes."""

        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, images):
            results = []
            for index, image in enumerate(images):
                boxes = self.head(image[None]).flatten(2)[0].T[: index + 2]
                results.append({"boxes": boxes, "scores": boxes.sum(1)})
            return results

    def evaluate(model) -> None:
        model.eval()
        for _ in range(3):
            detections = model([torch.randn(3, 8, 8), torch.randn(3, 8, 8)])

    assert [f.code for f in watch(evaluate, Detector(), codes=CODES)] == ["TS004"]


def test_a_model_called_with_keyword_arguments_only_is_reported() -> None:
    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, input_ids=None, labels=None):
            logits = self.linear(input_ids)
            return {"logits": logits, "loss": F.cross_entropy(logits, labels)}

    def evaluate(model, loader) -> None:
        model.eval()
        for x, y in loader:
            outputs = model(input_ids=x, labels=y)

    assert [f.code for f in watch(evaluate, Classifier(), _batches(), codes=CODES)] == ["TS004"]


def test_an_autoregressive_sampling_loop_is_reported() -> None:
    def sample() -> None:
        model = nn.GRUCell(4, 4).eval()
        h = torch.zeros(1, 4)
        for _ in range(5):
            h = model(h, h)

    assert [f.code for f in watch(sample, codes=CODES)] == ["TS004"]


# -- autograd off: silent -----------------------------------------------------------------


def test_eval_under_no_grad_is_silent() -> None:
    def evaluate(model, loader) -> None:
        model.eval()
        with torch.no_grad():
            for x, _ in loader:
                model(x)

    assert watch(evaluate, _net(), _batches(), codes=CODES) == []


def test_eval_under_inference_mode_is_silent() -> None:
    def evaluate(model, loader) -> None:
        model.eval()
        with torch.inference_mode():
            for x, _ in loader:
                model(x)

    assert watch(evaluate, _net(), _batches(), codes=CODES) == []


def test_a_no_grad_decorated_eval_function_is_silent() -> None:
    @torch.no_grad()
    def evaluate(model, loader) -> None:
        model.eval()
        for x, _ in loader:
            model(x)

    assert watch(evaluate, _net(), _batches(), codes=CODES) == []


def test_set_grad_enabled_false_is_silent() -> None:
    def evaluate(model, loader) -> None:
        model.eval()
        previous = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        try:
            for x, _ in loader:
                model(x)
        finally:
            torch.set_grad_enabled(previous)

    assert watch(evaluate, _net(), _batches(), codes=CODES) == []


def test_an_eval_helper_called_under_no_grad_is_silent() -> None:
    def main() -> None:
        with torch.no_grad():
            evaluate_without_no_grad(_net(), _batches())

    assert watch(main, codes=CODES) == []


# -- not an evaluation pass: silent --------------------------------------------------------


def test_a_single_eval_forward_in_a_unit_test_is_silent() -> None:
    def check_shape() -> None:
        model = _net().eval()
        out = model(torch.randn(2, 4))
        assert out.shape == (2, 3)

    assert watch(check_shape, codes=CODES) == []


def test_two_forwards_on_different_lines_comparing_outputs_are_silent() -> None:
    def check_deterministic() -> None:
        model = _net().eval()
        x = torch.randn(2, 4)
        first = model(x)
        second = model(x)
        assert torch.equal(first, second)

    assert watch(check_deterministic, codes=CODES) == []


def test_a_loop_over_batch_sizes_in_a_shape_test_is_silent() -> None:
    def check_shapes() -> None:
        model = _net().eval()
        for batch in (2, 3, 4):
            assert model(torch.randn(batch, 4)).shape == (batch, 3)

    assert watch(check_shapes, codes=CODES) == []


def test_a_fresh_model_per_iteration_is_silent() -> None:
    def check_configs() -> None:
        for width in (4, 4, 4):
            model = nn.Linear(width, 2).eval()
            model(torch.randn(3, width))

    assert watch(check_configs, codes=CODES) == []


# -- gradient work through an eval-mode model: silent -------------------------------------


def test_fgsm_adversarial_evaluation_is_silent() -> None:
    def robust_accuracy(model, loader, eps: float = 0.1) -> float:
        model.eval()
        correct = 0
        for x, y in loader:
            x = x.clone().requires_grad_()
            loss = F.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            adversarial = (x + eps * x.grad.sign()).detach()
            correct += (model(adversarial).argmax(1) == y).sum().item()  # graph kept, but gradient work
        return correct

    assert watch(robust_accuracy, _net(), _batches(), codes=CODES) == []


def test_saliency_maps_through_autograd_grad_are_silent() -> None:
    def saliency(model, loader) -> list:
        model.eval()
        maps = []
        for x, _ in loader:
            x = x.clone().requires_grad_()
            (grad,) = torch.autograd.grad(model(x).max(1).values.sum(), x)
            maps.append(grad.abs())
        return maps

    assert watch(saliency, _net(), _batches(), codes=CODES) == []


def test_outputs_backpropagated_only_after_the_loop_are_silent() -> None:
    def accumulate_then_backward(model, loader) -> None:
        model.eval()
        outputs = [model(x) for x, _ in loader]
        torch.stack([o.sum() for o in outputs]).sum().backward()

    assert watch(accumulate_then_backward, _net(), _batches(), codes=CODES) == []


def test_a_loss_on_the_second_output_counts_as_backpropagation() -> None:
    class TwoBranches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 3)

        def forward(self, x):
            return self.a(x), self.b(x)  # independent branches

    def train_in_eval_mode(model, loader) -> None:
        model.eval()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            _, logits = model(x)
            optimizer.zero_grad()
            F.cross_entropy(logits, y).backward()
            optimizer.step()

    assert watch(train_in_eval_mode, TwoBranches(), _batches(), codes=CODES) == []


def test_a_force_field_that_differentiates_its_energy_inside_forward_is_silent() -> None:
    class ForceField(nn.Module):
        """Energy and forces (minus the energy's gradient w.r.t. positions), as interatomic potentials do."""

        def __init__(self) -> None:
            super().__init__()
            self.energy = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

        def forward(self, positions):
            positions = positions.detach().requires_grad_(True)
            energy = self.energy(positions).sum()
            (gradient,) = torch.autograd.grad(energy, positions, create_graph=self.training)
            return energy, -gradient

    def evaluate(model) -> None:
        model.eval()
        for _ in range(4):
            energy, forces = model(torch.randn(5, 3))

    assert watch(evaluate, ForceField(), codes=CODES) == []


def test_a_model_trained_while_in_eval_mode_is_left_to_ts007() -> None:
    def train(model, loader) -> None:
        model.eval()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    assert watch(train, _net(), _batches(), codes=CODES) == []


def test_a_frozen_feature_extractor_is_silent() -> None:
    def extract(loader) -> None:
        backbone = _net().eval()
        backbone.requires_grad_(False)
        head = nn.Linear(3, 3)
        optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
        for x, y in loader:
            features = backbone(x)
            optimizer.zero_grad()
            F.cross_entropy(head(features), y).backward()
            optimizer.step()

    assert watch(extract, _batches(), codes=CODES) == []


def test_frozen_batch_norm_submodules_inside_a_training_root_are_silent() -> None:
    def finetune(model, loader) -> None:
        model.train()
        model[1].eval()  # frozen batch-norm statistics, on purpose
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    assert watch(finetune, _net(), _batches(), codes=CODES) == []


def test_a_teacher_under_no_grad_beside_a_trained_student_is_silent() -> None:
    def distill(loader) -> None:
        teacher, student = _net().eval(), _net().train()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
        for x, _ in loader:
            with torch.no_grad():
                target = teacher(x).softmax(1)
            loss = F.kl_div(student(x).log_softmax(1), target, reduction="batchmean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    assert watch(distill, _batches(), codes=CODES) == []


def test_a_torchvision_model_evaluated_under_no_grad_is_silent() -> None:
    torchvision = pytest.importorskip("torchvision")

    def evaluate() -> None:
        model = torchvision.models.resnet18(num_classes=4).eval()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(2, 3, 32, 32))

    assert watch(evaluate, codes=CODES) == []


def test_jit_trace_after_eval_is_silent_and_still_works() -> None:
    def export() -> None:
        model = _net().eval()
        traced = torch.jit.trace(model, torch.randn(2, 4))
        assert traced(torch.randn(2, 4)).shape == (2, 3)

    assert watch(export, codes=CODES) == []


# -- contract: no hooks left, no memory kept, user results unchanged ------------------------


def test_nothing_keeps_the_graph_of_an_evaluation_output_alive() -> None:
    class Probe(nn.Module):
        """Remembers (weakly) an activation that the output's graph saves for backward."""

        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 8), nn.Linear(8, 3)
            self.saved = None

        def forward(self, x):
            hidden = self.l1(x).tanh()
            self.saved = weakref.ref(hidden)
            return self.l2(hidden)

    collected = []

    def evaluate(model, loader) -> None:
        model.eval()
        for x, _ in loader:
            out = model(x)
            assert model.saved() is not None  # alive while the output (and its graph) is
            del out
            gc.collect()
            collected.append(model.saved() is None)

    assert [f.code for f in watch(evaluate, Probe(), _batches(), codes=CODES)] == ["TS004"]
    assert collected == [True] * 4


def test_hooks_are_removed_and_gradients_are_unchanged() -> None:
    from pytest_trainsafe.runtime.monitor import Monitor

    model, (x, y) = _net().eval(), _batches(1)[0]
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))

    monitor = Monitor(CODES)
    monitor.start()
    try:
        kept = [model(x) for _ in range(2)]
    finally:
        monitor.stop()
    assert len(monitor.hooks) == 0
    assert [f.code for f in monitor.findings] == ["TS004"]
    grads = torch.autograd.grad(F.cross_entropy(kept[0], y), list(model.parameters()))  # after the test
    assert all(torch.equal(a, b) for a, b in zip(expected, grads))
