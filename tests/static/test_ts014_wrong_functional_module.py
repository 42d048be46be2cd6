"""TS014 static: torch.functional used for what it lacks is reported at the import; what it has is fine."""

from __future__ import annotations

import pytest

from helpers import expected, found, lint
from trainsafe_lint.rules.ts014_wrong_functional_module import TORCH_FUNCTIONAL

CODES = ["TS014"]


def test_the_member_list_matches_the_installed_torch() -> None:
    torch_functional = pytest.importorskip("torch.functional")
    assert set(torch_functional.__all__) <= TORCH_FUNCTIONAL


@pytest.mark.parametrize("source", [
    # Reported once per import, however many wrong uses.
    "import torch.functional as F  # expect: TS014\n"
    "x = F.relu(F.linear(x, w))\n"
    "y = F.dropout(x, 0.1)\n",
    # Used in a method, through a chain.
    "from torch import functional as F  # expect: TS014\n"
    "class Net:\n"
    "    def forward(self, x):\n"
    "        return F.gelu.__name__\n",
    # A function-level import.
    "def forward(x):\n"
    "    import torch.functional as F  # expect: TS014\n"
    "    return F.silu(x)\n",
    # Several aliases: only the one misused.
    "import torch.functional as TF\n"
    "import torch.functional as F  # expect: TS014\n"
    "a = TF.einsum('ij->i', x)\n"
    "b = F.softmax(x, 1)\n",
])
def test_reported_at_the_import(source: str) -> None:
    assert found(source, CODES) == expected(source)


@pytest.mark.parametrize("source", [
    "import torch.functional as F\nF.unique(x)\nF.cdist(a, b)\nF.atleast_2d(x)\n",
    "import torch.nn.functional as F\nimport torch.functional as TF\nF.relu(TF.norm(x))\n",
    "from torch.functional import split as tsplit\n",
    "import torch\nclass M:\n    functional = None\nM.functional.relu(x)\n",
    # Another library's functional module.
    "from torchvision.transforms import functional as F\nF.resize(img, 32)\n",
    "import torchaudio.functional as F\nF.resample(w, 16000, 8000)\n",
])
def test_silent(source: str) -> None:
    assert lint(source, CODES) == []


def test_the_message_names_the_missing_function() -> None:
    (finding,) = lint("import torch.functional as F\nF.relu(x)\n", CODES)
    assert "relu is not in torch.functional" in finding.message
