"""Hugging Face Trainer callback: a real Trainer on a tiny randomly initialised BERT, no downloads.

Reference: a second callback in the same Trainer takes torch.linalg.vector_norm of every layer's
gradients in on_pre_optimizer_step, right before the optimizer step the Monitor watches.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import gradguard as gg
from gradguard.integrations.transformers import GradguardCallback

MAX_STEPS = 3


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def dataset(n: int = 16) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (n, 12), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    return [
        {
            "input_ids": ids[i],
            "attention_mask": torch.ones(12, dtype=torch.long),
            "labels": labels[i],
        }
        for i in range(n)
    ]


class Reference(TrainerCallback):
    """Per-layer gradient norms right before each optimizer step, and every logged loss."""

    def __init__(self) -> None:
        self.norms: list[dict[str, float]] = []
        self.losses: dict[int, float] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        row = {}
        for name, module in model.named_modules():
            grads = [
                p.grad.flatten() for p in module.parameters(recurse=False) if p.grad is not None
            ]
            if grads:
                row[name or "(root)"] = torch.linalg.vector_norm(torch.cat(grads).double()).item()
        self.norms.append(row)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if logs and "loss" in logs:
            self.losses[state.global_step] = logs["loss"]


def train(tmp_path: Path, cb: GradguardCallback, accumulate: int = 2) -> tuple[Trainer, Reference]:
    ref = Reference()
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulate,
        logging_steps=1,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=tiny_bert(), args=args, train_dataset=dataset(), callbacks=[cb, ref])
    trainer.train()
    return trainer, ref


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[gg.Run, Reference, Trainer, GradguardCallback]:
    tmp = tmp_path_factory.mktemp("hf")
    cb = GradguardCallback(store=tmp / "hf.db", name="hf", config="full", diagnose_online=False)
    trainer, ref = train(tmp, cb)
    return gg.load(tmp / "hf.db", name="hf"), ref, trainer, cb


def test_one_record_per_optimizer_step(trained) -> None:  # type: ignore[no-untyped-def]
    run, ref, trainer, _ = trained
    steps, _ = run.metric("grad_norm")
    assert trainer.state.global_step == MAX_STEPS
    assert steps.tolist() == list(range(MAX_STEPS)) and len(ref.norms) == MAX_STEPS
    assert run.config["gradient_accumulation_steps"] == 2


def test_per_layer_grad_norms_equal_vector_norm_before_the_step(trained) -> None:  # type: ignore[no-untyped-def]
    run, ref, _, _ = trained
    _, values = run.metric("grad_norm")  # (steps, layers)
    names = [lay.name for lay in run.layers]
    assert "bert.encoder.layer.1.output.dense" in names and "classifier" in names
    for s, row in enumerate(ref.norms):
        expected = np.array([row.get(n, math.nan) for n in names])
        np.testing.assert_allclose(values[s], expected, rtol=1e-6)
    # clipped to max_grad_norm=1.0 by the Trainer before the Monitor reads them
    assert np.all(run.scalar("grad_norm_total")[1] <= 1.0 + 1e-6)


def test_logged_loss_and_pre_clip_norm_are_recorded(trained) -> None:  # type: ignore[no-untyped-def]
    run, ref, _, _ = trained
    steps, loss = run.scalar("loss")
    # the Trainer logs after global_step += 1; the Monitor files it under the step just taken
    assert steps.tolist() == [s - 1 for s in sorted(ref.losses)]
    np.testing.assert_allclose(loss, [ref.losses[s] for s in sorted(ref.losses)], rtol=1e-6)
    assert run.scalar("hf_grad_norm")[0].tolist() == steps.tolist()
    assert run.scalar("lr")[0].tolist() == list(range(MAX_STEPS))


def test_monitor_closed_after_training(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, trainer, cb = trained
    assert cb.monitor is not None
    assert not trainer.model._forward_pre_hooks
    assert not cb.monitor.optimizer._optimizer_step_pre_hooks


def test_transformers_example_runs(tmp_path: Path) -> None:
    from examples.transformers_example import main

    run = main(tmp_path / "ex.db", steps=2, output_dir=tmp_path / "out")
    assert run.metric("grad_norm")[0].tolist() == [0, 1]
