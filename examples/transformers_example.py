"""Watch a Hugging Face Trainer run (a tiny BERT built from a config: nothing is downloaded).

python examples/transformers_example.py && gradguard show runs/hf.db
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

import gradguard as gg
from gradguard.integrations.transformers import GradguardCallback


def main(
    store: str | Path = "runs/hf.db", steps: int = 30, output_dir: str | Path = "runs/hf-out"
) -> gg.Run:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model = BertForSequenceClassification(config)
    ids = torch.randint(0, 100, (64, 16))
    labels = (ids[:, 0] > 50).long()  # learnable: the first token decides the class
    data = [{"input_ids": i, "labels": y} for i, y in zip(ids, labels)]
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,  # one gradguard record per optimizer step
        logging_steps=5,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    callback = GradguardCallback(store=store, name="hf-example", detail_every=10)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    return gg.load(store, name="hf-example")


if __name__ == "__main__":
    main(*sys.argv[1:2])
