"""TS013 static: which classes count as modules, which names as misspelled initialisers,
and which ways of initialising the base are accepted."""

from __future__ import annotations

import pytest

from helpers import expected, found, lint
from trainsafe_lint.rules.ts013_module_init_broken import is_init_misspelling

CODES = ["TS013"]


@pytest.mark.parametrize("name", ["__int__", "_init_", "__init", "init__", "__inti__", "__Init__", "__INIT__",
                                  "__innit__", "__initt__", "__init_", "___init__"])
def test_near_misses_of_init(name: str) -> None:
    assert is_init_misspelling(name)


@pytest.mark.parametrize("name", ["__init__", "init", "_init", "initialize", "__post_init__", "__iter__",
                                  "__new__", "__index__", "__exit__", "reset_parameters", "_init_weights"])
def test_names_that_are_not_misspellings(name: str) -> None:
    assert not is_init_misspelling(name)


@pytest.mark.parametrize("source", [
    # A class nested in a test function, the module imported at the top.
    "import torch.nn as nn\n"
    "def test_model():\n"
    "    class Tiny(nn.Module):\n"
    "        def __init__(self):  # expect: TS013\n"
    "            self.fc = nn.Linear(2, 2)\n"
    "    Tiny()\n",
    # Through two levels of classes of the file, and `from torch.nn import Module`.
    "from torch.nn import Module, Linear\n"
    "class A(Module):\n"
    "    pass\n"
    "class B(A):\n"
    "    pass\n"
    "class C(B):\n"
    "    def _init_(self):  # expect: TS013\n"
    "        self.fc = Linear(2, 2)\n",
    # Annotated and augmented attribute assignments make an initialiser too.
    "import torch\n"
    "class Net(torch.nn.Module):\n"
    "    def __int__(self) -> None:  # expect: TS013\n"
    "        self.layers: torch.nn.ModuleList = torch.nn.ModuleList()\n",
    # A body with a docstring and real statements is not a placeholder.
    "import torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self):  # expect: TS013\n"
    "        '''Build the layers.'''\n"
    "        self.fc = nn.Linear(2, 2)\n",
])
def test_reported(source: str) -> None:
    assert found(source, CODES) == expected(source)


@pytest.mark.parametrize("source", [
    # super().__init__ anywhere in the class (a helper the initialiser calls, a conditional call).
    "import torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self, cfg):\n"
    "        self._setup(cfg)\n"
    "    def _setup(self, cfg):\n"
    "        super().__init__()\n"
    "        self.fc = nn.Linear(cfg, 2)\n",
    "import torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    def __init__(self, *args, **kwargs):\n"
    "        if args:\n"
    "            super().__init__(*args, **kwargs)\n"
    "        else:\n"
    "            super().__init__()\n",
    # A mixin's __init__ called explicitly.
    "import torch.nn as nn\n"
    "class Net(Mixin, nn.Module):\n"
    "    def __init__(self):\n"
    "        Mixin.__init__(self)\n",
    # __init__ bound from elsewhere; a dataclass module (its generated __init__ is not read).
    "import torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    __init__ = make_init()\n",
    "import dataclasses, torch.nn as nn\n"
    "@dataclasses.dataclass(eq=False)\n"
    "class Net(nn.Module):\n"
    "    width: int = 2\n"
    "    def __post_init__(self):\n"
    "        super().__init__()\n",
    # A typo'd method that is called by name somewhere in the file.
    "import torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    def _init_(self):\n"
    "        self.fc = nn.Linear(2, 2)\n"
    "net = Net()\n"
    "net._init_()\n",
    # An abstract initialiser and a NotImplementedError placeholder.
    "import abc, torch.nn as nn\n"
    "class Net(nn.Module):\n"
    "    @abc.abstractmethod\n"
    "    def __init__(self):\n"
    "        self.x = 1\n"
    "class Other(nn.Module):\n"
    "    def __init__(self):\n"
    "        raise NotImplementedError('use a subclass')\n",
    # Bases that are not modules: torch.nn.Parameter, a Dataset, an unknown import.
    "import torch\n"
    "from mylib import Layer\n"
    "class P(torch.nn.Parameter):\n"
    "    def __init__(self, data):\n"
    "        self.extra = 1\n"
    "class L(Layer):\n"
    "    def __init__(self):\n"
    "        self.w = 1\n",
])
def test_silent(source: str) -> None:
    assert found(source, CODES) == set()


def test_the_message_says_which_mistake() -> None:
    (typo,) = lint("import torch.nn as nn\nclass N(nn.Module):\n    def __int__(self):\n        self.a = 1\n", CODES)
    assert "__int__ is not __init__" in typo.message
    (missing,) = lint("import torch.nn as nn\nclass N(nn.Module):\n    def __init__(self):\n        self.a = 1\n",
                      CODES)
    assert "does not call super().__init__()" in missing.message
