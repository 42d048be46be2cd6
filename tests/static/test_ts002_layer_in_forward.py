"""TS002 statically: what counts as "inside forward()", what counts as a layer, and the guards."""

from __future__ import annotations

import pytest

from helpers import expected, found, lint

CODES = ["TS002"]


def _check(source: str) -> None:
    assert found(source, CODES) == expected(source)


def test_the_finding_is_on_the_line_of_the_constructor_call_in_a_multi_line_statement() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                head = nn.Sequential(
                    nn.ReLU(),
                    nn.Linear(  # expect: TS002
                        4,
                        2,
                    ),
                )
                return head(x)
        """)


def test_the_message_names_the_layer_and_the_helper_it_is_built_in() -> None:
    findings = lint("""
        from torch import nn

        class Net(nn.Module):
            def forward(self, x):
                return self._head(x)

            def _head(self, x):
                return nn.Conv2d(3, 8, 3)(x)
        """, CODES)
    assert len(findings) == 1
    assert "nn.Conv2d(...) in _head(), reached from forward()" in findings[0].message


def test_a_user_block_is_named_in_the_message() -> None:
    findings = lint("""
        from torch import nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)

        class Net(nn.Module):
            def forward(self, x):
                return Block()(x)
        """, CODES)
    assert [f.line for f in findings] == [11]
    assert "Block(...) builds layers" in findings[0].message


def test_a_model_class_defined_inside_a_test_function_is_checked() -> None:
    _check("""
        import torch
        from torch import nn

        def test_model():
            class Net(nn.Module):
                def forward(self, x):
                    return nn.Linear(4, 2)(x)  # expect: TS002

            assert Net()(torch.randn(1, 4)).shape == (1, 2)
        """)


def test_a_helper_called_from_forward_and_from_init_is_checked() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.reset()

            def reset(self):
                self.head = nn.Linear(4, 2)  # expect: TS002

            def forward(self, x):
                self.reset()
                return self.head(x)
        """)


def test_a_helper_called_only_from_init_is_not_checked_even_through_other_helpers() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self._build()

            def _build(self):
                self.blocks = nn.ModuleList([self._block(i) for i in range(3)])

            def _block(self, i):
                return nn.Sequential(nn.Conv2d(i + 1, i + 2, 3), nn.BatchNorm2d(i + 2))

            def forward(self, x):
                for block in self.blocks:
                    x = block(x)
                return x
        """)


def test_a_block_inherits_being_a_block_from_a_base_class_of_the_same_file() -> None:
    _check("""
        import torch.nn as nn

        class Base(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.norm = nn.LayerNorm(dim)

        class Derived(Base):
            def extra(self):
                return 1

        class Net(nn.Module):
            def forward(self, x):
                return Derived(4)(x)  # expect: TS002
        """)


def test_a_local_variable_named_like_a_block_class_is_not_the_class() -> None:
    _check("""
        import torch.nn as nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)

        class Net(nn.Module):
            def forward(self, x, Block=None):
                return Block(x) if Block is not None else x

        class Net2(nn.Module):
            def forward(self, x):
                Block = self.make_block
                return Block(x)
        """)


@pytest.mark.parametrize("imports, spelling", [
    ("import torch", "torch.nn.Linear"),
    ("import torch.nn as nn", "nn.Linear"),
    ("from torch import nn", "nn.Linear"),
    ("from torch.nn import Linear", "Linear"),
    ("from torch.nn import Linear as Dense", "Dense"),
    ("from torch.nn.modules.linear import Linear", "Linear"),
    ("import torch.nn.modules as modules", "modules.Linear"),
])
def test_every_import_spelling_of_a_torch_layer_is_resolved(imports: str, spelling: str) -> None:
    _check(f"""
        {imports}
        import torch

        class Net(torch.nn.Module):
            def forward(self, x):
                return {spelling}(4, 2)(x)  # expect: TS002
        """)


@pytest.mark.parametrize("call, flagged", [
    ("nn.InstanceNorm2d(3)", False),
    ("nn.InstanceNorm2d(3, affine=True)", True),
    ("nn.InstanceNorm2d(3, 1e-5, 0.1, True)", True),
    ("nn.InstanceNorm2d(3, affine=self.affine)", False),
    ("nn.LazyInstanceNorm2d()", True),
    ("nn.BatchNorm2d(3)", True),
    ("nn.BatchNorm2d(3, affine=False)", False),
    ("nn.BatchNorm2d(3, 1e-5, 0.1, False)", False),
    ("nn.BatchNorm2d(3, affine=self.affine)", True),
    ("nn.BatchNorm2d(3, **kwargs)", True),
    ("nn.LazyBatchNorm2d(1e-5, 0.1, False)", False),
    ("nn.GroupNorm(1, 3, affine=False)", False),
    ("nn.LayerNorm(3, 1e-5, False)", False),
    ("nn.RMSNorm(3)", True),
    ("nn.Conv2d(3, 3, 1, bias=False)", True),
    ("nn.Embedding(10, 3)", True),
    ("nn.MultiheadAttention(4, 2)", True),
    ("nn.TransformerEncoderLayer(4, 2)", True),
    ("nn.PReLU()", True),
    ("nn.LeakyReLU(0.2)", False),
    ("nn.Upsample(scale_factor=2)", False),
    ("nn.Embedding.from_pretrained(self.table)", False),
    ("nn.utils.parametrizations.weight_norm(self.fc)", False),
    ("nn.functional.linear(x, self.w)", False),
    ("nn.Parameter(x)", True),
    ("nn.Parameter(x, requires_grad=False)", False),
])
def test_which_torch_nn_calls_create_parameters(call: str, flagged: bool) -> None:
    source = f"""
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x, kwargs):
                y = {call}
                return x
        """
    assert bool(found(source, CODES)) == flagged


def test_a_conditional_that_does_not_test_the_module_state_is_not_a_guard() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x, project=True):
                if project:
                    self.proj = nn.Linear(4, 4)  # expect: TS002
                head = nn.Linear(4, 2) if x.dim() == 2 else nn.Identity()  # expect: TS002
                return head(self.proj(x))
        """)


def test_lazy_init_in_an_elif_else_and_while_is_guarded() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                if self.proj is not None:
                    pass
                else:
                    self.proj = nn.Linear(4, 4)
                while len(self.layers) < self.depth:
                    self.layers.append(nn.Linear(4, 4))
                if getattr(self, "head", None) is None:
                    self.head = nn.Linear(4, 2)
                return self.head(self.proj(x))
        """)


def test_a_lazy_helper_with_a_one_line_early_return_is_guarded() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                return self._get(x.shape[-1])(x)

            def _get(self, dim):
                if str(dim) in self.cache: return self.cache[str(dim)]
                self.cache[str(dim)] = layer = nn.Linear(dim, 2)
                return layer
        """)


def test_a_helper_that_returns_early_once_built_is_guarded() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                self._build(x.shape[-1])
                return self.head(x)

            def _build(self, dim):
                if self.built:
                    return
                self.head = nn.Linear(dim, 2)
                self.built = True
        """)


def test_odd_method_shapes_do_not_crash() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            x = nn.Linear(1, 1)

            @staticmethod
            def forward():
                return nn.Linear(1, 1)  # expect: TS002

            def helper(*args):
                return args

            forward2 = lambda self: nn.Linear(1, 1)

        class Other(nn.Module):
            def forward(self, *args, **kwargs):
                return self.helper(*args)(**kwargs)
        """)


def test_noqa_silences_a_line() -> None:
    assert found("""
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                return nn.Linear(4, 2)(x)  # noqa: TS002
        """, CODES) == set()


def test_a_realistic_lightning_style_module_is_clean() -> None:
    _check("""
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class RotaryCache(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.dim = dim
                self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2) / dim)), persistent=False)
                self.cached = None

            def forward(self, x):
                if self.cached is None or self.cached.shape[0] < x.shape[1]:
                    t = torch.arange(x.shape[1], device=x.device)
                    self.cached = torch.outer(t, self.inv_freq)
                return self.cached[: x.shape[1]]

        class LitModel(nn.Module):
            def __init__(self, vocab=100, dim=16):
                super().__init__()
                self.embed = nn.Embedding(vocab, dim)
                self.rotary = RotaryCache(dim)
                self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(dim, 2, batch_first=True) for _ in range(2)])
                self.norm = nn.LayerNorm(dim)
                self.lm_head = nn.Linear(dim, vocab, bias=False)
                self.lm_head.weight = self.embed.weight

            def forward(self, ids):
                h = self.embed(ids)
                h = h + self.rotary(h).sum(-1, keepdim=True)
                for block in self.blocks:
                    h = block(h)
                return self.lm_head(self.norm(h))

            def training_step(self, batch, batch_idx):
                ids, targets = batch
                logits = self(ids)
                return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

            def configure_optimizers(self):
                return torch.optim.AdamW(self.parameters(), lr=1e-3)
        """)


def test_a_file_without_forward_is_not_read() -> None:
    from trainsafe_lint.rules.ts002_layer_in_forward import LayerInForward

    assert not LayerInForward.wants("import torch.nn as nn\nlayer = nn.Linear(4, 2)\n")


def test_a_module_given_fixed_weights_is_a_function_not_a_layer_to_train() -> None:
    _check("""
        import torch
        import torch.nn as nn

        class Filters(nn.Module):
            def forward(self, x):
                a = nn.Conv2d(1, 1, 3, bias=False)
                a.weight = nn.Parameter(self.kernel, requires_grad=False)
                b = nn.Conv2d(1, 1, 3, bias=False)
                with torch.no_grad():
                    b.weight.copy_(self.kernel)
                c = nn.Conv2d(1, 1, 3, bias=False)
                c.weight.requires_grad = False
                d = nn.Conv2d(1, 1, 3, bias=False)
                d.requires_grad_(False)
                e = Teacher()
                e.load_state_dict(self.teacher_state)
                f = nn.Conv2d(1, 1, 3, bias=False).to(x.device).requires_grad_(False)
                return a(x) + b(x) + c(x) + d(x) + e(x) + f(x)

        class Teacher(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 1, 3, bias=False)
        """)


def test_a_module_given_new_random_weights_is_still_a_layer_built_in_forward() -> None:
    _check("""
        import torch.nn as nn

        class Net(nn.Module):
            def forward(self, x):
                a = nn.Linear(4, 4)  # expect: TS002
                nn.init.xavier_uniform_(a.weight)
                b = nn.Linear(4, 4)  # expect: TS002
                b.weight.data.normal_(0, 0.02)
                b.bias.data.fill_(0)
                c = nn.Linear(4, 4).requires_grad_(True)  # expect: TS002
                return c(b(a(x)))
        """)


def test_the_linter_agrees_with_the_runtime_tests_on_every_model() -> None:
    """The runtime tests' models mark the lines the runtime check reports (``# TS002 here``); the linter
    must report exactly those lines too, and nothing on the look-alikes there."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "runtime" / "test_ts002_layer_in_forward.py"
    source = path.read_text(encoding="utf-8")
    marked = {number for number, line in enumerate(source.splitlines(), start=1)
              if line.rstrip().endswith("# TS002 here")}
    assert marked
    assert {f.line for f in lint(source, CODES, path=str(path))} == marked
