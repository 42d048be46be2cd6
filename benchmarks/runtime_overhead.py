"""Benchmark: the runtime monitor's overhead on the reference training loops (MLP, CNN).

Not a test: it prints figures and ratios. Run it with the test environment's
interpreter:

    .venv/bin/python benchmarks/runtime_overhead.py [--repeat N] [--steps-mlp N] [--steps-cnn N]
    .venv/bin/python benchmarks/runtime_overhead.py --per-check     # also each runtime check alone
    .venv/bin/python benchmarks/runtime_overhead.py --profile mlp   # where the watched loop's extra time goes
    .venv/bin/python benchmarks/runtime_overhead.py --steady --per-check   # single steps, least noisy

Method: one process, one torch thread. Each loop is warmed up, then measured in
``--repeat`` rounds; a round runs every variant once (unwatched, watched by
all runtime checks, and with ``--per-check`` watched by each check alone) in an
order rotated from round to round, so that drift on a shared machine hits all
variants alike. A watched run is what a test pays: ``Monitor(codes)``,
``start()``, the loop's ``run()`` (training steps and the validation passes),
``stop()``. Figures are medians over the rounds (``--min``: the fastest run),
per optimizer step, as CPU time of this process and as wall time; the ratio is
watched / unwatched CPU time, paired by round (the median of the per-round
ratios), which is far less noisy on a busy machine than a ratio of medians.
Targets: <= 1.05 on the CNN loop, <= 1.15 on the tiny MLP loop (whose steps are
so cheap that fixed per-call costs weigh most).

``--steady`` times single training steps of each loop (model, optimizer and
batches built once from the loop's parts, the loss computed as the loop computes
it: no data loading, no validation), many short samples per variant in long
watched runs, and reports their 20th percentile: the step time, the cost of one
more step of a watched run, the figure least disturbed by other processes, and
the one to use to rank the checks. The whole-run figure adds what a test pays
once (patching and unpatching torch, the checks' work on a run's first steps
and first evaluation, about 1 ms per test) and the validation passes; on the
CNN loop, whose time goes to decoding images, it is the noisier of the two.

``--profile LOOP`` runs the watched loop under cProfile and attributes the
extra time: trainsafe's own Python time per file, and the torch/Python calls
made from trainsafe code (a wrapper's call of the function it wraps, such as
``torchutil.py:backward -> backward``, is the user's own work, not overhead).
cProfile inflates Python-level costs, so read its figures as proportions.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import time
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

TARGETS: Dict[str, float] = {"cnn": 1.05, "mlp": 1.15}
PLAIN = "plain"
ALL = "all"


def _timed(function: Callable[[], object]) -> Tuple[float, float]:
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    function()
    return time.process_time() - cpu0, time.perf_counter() - wall0


def watched(run: Callable[[], object], codes: Sequence[str]) -> Callable[[], None]:
    """``run`` as a watched test runs it: a fresh monitor started before and stopped after."""
    from pytest_trainsafe.runtime.monitor import Monitor

    def watched_run() -> None:
        monitor = Monitor(codes)
        monitor.start()
        try:
            run()
        finally:
            monitor.stop()
        if monitor.findings:  # the reference loops are correct: a finding here is a bug to look at
            raise AssertionError([f.format(False) for f in monitor.findings])

    return watched_run


def measure(variants: Dict[str, Callable[[], object]], repeat: int, warmup: int = 2,
            statistic: Callable[[List[float]], float] = statistics.median) -> Dict[str, Tuple[float, float, float]]:
    """Per variant: (CPU s, wall s, ratio to plain) over ``repeat`` rounds of rotated order.

    The seconds are ``statistic`` over the rounds; the ratio is the median over the
    rounds of the variant's CPU time divided by the unwatched run's CPU time *in the
    same round*: paired samples, so that slow phases of a shared machine cancel out.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples: Dict[str, List[Tuple[float, float]]] = {name: [] for name in names}
    for index in range(repeat):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        if index % 2:
            order.reverse()
        for name in order:
            samples[name].append(_timed(variants[name]))
    plain = samples[PLAIN]
    return {name: (statistic([cpu for cpu, _ in pairs]), statistic([wall for _, wall in pairs]),
                   statistics.median(cpu / base for (cpu, _), (base, _) in zip(pairs, plain)))
            for name, pairs in samples.items()}


def loops(steps: Dict[str, int]) -> Dict[str, Callable[[], object]]:
    """The reference loops to measure, each as a call of its ``run()`` on the CPU."""
    from pytest_trainsafe.loops import load

    return {name: (lambda module=load(name), n=n: module.run("cpu", steps=n)) for name, n in steps.items()}


class _Context:
    """A variant of the steady-state benchmark: a monitor (or none) around a batch of timed steps."""

    def __init__(self, codes: Optional[Sequence[str]]) -> None:
        self.codes = codes
        self.monitor = None

    def __enter__(self) -> None:
        if self.codes is not None:
            from pytest_trainsafe.runtime.monitor import Monitor

            self.monitor = Monitor(self.codes)
            self.monitor.start()

    def __exit__(self, *exc: object) -> None:
        if self.monitor is not None:
            self.monitor.stop()


def training_step(name: str) -> Tuple[Callable[[object], None], List[object]]:
    """One optimizer step of reference loop ``name``, built from its parts, and its training batches.

    The steady state: model, optimizer and batches exist already, so a sample is
    exactly one zero_grad / forward / loss / backward / step (and the ``.item()``
    the loop logs), without data loading or validation.
    """
    import torch
    import torch.nn.functional as F

    from pytest_trainsafe.loops import load

    module = load(name)
    torch.manual_seed(0)
    train_loader, _ = module.make_loaders()
    batches = list(train_loader)
    model = module.MLP() if name == "mlp" else module.SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if name == "mlp" else \
        torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss() if name == "mlp" else F.cross_entropy  # as each loop computes it

    def step(batch: object) -> None:
        x, y = batch  # type: ignore[misc]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()

    return step, batches


def steady(name: str, codes: Sequence[str], per_check: bool, repeat: int, passes: int = 10) -> None:
    """Per-step times (20th percentile and median of many single-step samples) watched and unwatched.

    The cost of a step in a long run: in each of ``repeat`` rounds, every variant
    starts its monitor once, warms up on one pass over the batches, then times
    ``passes`` more passes step by step (a test's one-off costs, such as the
    first call of each module class or the checks' work on a run's first steps,
    are the whole-run figure's business). Many short samples, and a low
    percentile, filter out the moments another process took the core: the most
    robust overhead figure on a busy machine. The order of the variants rotates
    from round to round.
    """
    step, batches = training_step(name)
    variants: Dict[str, _Context] = {PLAIN: _Context(None), ALL: _Context(codes)}
    if per_check:
        variants.update({code: _Context([code]) for code in codes})
    samples: Dict[str, List[int]] = {variant: [] for variant in variants}
    names = list(variants)
    for index in range(repeat):
        shift = index % len(names)
        for variant in names[shift:] + names[:shift]:
            with variants[variant]:
                for batch in batches:  # warm-up pass
                    step(batch)
                for _ in range(passes):
                    for batch in batches:
                        start = time.perf_counter_ns()
                        step(batch)
                        samples[variant].append(time.perf_counter_ns() - start)

    def quantile(values: List[int], q: float) -> float:
        ordered = sorted(values)
        return ordered[int(q * (len(ordered) - 1))] / 1e3

    base = quantile(samples[PLAIN], 0.2)
    print(f"{name} steady state: one training step, {len(samples[PLAIN])} samples per variant")
    print(f"{'':<10} {'p20 us':>9} {'median us':>10} {'ratio p20':>10}")
    for variant, values in samples.items():
        label = f"{name} {variant}" if variant in (PLAIN, ALL) else f"  {variant}"
        target = TARGETS.get(name) if variant == ALL else None
        ratio = quantile(values, 0.2) / base
        verdict = "" if target is None else ("  ok" if ratio <= target else f"  OVER {target:.2f}")
        print(f"{label:<10} {quantile(values, 0.2):9.1f} {quantile(values, 0.5):10.1f} {ratio:10.3f}{verdict}",
              flush=True)


HEADER = (f"{'':<10} {'plain':>9} {'watched':>9}   {'plain':>9} {'watched':>9}   {'ratio':>7}\n"
          f"{'':<10} {'CPU ms/step':^19}   {'wall ms/step':^19}   {'paired':>7}")


def _row(label: str, steps: int, plain: Tuple[float, float, float], figures: Tuple[float, float, float],
         target: Optional[float]) -> str:
    ratio = figures[2]
    verdict = "" if target is None else ("  ok" if ratio <= target else f"  OVER {target:.2f}")
    return (f"{label:<10} {1e3 * plain[0] / steps:9.3f} {1e3 * figures[0] / steps:9.3f}   "
            f"{1e3 * plain[1] / steps:9.3f} {1e3 * figures[1] / steps:9.3f}   {ratio:7.3f}{verdict}")


def profile(run: Callable[[], object], steps: int, repeat: int) -> None:
    """Where the watched run's extra time goes, per trainsafe file and per call out of trainsafe code."""
    run()
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [run() for _ in range(repeat)])
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def owner(function: tuple) -> Optional[str]:
        path = function[0].replace(os.sep, "/")
        if "pytest_trainsafe/" not in path or "/loops/" in path:
            return None
        return path.split("pytest_trainsafe/", 1)[1]

    own: Counter = Counter()
    calls: Counter = Counter()
    for function, (_, _, self_time, _, callers) in stats.items():
        if owner(function) is not None:
            own[owner(function)] += self_time
            continue
        callee = function[2] if function[0] == "~" else f"{os.path.basename(function[0])}:{function[2]}"
        for caller, (_, _, _, cumulative) in callers.items():
            if owner(caller) is not None:
                calls[(f"{owner(caller)}:{caller[2]}", callee)] += cumulative
    scale = 1e3 / (repeat * steps)
    print("trainsafe's own Python time, per file (ms per step, under cProfile):")
    for name, seconds in own.most_common(25):
        print(f"  {scale * seconds:7.3f}  {name}")
    print("calls out of trainsafe code (ms per step, under cProfile; a wrapper calling its original is not overhead):")
    for (caller, callee), seconds in calls.most_common(25):
        print(f"  {scale * seconds:7.3f}  {caller} -> {callee}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40,
                        help="measured rounds (default 40: a shared machine's noise needs many pairs)")
    parser.add_argument("--steps-mlp", type=int, default=32, help="optimizer steps per MLP run (default 32)")
    parser.add_argument("--steps-cnn", type=int, default=16, help="optimizer steps per CNN run (default 16)")
    parser.add_argument("--loops", default="mlp,cnn", help="comma-separated loops to measure (default mlp,cnn)")
    parser.add_argument("--per-check", action="store_true", help="also measure each runtime check alone")
    parser.add_argument("--checks", help="comma-separated codes to watch with (default: every runtime check)")
    parser.add_argument("--min", action="store_true",
                        help="report the fastest run of each variant instead of the median")
    parser.add_argument("--profile", metavar="LOOP", help="attribute the watched LOOP's extra time (cProfile)")
    parser.add_argument("--steady", action="store_true",
                        help="time single training steps (no data loading, no validation) instead of whole runs")
    options = parser.parse_args(argv)

    import torch

    from pytest_trainsafe.runtime.monitor import runtime_checks
    from pytest_trainsafe.settings import runtime_codes

    torch.set_num_threads(1)
    all_steps = {"mlp": options.steps_mlp, "cnn": options.steps_cnn}
    names = [options.profile] if options.profile else options.loops.split(",")
    steps = {name: all_steps[name] for name in names}
    runs = loops(steps)
    available = runtime_checks()
    codes = options.checks.split(",") if options.checks else [c for c in runtime_codes() if c in available]

    if options.profile:
        profile(watched(runs[options.profile], codes), steps[options.profile], options.repeat)
        return

    if options.steady:
        for name in names:
            steady(name, codes, options.per_check, options.repeat)
        return

    statistic = min if options.min else statistics.median
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, {options.repeat} rounds "
          f"({'fastest' if options.min else 'median'}), checks: {', '.join(codes)}")
    print(HEADER)
    for name, run in runs.items():
        variants: Dict[str, Callable[[], object]] = {PLAIN: run, ALL: watched(run, codes)}
        if options.per_check:
            variants.update({code: watched(run, [code]) for code in codes})
        figures = measure(variants, options.repeat, statistic=statistic)
        print(_row(f"{name} {ALL}", steps[name], figures[PLAIN], figures[ALL], TARGETS.get(name)), flush=True)
        for code in codes if options.per_check else ():
            print(_row(f"  {code}", steps[name], figures[PLAIN], figures[code], None), flush=True)


if __name__ == "__main__":
    main()
