"""TensorBoard sink: event files read back with tensorboard's EventAccumulator against the run in the store."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import gradguard as gg
from gradguard.record.batch import Batch
from gradguard.sinks.tensorboard import TensorBoardSink, layer_tag

STEPS = 5


def read_events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def train(tmp_path: Path, sinks: list, steps: int = STEPS) -> gg.Run:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gg.watch(
        model,
        opt,
        store=tmp_path / "run.db",
        name="tb",
        config="full",
        flush_every=2,  # several flushes, so the sink is fed more than once
        sinks=sinks,
        diagnose_online=False,
    ) as mon:
        for s in range(steps):
            x = torch.randn(16, 6)
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
            if s == 1:
                mon.event("note", "learning rate looks fine", layer="2")
            if s == 3:
                mon.event("finding:exploding_gradients", "CRITICAL exploding gradients in 4")
    return gg.load(tmp_path / "run.db", name="tb")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[gg.Run, EventAccumulator]:
    tmp = tmp_path_factory.mktemp("tb")
    run = train(tmp, [TensorBoardSink(tmp / "tb", histograms_every=2)])
    return run, read_events(tmp / "tb")


def test_per_layer_metrics_equal_the_store(written: tuple[gg.Run, EventAccumulator]) -> None:
    run, acc = written
    tags = set(acc.Tags()["scalars"])
    checked = 0
    for metric in ("grad_norm", "grad_rms", "grad_max", "weight_norm", "update_ratio", "act_std"):
        steps, values = run.metric(metric)  # (S,), (S, L)
        assert steps.tolist() == list(range(STEPS))
        for lay in run.layers:
            tag = layer_tag(metric, lay.index, lay.name)
            assert tag in tags, tag
            events = acc.Scalars(tag)
            assert [e.step for e in events] == steps.tolist()
            # simple_value is float32
            np.testing.assert_allclose([e.value for e in events], values[:, lay.index], rtol=1e-6)
            checked += 1
    assert checked == 6 * 3


def test_scalars_events_findings_histograms_and_layout(
    written: tuple[gg.Run, EventAccumulator],
) -> None:
    run, acc = written
    steps, loss = run.scalar("loss")
    events = acc.Scalars("gradguard/loss")
    assert [e.step for e in events] == steps.tolist()
    np.testing.assert_allclose([e.value for e in events], loss, rtol=1e-6)
    assert "gradguard/grad_norm_total" in acc.Tags()["scalars"]
    tensors = set(acc.Tags()["tensors"])
    assert "events/text_summary" in tensors
    text = acc.Tensors("events/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "note [2]: learning rate looks fine" in text
    found = acc.Tensors("findings/text_summary")
    assert [f.step for f in found] == [3]
    assert "CRITICAL exploding gradients in 4" in found[0].tensor_proto.string_val[0].decode()
    assert "custom_scalars__config__" in tensors  # the one-chart-per-metric layout
    hist = acc.Tags()["histograms"]
    assert "weights/00_0" in hist and "grads/02_4" in hist
    # flushes end at steps 1, 3 and 4 (close); each lands in a new 2-step bucket: 1//2, 3//2, 4//2
    assert [h.step for h in acc.Histograms("weights/00_0")] == [1, 3, 4]


class Broken:
    def __init__(self) -> None:
        self.writes = 0
        self.closed = False

    def write(self, batch: object, layers: object) -> None:
        self.writes += 1
        raise OSError("disk full")

    def close(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.closed = False

    def write(self, batch: Batch, layers: list) -> None:
        if "grad_norm" in batch.metrics:
            self.steps.extend(batch.metrics["grad_norm"][0].tolist())

    def close(self) -> None:
        self.closed = True


def test_a_failing_sink_is_reported_once_and_dropped(tmp_path: Path) -> None:
    broken, good = Broken(), Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(tmp_path, [broken, good])
    reports = [w for w in caught if "sink 0 (Broken) failed" in str(w.message)]
    assert len(reports) == 1 and "disk full" in str(reports[0].message)
    assert broken.writes == 1  # disabled after the first failure
    assert good.steps == list(range(STEPS)) and good.closed  # the other sink and training went on
    assert run.metric("grad_norm")[0].tolist() == list(range(STEPS))


def test_bad_histograms_every_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(gg.GradguardError, match="histograms_every"):
        TensorBoardSink(tmp_path, histograms_every=0)


def test_non_finite_values_are_not_points(tmp_path: Path) -> None:
    from gradguard.record.batch import Layer

    sink = TensorBoardSink(tmp_path)
    layers = [Layer(0, "a", "Linear", 3, True), Layer(1, "b", "Linear", 3, True)]
    sink.write(
        Batch(
            metrics={"grad_norm": (np.array([0, 1]), np.array([[1.0, math.nan], [math.inf, 2.0]]))}
        ),
        layers,
    )
    sink.close()
    acc = read_events(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("grad_norm/00_a")] == [(0, 1.0)]
    assert [(e.step, e.value) for e in acc.Scalars("grad_norm/01_b")] == [(1, 2.0)]


def test_tensorboard_example_runs(tmp_path: Path) -> None:
    from examples.tensorboard_example import main

    log_dir = main(tmp_path / "tb", steps=4)
    acc = read_events(log_dir)
    assert len(acc.Scalars("grad_norm/00_0")) == 4


def layout_charts(acc: EventAccumulator) -> list[str]:
    """The chart titles of the latest custom-scalars layout (the one TensorBoard shows)."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    events = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(events[-1].tensor_proto.string_val[0])
    return [chart.title for cat in layout.category for chart in cat.chart]


def test_layout_gets_a_chart_for_metrics_that_first_appear_later(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    # details (activations, update ratio) at step 3 only: the first flush (steps 0-1) has none
    detail = gg.every(10, start=3)
    mon = gg.watch(
        model,
        opt,
        config="full",
        detail_every=detail,
        flush_every=2,
        sinks=[TensorBoardSink(tmp_path / "tb")],
        diagnose_online=False,
    )
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 6)).square().mean().backward()
        opt.step()
    mon.close()
    acc = read_events(tmp_path / "tb")
    metrics = sorted(mon.run.metric_names)
    assert "act_std" in metrics and "update_ratio" in metrics
    assert mon.run.metric("act_std")[0].tolist() == [3]
    assert sorted(layout_charts(acc)) == metrics
    # the first layout (steps 0-1) had no activation charts; it was written again later
    assert len(acc.Tensors("custom_scalars__config__")) >= 2


def test_layout_rewritten_only_for_new_metrics(tmp_path: Path) -> None:
    from gradguard.record.batch import Layer

    sink = TensorBoardSink(tmp_path)
    layers = [Layer(0, "a", "Linear", 3, True)]
    one = np.array([[1.0]])
    sink.write(Batch(metrics={"grad_norm": (np.array([0]), one)}), layers)
    sink.write(Batch(metrics={"grad_norm": (np.array([1]), one)}), layers)
    sink.write(
        Batch(metrics={"act_mean": (np.array([2]), one), "grad_norm": (np.array([2]), one)}), layers
    )
    sink.close()
    acc = read_events(tmp_path)
    assert [e.step for e in acc.Tensors("custom_scalars__config__")] == [0, 2]
    assert sorted(layout_charts(acc)) == ["act_mean", "grad_norm"]
