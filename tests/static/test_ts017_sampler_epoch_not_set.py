"""TS017 static: focused cases beyond the inline VALID / INVALID examples."""

from __future__ import annotations

from helpers import expected, found

CODES = ["TS017"]


def test_a_set_epoch_anywhere_in_the_file_silences_the_rule() -> None:
    source = """
        from torch.utils.data import DataLoader, DistributedSampler
        def reseed(loader, epoch):
            loader.sampler.set_epoch(epoch)
        def train(dataset, step):
            loader = DataLoader(dataset, sampler=DistributedSampler(dataset))
            for epoch in range(3):
                reseed(loader, epoch)
                for batch in loader:
                    step(batch)
    """
    assert found(source, CODES) == set()


def test_a_loader_built_at_module_level_and_iterated_in_main() -> None:
    source = """
        from torch.utils.data import DataLoader, DistributedSampler
        loader = DataLoader(dataset, sampler=DistributedSampler(dataset, seed=1))
        def main(step):
            for epoch in range(3):
                for batch in loader:  # expect: TS017
                    step(batch)
    """
    assert found(source, CODES) == expected(source)


def test_a_local_name_shadowing_the_module_loader_is_not_it() -> None:
    source = """
        from torch.utils.data import DataLoader, DistributedSampler
        loader = DataLoader(dataset, sampler=DistributedSampler(dataset))
        def main(step, other):
            loader = other
            for epoch in range(3):
                for batch in loader:
                    step(batch)
    """
    assert found(source, CODES) == set()


def test_the_sampler_iterated_directly_and_shuffle_true_spelled_out() -> None:
    source = """
        from torch.utils.data.distributed import DistributedSampler
        def indices(dataset, epochs):
            sampler = DistributedSampler(dataset, 2, 0, True)
            for epoch in range(epochs):
                for index in sampler:  # expect: TS017
                    yield index
    """
    assert found(source, CODES) == expected(source)


def test_samplers_of_another_function_are_not_confused() -> None:
    source = """
        from torch.utils.data import DataLoader, DistributedSampler
        def build(dataset):
            loader = DataLoader(dataset, sampler=DistributedSampler(dataset))
            return loader
        def train(loader, step):
            for epoch in range(3):
                for batch in loader:
                    step(batch)
    """
    assert found(source, CODES) == set()


def test_set_epoch_in_a_docstring_or_comment_does_not_count() -> None:
    source = """
        \"\"\"Train without set_epoch (a bug).\"\"\"
        from torch.utils.data import DataLoader, DistributedSampler
        def train(dataset, step):
            # TODO: call set_epoch
            loader = DataLoader(dataset, sampler=DistributedSampler(dataset))
            for epoch in range(3):
                for batch in loader:  # expect: TS017
                    step(batch)
    """
    assert found(source, CODES) == expected(source)


def test_set_epoch_through_hasattr_counts() -> None:
    source = """
        from torch.utils.data import DataLoader, DistributedSampler
        def train(dataset, step):
            loader = DataLoader(dataset, sampler=DistributedSampler(dataset))
            for epoch in range(3):
                if hasattr(loader.sampler, "set_epoch"):
                    getattr(loader.sampler, "set_epoch")(epoch)
                for batch in loader:
                    step(batch)
    """
    assert found(source, CODES) == set()
