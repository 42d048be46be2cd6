"""TS010 at runtime: cross-entropy fed softmax / log_softmax outputs, and the legitimate look-alikes.

Each function marks the line the finding must point at with ``# TS010 here``.
"""

from __future__ import annotations

from typing import Callable, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import devices
from helpers import classification_batches, finding_lines, found_lines, marked_lines, tiny_mlp, watch

CODES = ["TS010"]


def _batch(device: str = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    return classification_batches(device, n=1, classes=3)[0]


class SoftmaxNet(nn.Module):
    """A classifier whose forward ends in softmax: the classic form of the bug."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.fc(x), dim=1)


# -- the bug ---------------------------------------------------------------------------


def train_model_ending_in_softmax(device: str) -> None:
    model = SoftmaxNet().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch(device)
    for _ in range(3):
        optimizer.zero_grad()
        loss = criterion(model(x), y)  # TS010 here
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("device", devices())
def test_a_model_ending_in_softmax_is_reported_at_the_loss_call(device: str) -> None:
    findings = watch(train_model_ending_in_softmax, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(train_model_ending_in_softmax, codes=CODES)
    assert "softmax output" in findings[0].message


def softmax_head_switched_on_late() -> None:
    """The grad_fn is read on the first 8 calls, then on every 8th: a path first taken at call 13 is seen at 16."""
    model = tiny_mlp(outputs=3)
    x, y = _batch()
    for call in range(1, 17):
        logits = model(x)
        if call <= 12:
            loss = F.cross_entropy(logits, y)
        else:
            loss = F.cross_entropy(F.softmax(logits, dim=1), y)  # TS010 here
        loss.backward()


def test_a_code_path_taken_only_after_the_first_calls_is_found_within_a_sampling_period() -> None:
    assert found_lines(softmax_head_switched_on_late, codes=CODES) == \
        marked_lines(softmax_head_switched_on_late, codes=CODES)


def functional_log_softmax(device: str) -> None:
    model = tiny_mlp(device, outputs=3)
    x, y = _batch(device)
    loss = F.cross_entropy(F.log_softmax(model(x), dim=-1), y)  # TS010 here
    loss.backward()


def test_log_softmax_into_functional_cross_entropy_is_reported() -> None:
    findings = watch(functional_log_softmax, "cpu", codes=CODES)
    assert finding_lines(findings) == marked_lines(functional_log_softmax, codes=CODES)
    assert "nll_loss" in findings[0].message


def reshaped_and_cast_probabilities() -> None:
    model = tiny_mlp(outputs=3)
    x, y = _batch()
    probs = model(x).half().softmax(dim=1).float().view(8, 3)
    loss = F.cross_entropy(input=probs, target=y)  # TS010 here
    loss.backward()


def test_views_and_casts_after_the_softmax_are_looked_through() -> None:
    assert (found_lines(reshaped_and_cast_probabilities, codes=CODES)
            == marked_lines(reshaped_and_cast_probabilities, codes=CODES))


def sequence_labelling_with_nn_softmax() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 3, 1), nn.Softmax(dim=1))
    x = torch.randn(2, 4, 5)
    y = torch.randint(0, 3, (2, 5))
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)(model(x), y)  # TS010 here
    loss.backward()


def test_an_nn_softmax_layer_before_a_k_dimensional_loss_is_reported() -> None:
    assert (found_lines(sequence_labelling_with_nn_softmax, codes=CODES)
            == marked_lines(sequence_labelling_with_nn_softmax, codes=CODES))


def evaluate_softmax_model_without_grad() -> None:
    model = SoftmaxNet().eval()
    x, y = _batch()
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y)  # TS010 here
    assert torch.isfinite(loss)


def test_under_no_grad_probabilities_are_recognised_by_their_values() -> None:
    findings = watch(evaluate_softmax_model_without_grad, codes=CODES)
    assert finding_lines(findings) == marked_lines(evaluate_softmax_model_without_grad, codes=CODES)
    assert "probability distribution" in findings[0].message


def evaluate_log_probabilities_in_inference_mode() -> None:
    model = tiny_mlp(outputs=3)
    x, y = _batch()
    with torch.inference_mode():
        F.cross_entropy(model(x).log_softmax(1), y)  # TS010 here


def test_under_inference_mode_log_probabilities_are_recognised_by_their_values() -> None:
    assert found_lines(evaluate_log_probabilities_in_inference_mode, codes=CODES) == \
        marked_lines(evaluate_log_probabilities_in_inference_mode, codes=CODES)


# -- legitimate look-alikes: silent --------------------------------------------------------


def log_softmax_with_nll_loss() -> None:
    model = tiny_mlp(outputs=3)
    x, y = _batch()
    log_probs = F.log_softmax(model(x), dim=1)
    F.nll_loss(log_probs, y).backward()
    nn.NLLLoss()(log_probs.detach(), y)


def softmax_for_metrics_after_the_loss() -> None:
    model = tiny_mlp(outputs=3)
    x, y = _batch()
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=0.1)
    loss.backward()
    probs = logits.softmax(dim=1)
    _ = (probs.argmax(1) == y).float().mean()


def distillation_with_soft_targets() -> None:
    student, teacher = tiny_mlp(outputs=3), tiny_mlp(outputs=3)
    x, _ = _batch()
    with torch.no_grad():
        soft_targets = F.softmax(teacher(x) / 2.0, dim=1)
    F.cross_entropy(student(x) / 2.0, soft_targets).backward()


def evaluation_on_logits_without_grad() -> None:
    model = tiny_mlp(outputs=3).eval()
    x, y = _batch()
    with torch.no_grad():
        for _ in range(10):
            F.cross_entropy(model(x), y)


def hand_made_one_hot_scores_without_grad() -> None:
    y = torch.tensor([0, 1, 2])
    with torch.no_grad():
        F.cross_entropy(F.one_hot(y, 3).float(), y)


def normalised_scores_of_a_leaf_tensor_with_grad_enabled() -> None:
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], requires_grad=True)
    F.cross_entropy(scores, torch.tensor([0, 2])).backward()


def softmax_over_another_dimension_before_a_linear_layer() -> None:
    torch.manual_seed(0)
    attention = torch.randn(8, 5, requires_grad=True).softmax(dim=1)
    head = nn.Linear(5, 3)
    F.cross_entropy(head(attention), torch.randint(0, 3, (8,))).backward()


def scripted_loss_module() -> None:
    loss = torch.jit.script(nn.CrossEntropyLoss())
    x, y = _batch()
    loss(tiny_mlp(outputs=3)(x), y).backward()


@pytest.mark.parametrize("function", [
    log_softmax_with_nll_loss,
    softmax_for_metrics_after_the_loss,
    distillation_with_soft_targets,
    evaluation_on_logits_without_grad,
    hand_made_one_hot_scores_without_grad,
    normalised_scores_of_a_leaf_tensor_with_grad_enabled,
    softmax_over_another_dimension_before_a_linear_layer,
])
def test_legitimate_look_alikes_are_silent(function: Callable) -> None:
    assert found_lines(function, codes=CODES) == set()


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_scripted_loss_module_still_scripts_and_runs_while_watched() -> None:
    assert found_lines(scripted_loss_module, codes=CODES) == set()


def test_the_wrapper_is_transparent_and_removed_after_the_test() -> None:
    original = F.cross_entropy
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    results = []

    def run() -> None:
        assert F.cross_entropy is not original
        assert F.cross_entropy.__wrapped__ is original
        results.append(F.cross_entropy(x, y, reduction="sum"))
        results.append(nn.CrossEntropyLoss(reduction="sum")(x, y))

    assert found_lines(run, codes=CODES) == set()
    assert F.cross_entropy is original
    expected = original(x, y, reduction="sum")
    assert all(torch.equal(result, expected) for result in results)


def test_a_bad_call_still_raises_torchs_own_error() -> None:
    def run() -> None:
        F.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1]))

    with pytest.raises((ValueError, RuntimeError)):
        watch(run, codes=CODES)
