"""Hugging Face Trainer callback: a real Trainer on a tiny randomly initialised BERT, no downloads.

Reference: a second callback in the same Trainer takes torch.linalg.vector_norm of every layer's
gradients in on_pre_optimizer_step (after the Trainer's clip) and keeps the pre-clip total norm the
Trainer logs; the pre-clip per-layer norms follow from torch's clip factor max_norm / (total + 1e-6).
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
MAX_GRAD_NORM = 1e-3  # far below the gradients: the Trainer clips every step


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
        self.grad_norms: dict[int, float] = {}  # the Trainer's pre-clip total norm, by global step

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
        if logs and "grad_norm" in logs:
            self.grad_norms[state.global_step] = float(logs["grad_norm"])


def train(
    tmp_path: Path,
    cb: GradguardCallback,
    accumulate: int = 2,
    max_grad_norm: float = MAX_GRAD_NORM,
    logging_steps: int = 1,
) -> tuple[Trainer, Reference]:
    ref = Reference()
    args = TrainingArguments(
        max_grad_norm=max_grad_norm,
        output_dir=str(tmp_path / "out"),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulate,
        logging_steps=logging_steps,
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


def test_per_layer_grad_norms_are_the_pre_clip_ones(trained) -> None:  # type: ignore[no-untyped-def]
    run, ref, _, _ = trained
    _, values = run.metric("grad_norm")  # (steps, layers)
    names = [lay.name for lay in run.layers]
    assert "bert.encoder.layer.1.output.dense" in names and "classifier" in names
    totals = [ref.grad_norms[s + 1] for s in range(MAX_STEPS)]  # logged after global_step += 1
    assert min(totals) > 100 * MAX_GRAD_NORM  # every step was clipped hard
    for s, row in enumerate(ref.norms):
        post_clip = np.array([row.get(n, math.nan) for n in names])
        # clip_grads_with_norm_ multiplies every gradient by max_norm / (total + 1e-6)
        expected = post_clip * (totals[s] + 1e-6) / MAX_GRAD_NORM
        np.testing.assert_allclose(values[s], expected, rtol=1e-4)
    # the recorded total is the Trainer's pre-clip norm, not the clipped max_grad_norm
    np.testing.assert_allclose(run.scalar("grad_norm_total")[1], totals, rtol=1e-5)


def test_without_clipping_the_pre_hook_reads_raw_gradients(tmp_path: Path) -> None:
    cb = GradguardCallback(config="light", diagnose_online=False, show_findings=False)
    trainer, ref = train(tmp_path, cb, accumulate=1, max_grad_norm=0.0)
    assert cb.monitor is not None
    _, values = cb.monitor.run.metric("grad_norm")
    names = [lay.name for lay in cb.monitor.run.layers]
    for s, row in enumerate(ref.norms):
        np.testing.assert_allclose(values[s], [row.get(n, math.nan) for n in names], rtol=1e-6)
    assert "clip_grad_norm_" not in vars(trainer.accelerator)


def test_clip_wrapper_removed_after_training(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, trainer, cb = trained
    assert "clip_grad_norm_" not in vars(trainer.accelerator)
    assert "unscale_gradients" not in vars(trainer.accelerator)
    assert "_pre_step" not in vars(cb.monitor)


def test_logged_loss_and_pre_clip_norm_are_recorded(trained) -> None:  # type: ignore[no-untyped-def]
    run, ref, _, _ = trained
    steps, loss = run.scalar("loss")
    # the Trainer logs after global_step += 1; the Monitor files it under the step just taken
    assert steps.tolist() == [s - 1 for s in sorted(ref.losses)]
    np.testing.assert_allclose(loss, [ref.losses[s] for s in sorted(ref.losses)], rtol=1e-6)
    assert run.scalar("hf_grad_norm")[0].tolist() == steps.tolist()
    assert run.scalar("lr")[0].tolist() == list(range(MAX_STEPS))


def test_loss_of_every_step_without_logging_steps(tmp_path: Path) -> None:
    # regression (issue 12, item 3): the loss was recorded only at logging steps (default every
    # 500), so a short run had no loss for the loss rules; it is now each optimizer step's loss
    every = GradguardCallback(config="light", diagnose_online=False, show_findings=False)
    _, ref = train(tmp_path / "a", every, logging_steps=1)
    rare = GradguardCallback(config="light", diagnose_online=False, show_findings=False)
    trainer, _ = train(tmp_path / "b", rare, logging_steps=500)
    assert rare.monitor is not None and every.monitor is not None
    steps, loss = rare.monitor.run.scalar("loss")
    assert steps.tolist() == list(range(MAX_STEPS))
    # the same seeded run: every step's loss equals what the Trainer logs when it logs each step
    np.testing.assert_allclose(loss, [ref.losses[s + 1] for s in range(MAX_STEPS)], atol=1e-4)
    np.testing.assert_allclose(loss, every.monitor.run.scalar("loss")[1], rtol=1e-6)
    assert "training_step" not in vars(trainer)  # the wrapper is gone after training


def test_monitor_closed_after_training(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, trainer, cb = trained
    assert cb.monitor is not None
    assert not trainer.model._forward_pre_hooks
    assert not cb.monitor.optimizer._optimizer_step_pre_hooks


def test_transformers_example_runs(tmp_path: Path) -> None:
    from examples.transformers_example import main

    run = main(tmp_path / "ex.db", steps=2, output_dir=tmp_path / "out")
    assert run.metric("grad_norm")[0].tolist() == [0, 1]
