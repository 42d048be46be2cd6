"""The linter never raises, whatever it is fed: generated sources, random text, random bytes.

A file that cannot be checked becomes an entry in ``errors``; a crash in one rule
becomes an error naming the rule. Anything else escaping would stop a whole run.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainsafe_lint.engine import decode_and_lint, lint_source
from trainsafe_lint.rules import all_rules

RULES = list(all_rules().values())

# Fragments of training code, correct and broken, that the generator recombines
# at random indentation: the rules' own subject matter is where a crash would hide.
FRAGMENTS = [
    "import torch", "import torch.nn as nn", "from torch import nn", "import torch.functional as F",
    "import torch.nn.functional as F", "from torch.utils.data import DataLoader, DistributedSampler",
    "class Net(nn.Module):", "def __init__(self):", "def __int__(self):", "super().__init__()",
    "self.fc = nn.Linear(4, 2)", "def forward(self, x):", "return self.fc(x)", "return F.softmax(x, 1)",
    "return nn.Linear(4, 2)(x)", "model = Net()", "opt = torch.optim.SGD(model.parameters(), lr=0.1)",
    "for x, y in loader:", "for epoch in range(3):", "while True:", "with torch.no_grad():", "@torch.no_grad()",
    "def evaluate(model, loader):", "model.eval()", "model.train()", "loss = F.cross_entropy(model(x), y)",
    "loss.backward()", "opt.step()", "opt.zero_grad()", "total += loss", "total = sum(torch.ones(3))",
    "x.to(device)", "out = model.forward(x)", "writer.add_scalar('loss', loss, step)", "sampler.set_epoch(e)",
    "sum = 0", "def sum(x): return 0", "p.grad = None", "if (i + 1) % 4 == 0:", "else:", "try:", "except Exception:",
    "lambda x: x.forward(x)", "yield loss", "async def f():", "await g()", "pass", "break", "continue",
    "x = [y for y in torch.ones(3)]", "global model", "nonlocal total", "del p.grad", "((", "]", "def (:",
    "match x:", "case 1:", "print(f'{loss:.3f}')", "x: torch.Tensor = torch.zeros(3)", "*a, b = c",
]


@st.composite
def sources(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(FRAGMENTS)), max_size=30))
    return "\n".join("    " * depth + text for depth, text in lines) + "\n"


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(sources())
def test_generated_training_code_never_raises(source: str) -> None:
    result = lint_source(source, "generated.py", RULES)
    assert all(error.path == "generated.py" for error in result.errors)
    assert all(finding.line >= 1 for finding in result.findings)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(source: str) -> None:
    lint_source(source, "text.py", RULES)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = decode_and_lint("bytes.py", data, RULES)
    assert all(error.path == "bytes.py" for error in result.errors)


def test_a_huge_file_is_linted() -> None:
    source = "import torch\n" + "x = torch.ones(3).sum()\n" * 20000
    assert lint_source(source, "huge.py", RULES).errors == []


def test_a_rule_that_crashes_is_reported_and_the_others_still_run() -> None:
    import libcst

    from trainsafe_lint.rule import LintRule

    class Crashing(LintRule):
        CODE = "TS009"

        def visit_Call(self, node: libcst.Call) -> None:
            raise RuntimeError("boom")

    result = lint_source("import torch.functional as F\ny = F.relu(x)\n", "t.py", [Crashing, all_rules()["TS014"]])
    assert [f.code for f in result.findings] == ["TS014"]
    (error,) = result.errors
    assert "rule TS009 crashed (RuntimeError: boom)" in error.message and error.line == 2
