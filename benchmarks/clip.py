"""Cost per step of each gradguard clipper vs torch's clip_grad_norm_, on fresh gradients.

Workloads (the Foundation's): W1 = 24 x (Linear(512, 512) + tanh), batch 256;
W2 = 6-layer GPT (d_model 384, 6 heads, seq 128, batch 16, vocab 512).
One forward/backward makes the gradients; before every timed call they are restored from a
saved copy and every weight is read once (neither timed), so every clipper sees the same fresh
gradients and, as right after a real backward (which reads every weight), weights in cache.
``--cold-weights`` skips that read (the earlier protocol): then only AGC, the one method
that reads the weights, pays for fetching them from memory. Rounds are
interleaved (all methods once per round, shuffled order); the table shows the median time
and the median over rounds of the per-round ratio to torch's clip_grad_norm_.

    PYTHONPATH=src python benchmarks/clip.py [--rounds 40] [--threads 2] [--cold-weights]

The load average is printed before and after: rerun when it is high (shared machines).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gradguard import clip


def mlp_w1() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """W1: 24-layer tanh MLP, width 512, batch 256."""
    layers: list[nn.Module] = []
    for _ in range(24):
        layers += [nn.Linear(512, 512), nn.Tanh()]
    model = nn.Sequential(*layers)
    x = torch.randn(256, 512)
    return model, lambda m: m(x).pow(2).mean()


class Block(nn.Module):
    """Pre-LN transformer block: causal self-attention + 4x GELU MLP."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, heads, t, d/heads)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Small GPT: token + position embeddings, blocks, final LayerNorm, linear head."""

    def __init__(
        self, vocab: int = 512, d: int = 384, heads: int = 6, layers: int = 6, seq: int = 128
    ):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))  # (b, t, vocab)


def gpt_w2() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    """W2: 6-layer GPT, batch 16, seq 128."""
    model = GPT()
    idx = torch.randint(0, 512, (16, 128))
    y = torch.randint(0, 512, (16, 128))
    return model, lambda m: F.cross_entropy(m(idx).flatten(0, 1), y.flatten())


def methods(max_norm: float) -> dict[str, Callable[[list[torch.Tensor]], object]]:
    return {
        "torch clip_grad_norm_ (default)": lambda ps: nn.utils.clip_grad_norm_(ps, max_norm),
        "torch clip_grad_norm_ (foreach)": lambda ps: nn.utils.clip_grad_norm_(
            ps, max_norm, foreach=True
        ),
        "gg.clip.Norm": clip.Norm(max_norm),
        "gg.clip.Value": clip.Value(1e-3),
        "gg.clip.AutoClip": clip.AutoClip(10),
        "gg.clip.AGC": clip.AGC(0.01),
        "gg.clip.ZClip": clip.ZClip(warmup=5),
    }


def bench(
    name: str, build: Callable[[], tuple[nn.Module, Callable]], rounds: int, warm: bool = True
) -> None:
    torch.manual_seed(0)
    model, loss_fn = build()
    loss_fn(model).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    weights = [p.detach() for p in params]
    saved = [p.grad.detach().clone() for p in params]
    gbytes = sum(g.numel() * g.element_size() for g in saved)
    meths = methods(max_norm=0.1)
    times: dict[str, list[float]] = {k: [] for k in meths}
    order = list(meths)
    for r in range(rounds + 3):
        random.shuffle(order)
        for k in order:
            for p, g in zip(params, saved):
                p.grad.copy_(g)  # fresh gradients, not timed
            if warm:  # the weights, as a backward leaves them (it reads each one), not timed
                torch._foreach_norm(weights)
            t0 = time.perf_counter()
            meths[k](params)
            dt = time.perf_counter() - t0
            if r >= 3:  # first rounds warm up allocator and caches
                times[k].append(dt)
    # ratios taken within each round (same machine state), then the median over rounds:
    # robust to load that drifts between rounds on a shared machine
    base = times["torch clip_grad_norm_ (default)"]
    base_fe = times["torch clip_grad_norm_ (foreach)"]
    how = "weights read before each call" if warm else "cold weights"
    print(f"\n{name}: {len(params)} grad tensors, {gbytes / 2**20:.1f} MiB, {rounds} rounds, {how}")
    print(f"{'method':34s} {'median ms':>10s} {'vs default':>11s} {'vs foreach':>11s}")
    for k in meths:
        med = statistics.median(times[k])
        r = statistics.median(t / b for t, b in zip(times[k], base))
        r_fe = statistics.median(t / b for t, b in zip(times[k], base_fe))
        print(f"{k:34s} {med * 1e3:10.3f} {r:10.2f}x {r_fe:10.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument(
        "--cold-weights",
        action="store_true",
        help="do not read the weights before each call (they may have left the cache)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_load()}")
    bench("W1 tanh MLP 24x512", mlp_w1, args.rounds, warm=not args.cold_weights)
    bench("W2 GPT 6x384", gpt_w2, args.rounds, warm=not args.cold_weights)
    print(f"\nafter: {_load()}")


def _load() -> str:
    """The machine's load average: ratios on a shared machine are only as good as its quiet."""
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not available on this platform
        return "load average unknown"


if __name__ == "__main__":
    main()
