"""A training process the store rows kill or starve: ``python -m tests.faults.child MODE STORE STEPS``.

``MODE`` ``lockstep`` waits for a line on stdin before each step.

Prints one JSON line per step (``{"step": s, "loss": l}``) and, after each ``mon.flush()`` (which
returns once the batch is committed), ``{"committed": s}``. ``MODE`` ``fsize:N`` sets
RLIMIT_FSIZE to N bytes first (writes past it fail with EFBIG; SIGXFSZ is ignored so that the
process is not killed by it) and prints, at the end, the warnings and what ``mon.run`` holds.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import warnings

import torch
import torch.nn.functional as F

import gradguard as gg
from gradguard.metrics import GRAD_NORM
from tests.faults.harness import mlp3

FLUSH_EVERY = 5


def batch(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(s)
    return torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)


def losses(steps: int) -> list[float]:
    """The same training without gradguard."""
    torch.manual_seed(0)
    model = mlp3()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    out = []
    for s in range(steps):
        x, y = batch(s)
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        out.append(float(loss))
    return out


def main(mode: str, store: str, steps: int) -> None:
    torch.set_num_threads(1)
    if mode.startswith("fsize:"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(mode.split(":")[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    torch.manual_seed(0)
    model = mlp3()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # automatic flushes (every 3 steps, committed by the writer thread while training goes on)
        # and waited ones (mon.flush() every 5): a kill can land in either
        mon = gg.watch(model, opt, store=store, detail_every=1, flush_every=3)
        for s in range(steps):
            if mode == "lockstep":  # one line on stdin per step: the parent picks the kill point
                sys.stdin.readline()
            x, y = batch(s)
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            mon.log(loss=loss)
            print(json.dumps({"step": s, "loss": float(loss)}), flush=True)
            if s % FLUSH_EVERY == FLUSH_EVERY - 1:
                mon.flush()  # returns once committed
                print(json.dumps({"committed": s}), flush=True)
        mon.close()
    messages = [str(w.message) for w in caught if "gradguard" in str(w.message)]
    held = mon.run.metric(GRAD_NORM)[0].tolist()
    print(json.dumps({"warnings": messages, "in_memory": held}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
