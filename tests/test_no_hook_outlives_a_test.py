"""Every hook and patch the plugin installs is gone after each test, passing or failing."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

PROBE = """
    import builtins
    import pytest
    import torch
    from torch.nn.modules import module as torch_module
    from torch.optim import optimizer as torch_optimizer

    ORIGINAL_SUM = builtins.sum
    # Dunders of nn.Module are never patched: assigning one rewrites a slot of every Module subclass.
    NEVER_PATCHED = [(torch.nn.Module, "__call__"), (torch.nn.Module, "__setattr__")]
    PATCHABLE = [(torch.nn.Module, "_call_impl"), (torch.nn.Module, "train"),
                 (torch.nn.Module, "zero_grad"), (torch.optim.Optimizer, "zero_grad"),
                 (torch.optim.Optimizer, "__init__"), (torch.autograd, "backward"),
                 (torch.nn.functional, "cross_entropy")]
    ORIGINALS = [vars(owner)[name] for owner, name in PATCHABLE + NEVER_PATCHED]


    def patched():
        return [name for (owner, name), original in zip(PATCHABLE + NEVER_PATCHED, ORIGINALS)
                if vars(owner)[name] is not original]
    MODEL = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.1), torch.nn.Linear(3, 1))


    def global_hooks():
        tables = [getattr(torch_module, name) for name in dir(torch_module)
                  if name.startswith("_global_") and name.endswith("hooks")]
        tables += [torch_optimizer._global_optimizer_pre_hooks, torch_optimizer._global_optimizer_post_hooks]
        return sum(len(table) for table in tables)


    def parameter_hooks():
        return sum(len(p._backward_hooks or {}) + len(getattr(p, "_post_accumulate_grad_hooks", None) or {})
                   for p in MODEL.parameters())


    def train(steps, fail):
        opt = torch.optim.SGD(MODEL.parameters(), lr=0.1)
        for step in range(steps):
            opt.zero_grad()
            loss = MODEL(torch.randn(4, 3)).pow(2).mean()
            loss.backward()
            opt.step()
            if fail and step == 1:
                raise RuntimeError("the training crashed")
        with torch.no_grad():
            MODEL.eval()
            for _ in range(2):
                MODEL(torch.randn(4, 3))
            MODEL.train()


    @pytest.fixture(autouse=True)
    def nothing_remains_afterwards():
        # Fixture teardown runs after the call phase, once the plugin has cleaned up.
        yield
        assert global_hooks() == 0
        assert parameter_hooks() == 0
        assert builtins.sum is ORIGINAL_SUM
        assert patched() == []


    def test_1_trains_and_passes():
        train(3, fail=False)
        assert global_hooks() > 0  # the plugin is really watching
        assert set(patched()) == {name for _, name in PATCHABLE}


    def test_2_trains_and_fails():
        train(3, fail=True)


    def test_3_trains_and_passes_again():
        train(2, fail=False)
"""


def test_no_torch_hook_or_patch_remains_after_passing_and_failing_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_inprocess("--trainsafe", "-p", "no:randomly", "-p", "no:xdist")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_2_trains_and_fails*", "*RuntimeError: the training crashed*"])


def test_the_monitor_removes_its_hooks_even_when_a_check_fails_to_finish() -> None:
    from pytest_trainsafe.runtime.hooks import HookSet

    removed = []
    hooks = HookSet()
    hooks.on_remove(lambda: removed.append("first"))
    hooks.on_remove(lambda: (_ for _ in ()).throw(RuntimeError("broken undo")))
    hooks.on_remove(lambda: removed.append("last"))
    with pytest.raises(RuntimeError, match="broken undo"):
        hooks.remove_all()
    assert removed == ["last", "first"]
    assert len(hooks) == 0
