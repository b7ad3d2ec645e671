"""The real-workload calibration harness in the test suite (benchmarks/real_workloads.py).

- its fast subset: a GPT, a tanh RNN exploding in its first 5 steps, a CNN with dead ReLUs, a
  20-layer sigmoid MLP; each diagnosed right against the harness's independent oracle (the right
  kinds found, nothing false, online = final, no contradiction);
- the healthy-run corpus (issue 13): MLP/CNN/LSTM/GPT runs of 25, 1,000 and 20,000 steps, SGD and
  Adam, noisy mini-batches, warm-up and cosine schedules: no warning-or-worse finding, online or
  final, and the oracle agrees they are healthy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _harness():  # type: ignore[no-untyped-def]
    name = "gradguard_bench_real_workloads"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "benchmarks" / "real_workloads.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


rw = _harness()


FAILURES = [c for c in rw.CASES if c.name in rw.FAST and "healthy" not in c.name]


@pytest.mark.parametrize("case", FAILURES, ids=lambda c: c.name)
def test_fast_subset_is_diagnosed_right(case) -> None:  # type: ignore[no-untyped-def]
    r = case.run(case.name, case.family, 0, case.steps)
    assert r.labels, "the oracle must see the induced failure (or the case tests nothing)"
    assert r.right, r.problems


def test_fast_subset_has_a_healthy_run_and_it_stays_healthy() -> None:
    (case,) = [c for c in rw.CASES if c.name == "gpt healthy, clip 1"]
    assert case.name in rw.FAST
    r = case.run(case.name, case.family, 1, case.steps)  # a held-out seed
    assert not r.labels and not r.final and not r.online, r.problems


@pytest.mark.parametrize("case", rw.HEALTHY, ids=lambda c: f"{c.name} ({c.steps} steps)")
def test_healthy_corpus_raises_no_alarm(case) -> None:  # type: ignore[no-untyped-def]
    r = case.run(case.name, case.family, 0, case.steps)
    assert not r.labels, f"the oracle calls this run {sorted(r.labels)}: not a healthy case"
    assert not r.final, [str(f) for f in r.findings]
    assert not r.online, r.online_steps


def test_the_oracle_is_independent_and_can_fail() -> None:
    # the oracle labels from the harness's own raw numbers: a diverging loss, a NaN gradient
    t = rw.Trace(loss=[2.0] * 5 + [2.0 + 0.1 * i for i in range(40)])
    assert rw.oracle(t) == {"divergence"}
    t = rw.Trace(loss=[2.0 - 0.02 * i for i in range(40)], grad_nonfinite=[False] * 39 + [True])
    assert rw.oracle(t) == {"nonfinite"}
    assert rw.oracle(rw.Trace(loss=[2.0 * 0.97**i for i in range(40)])) == set()
