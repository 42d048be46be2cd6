"""TS005 statically: which ``sum`` is the builtin, and what counts as a tensor, beyond the inline examples."""

from __future__ import annotations

import pytest

from helpers import expected, found, lint

CODES = ["TS005"]


def _check(source: str) -> None:
    assert found(source, CODES) == expected(source)


def test_reported_on_the_sum_call_itself() -> None:
    source = """
        import torch
        scores = torch.rand(8)
        mean = sum(scores) / len(scores)  # expect: TS005
    """
    _check(source)
    (finding,) = lint(source, CODES)
    assert (finding.line, finding.col) == (4, 8)


@pytest.mark.parametrize("shadow", [
    "def sum(xs):\n    return 0\n",
    "sum = lambda xs: 0\n",
    "from torch import sum\n",
    "from numpy import sum\n",
    "import builtins as sum\n",
])
def test_a_sum_that_is_not_the_builtin_is_never_reported(shadow: str) -> None:
    source = "import torch\n" + shadow + "t = torch.randn(3)\nprint(sum(t))\n"
    assert found(source, CODES) == set()


def test_parameter_and_local_named_sum_are_not_the_builtin() -> None:
    source = """
        import torch
        def f(t: torch.Tensor, sum=None):
            return sum(t)
        def g(t: torch.Tensor):
            sum = torch.sum
            return sum(t)
        def h(t: torch.Tensor):
            return sum(t)  # expect: TS005
    """
    _check(source)


def test_every_binding_of_a_name_must_be_a_tensor() -> None:
    source = """
        import torch
        def unpacked(pair):
            a, b = torch.randn(2), torch.randn(2)
            return sum(a)
        def walrus(xs):
            t = torch.randn(3)
            if (t := xs):
                pass
            return sum(t)
        def reimported():
            t = torch.randn(3)
            from mylib import t
            return sum(t)
        def with_target(ctx):
            t = torch.randn(3)
            with ctx as t:
                return sum(t)
        def except_target():
            t = torch.randn(3)
            try:
                pass
            except ValueError as t:
                pass
            return sum(t)
        def in_loop(batches):
            t = torch.zeros(3)
            for t in batches:
                pass
            return sum(t)
        def annotated_but_not_tensor(t: list):
            return sum(t)
        def augmented():
            t = torch.zeros(3)
            t += 1
            return sum(t)  # an augmented assignment hides the value: not judged
        def reassigned():
            t = [1.0, 2.0]
            t = torch.tensor(t)
            return sum(t)  # expect: TS005
        def conditional(flag):
            t = torch.zeros(3)
            if flag:
                t = [0.0]
            return sum(t)
    """
    _check(source)


def test_generators_and_list_comprehensions_over_tensors() -> None:
    source = """
        import torch
        import torch.nn.functional as F
        def f(model, x: torch.Tensor, losses):
            emb = F.normalize(model.embed.weight, dim=1)
            a = sum(row @ row for row in emb)  # expect: TS005
            b = sum([v.item() for v in x.view(-1)])  # expect: TS005
            c = sum(1 for v in x if v > 0)  # expect: TS005
            d = sum(l for l in losses)
            e = sum(v for v in range(3) for w in x)
            f_ = sum(p.grad.abs().sum() for p in model.parameters())
            return a, b, c, d, e, f_
    """
    _check(source)


def test_method_chains_keep_or_lose_tensorness() -> None:
    source = """
        import torch
        t = torch.linspace(0, 1, 5)
        a = sum(t.cpu().detach().float())  # expect: TS005
        b = sum(t.cpu().tolist())
        c = sum(t.softmax(0)[1:])  # expect: TS005
        d = sum(t.argmax().item() for _ in range(2))
        e = sum(t.unique())
        g = sum(torch.nn.Parameter(t))  # expect: TS005
        h = sum(torch.linalg.norm(t, dim=0, keepdim=True))  # expect: TS005
        i = sum(torch.linalg.eigh(t))
        j = sum(torch.nonzero(t, as_tuple=True))
    """
    _check(source)


def test_module_level_and_nested_scopes() -> None:
    source = """
        import torch
        weights = torch.ones(4)
        print(sum(weights))  # expect: TS005
        def read_global():
            return sum(weights)  # expect: TS005
        def outer():
            inner_t = torch.ones(4)
            def inner():
                return sum(inner_t)
            return inner, sum(inner_t)  # expect: TS005
        class Stats:
            values = torch.ones(2)
            total = sum(values)
        key = lambda t=torch.ones(2): sum(t)
    """
    _check(source)


def test_accuracy_counted_with_the_builtin() -> None:
    source = """
        import torch
        def evaluate(model, loader):
            correct = 0
            for x, y in loader:
                outputs = model(x)
                correct += sum(torch.max(outputs, dim=1)[1] == y).item()  # expect: TS005
                _, predicted = torch.max(outputs, 1)
                correct += sum(predicted == y)  # expect: TS005
                values, _ = torch.sort(outputs)
                correct += sum(values[0])  # expect: TS005
                best = torch.max(outputs)
                correct += sum(y == best)  # expect: TS005
                correct += sum(outputs == y)
                correct += sum(x in y for x in [1, 2])
            return correct
    """
    _check(source)


def test_weight_of_a_configuration_is_not_a_tensor() -> None:
    source = """
        import torch
        class Loss:
            def __init__(self, weight):
                self.weight = weight
            def norm(self, args, cfg, model):
                a = sum(self.weight)
                b = sum(args.weight) + sum(cfg.bias)
                c = sum(model.head.weight)  # expect: TS005
                d = sum(self.head.bias)  # expect: TS005
                return a, b, c, d
    """
    _check(source)


def test_common_training_code_is_silent() -> None:
    assert found("""
        import torch
        import torch.nn.functional as F

        def train(model, loader, optimizer, weights, device):
            total_params = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            losses, accs, sizes = [], [], []
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                outputs = model(x)
                parts = [F.cross_entropy(o, y) for o in outputs]
                loss = sum(parts) / len(parts)
                loss = sum(F.mse_loss(o, t) for o, t in zip(outputs, y))
                l2 = sum((p ** 2).sum() for p in model.parameters())
                weighted = sum(w * l for w, l in zip(weights, parts))
                optimizer.zero_grad()
                (loss + 1e-4 * l2 + weighted).backward()
                optimizer.step()
                losses.append(loss.item())
                accs.append((outputs.argmax(1) == y).float().mean().item())
                sizes.append(x.size(0))
            grad_norm = sum(p.grad.norm() ** 2 for p in model.parameters() if p.grad is not None) ** 0.5
            return sum(losses) / len(losses), sum(accs) / len(accs), sum(sizes), grad_norm, total_params, trainable
    """, ["TS005"]) == set()


def test_attributes_of_self_follow_their_assignments() -> None:
    _check("""
        import torch
        from torch import nn
        class Head(nn.Module):
            def __init__(self, weight, n):
                super().__init__()
                self.weight = weight
                self.scales = nn.Parameter(torch.ones(n))
                self.table = torch.zeros(n, 2)
            def penalty(self):
                a = sum(self.weight)
                b = sum(self.scales)  # expect: TS005
                c = sum(row.norm() for row in self.table)  # expect: TS005
                return a, b, c
    """)


def test_arguments_of_a_module_level_function_at_every_call_site() -> None:
    _check("""
        import torch
        def total(values):
            return sum(values)  # expect: TS005
        def mean(values):
            return sum(values) / len(values)
        total(torch.ones(3))
        total(torch.zeros(2, 2))
        mean(torch.ones(3))
        mean([1.0, 2.0])
    """)
