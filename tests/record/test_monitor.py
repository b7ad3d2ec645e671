"""The Monitor's numbers against autograd and torch.linalg references."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from tests.fixtures.models import CNN, Branchy, LSTMNet, Tied, TinyTransformer, mlp


def owned_params(model: nn.Module, name: str) -> list[nn.Parameter]:
    module = model if name == "(root)" else dict(model.named_modules())[name]
    return [p for p in module.parameters(recurse=False)]


def reference_grad_stats(model: nn.Module, names: list[str]) -> dict[str, np.ndarray]:
    """Per-layer statistics computed directly with torch.linalg.vector_norm over each layer's own tensors."""
    out: dict[str, list[float]] = {
        "grad_norm": [],
        "grad_rms": [],
        "grad_max": [],
        "weight_norm": [],
    }
    for name in names:
        ps = owned_params(model, name)
        grads = [p.grad.flatten() for p in ps if p.grad is not None]
        weights = torch.cat([p.detach().flatten() for p in ps])
        out["weight_norm"].append(torch.linalg.vector_norm(weights.double()).item())
        if grads:
            g = torch.cat(grads).double()
            n = torch.linalg.vector_norm(g).item()
            out["grad_norm"].append(n)
            out["grad_rms"].append(n / math.sqrt(g.numel()))
            out["grad_max"].append(g.abs().max().item())
        else:
            for k in ("grad_norm", "grad_rms", "grad_max"):
                out[k].append(math.nan)
    return {k: np.asarray(v) for k, v in out.items()}


def capture(into: dict | list, key: str = ""):
    """A forward hook keeping the output with retain_grad(): autograd's dL/d(output) lands in .grad."""

    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        output.retain_grad()
        if isinstance(into, dict):
            into[key] = output
        else:
            into.append(output)

    return hook


def _batch(kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        return torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    if kind == "cnn":
        return torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 5, (6,), generator=g)
    if kind == "lstm":
        return torch.randint(0, 20, (5, 7), generator=g), torch.randint(0, 2, (5,), generator=g)
    x = torch.randint(0, 32, (4, 12), generator=g)
    return x, x


MODELS = {
    "mlp": lambda: mlp(),
    "cnn": CNN,
    "lstm": LSTMNet,
    "transformer": TinyTransformer,
}


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "transformer":
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return nn.functional.cross_entropy(out, y)


@pytest.mark.parametrize("kind", list(MODELS))
def test_gradient_statistics_equal_vector_norm(kind: str) -> None:
    torch.manual_seed(0)
    model = MODELS[kind]()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    refs = []
    with gg.watch(model, opt, detail_every=None) as mon:
        for step in range(3):
            x, y = _batch(kind, step)
            opt.zero_grad()
            _loss(kind, model(x), y).backward()
            refs.append(reference_grad_stats(model, [lay.name for lay in mon.recorded_layers()]))
            opt.step()
    run = mon.run
    for metric in ("grad_norm", "grad_rms", "grad_max", "weight_norm"):
        steps, values = run.metric(metric)
        # the weights are read on detail steps and the first step of each flush only
        assert list(steps) == ([0] if metric == "weight_norm" else [0, 1, 2])
        expected = np.stack([refs[s][metric] for s in steps])
        np.testing.assert_allclose(values, expected, rtol=1e-6, atol=0, err_msg=metric)
    _, nonfinite = run.metric("nonfinite")
    assert (nonfinite == 0).all()
    total = run.scalar("grad_norm_total")[1]
    np.testing.assert_allclose(
        total, np.sqrt(np.nansum(np.stack([r["grad_norm"] for r in refs]) ** 2, axis=1)), rtol=1e-6
    )


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_update_ratio_is_taken_around_the_real_step(opt_name: str) -> None:
    torch.manual_seed(1)
    model = mlp(depth=3)
    if opt_name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    names = ["0", "2", "4"]
    expected = []
    with gg.watch(model, opt, detail_every=2) as mon:
        for step in range(5):
            x, y = _batch("mlp", step)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            before = {
                n: torch.cat([p.detach().flatten().clone() for p in owned_params(model, n)])
                for n in names
            }
            opt.step()
            after = {
                n: torch.cat([p.detach().flatten() for p in owned_params(model, n)]) for n in names
            }
            expected.append(
                [
                    (
                        torch.linalg.vector_norm((after[n] - before[n]).double())
                        / torch.linalg.vector_norm(before[n].double())
                    ).item()
                    for n in names
                ]
            )
    steps, values = mon.run.metric("update_ratio")
    assert list(steps) == [0, 2, 4]
    np.testing.assert_allclose(values, np.asarray(expected)[[0, 2, 4]], rtol=1e-5)
    # Adam's update is not lr * g: the ratio must differ from that naive estimate
    if opt_name == "adamw":
        gsteps, gnorm = mon.run.metric("grad_norm")
        _, wnorm = mon.run.metric("weight_norm")
        naive = 1e-2 * gnorm[0] / wnorm[0]
        assert not np.allclose(values[0], naive, rtol=0.1)


def test_activation_statistics_equal_autograd() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)
    )
    with torch.no_grad():
        model[0].weight.mul_(4.0)  # push tanh into saturation so act_sat_frac is not trivially 0
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(capture(outputs, key))
        for key, m in [
            ("0", model[0]),
            ("t", model[1]),
            ("2", model[2]),
            ("r", model[3]),
            ("4", model[4]),
        ]
    ]
    weights_before = [p.detach().clone() for p in model.parameters()]
    with gg.watch(model, opt, detail_every=1) as mon:
        x, y = _batch("mlp", 0)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads = [outputs[k].grad for k in ("0", "2", "4")]  # autograd's dL/d(output) of each layer
        opt.step()
    for h in handles:
        h.remove()
    run = mon.run
    _, agn = run.metric("act_grad_norm")
    np.testing.assert_allclose(
        agn[0], [torch.linalg.vector_norm(g.double()).item() for g in grads], rtol=1e-6
    )
    # the same through torch.autograd.grad on the outputs of an unwatched copy at the same weights
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p_twin, p_before in zip(twin.parameters(), weights_before):
            p_twin.copy_(p_before)
    outs: list[torch.Tensor] = []
    hs = [twin[i].register_forward_hook(lambda m, a, o: outs.append(o)) for i in (0, 2, 4)]
    twin_loss = nn.functional.cross_entropy(twin(x), y)
    for h in hs:
        h.remove()
    ref = torch.autograd.grad(twin_loss, outs)
    np.testing.assert_allclose(
        agn[0], [torch.linalg.vector_norm(g.double()).item() for g in ref], rtol=1e-6
    )
    # activation statistics are taken on the activation that consumes each layer's output
    assert [lay.activation for lay in run.layers] == ["Tanh", "ReLU", None]
    acts = [
        outputs["t"].detach().double(),
        outputs["r"].detach().double(),
        outputs["4"].detach().double(),
    ]
    np.testing.assert_allclose(
        run.metric("act_mean")[1][0], [a.mean().item() for a in acts], rtol=1e-6, atol=1e-12
    )
    np.testing.assert_allclose(
        run.metric("act_std")[1][0], [a.std(unbiased=False).item() for a in acts], rtol=1e-6
    )
    zero = [(a == 0).double().mean().item() for a in acts]
    np.testing.assert_allclose(run.metric("act_zero_frac")[1][0], zero)
    sat = run.metric("act_sat_frac")[1][0]
    assert sat[0] == pytest.approx((acts[0].abs() >= 0.99).double().mean().item())
    assert 0.05 < sat[0] < 1.0
    assert np.isnan(sat[1]) and np.isnan(sat[2])  # ReLU and the bare output have no bounds


def test_accumulation_gives_one_record_per_optimizer_step() -> None:
    torch.manual_seed(3)
    model = mlp(depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ref_norms, ref_agn = [], []
    out_holder: list[torch.Tensor] = []
    logged: list[float] = []
    h = model[0].register_forward_hook(capture(out_holder))
    with gg.watch(model, opt, detail_every=1) as mon:
        for step in range(3):
            opt.zero_grad()
            agn_sq = 0.0
            for micro in range(4):
                out_holder.clear()
                x, y = _batch("mlp", 10 * step + micro)
                loss = nn.functional.cross_entropy(model(x), y) / 4
                loss.backward()
                agn_sq += torch.linalg.vector_norm(out_holder[0].grad.double()).item() ** 2
                mon.log(loss=loss)
                logged.append(loss.item())
            ref_norms.append(reference_grad_stats(model, ["0", "2", "4"])["grad_norm"])
            ref_agn.append(math.sqrt(agn_sq))
            opt.step()
    h.remove()
    run = mon.run
    steps, gn = run.metric("grad_norm")
    assert list(steps) == [0, 1, 2]
    np.testing.assert_allclose(gn, np.stack(ref_norms), rtol=1e-6)
    np.testing.assert_allclose(run.metric("act_grad_norm")[1][:, 0], ref_agn, rtol=1e-6)
    # every micro-batch's loss belongs to its step; repeated logs in one step are averaged
    lsteps, lvals = run.scalar("loss")
    assert lsteps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(lvals, np.asarray(logged).reshape(3, 4).mean(1), rtol=1e-12)


def test_tied_weights_are_counted_once() -> None:
    torch.manual_seed(4)
    model = Tied()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt) as mon:
        x = torch.randint(0, 10, (4, 5))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x).reshape(-1, 10), x.reshape(-1)).backward()
        emb_grad = torch.linalg.vector_norm(model.emb.weight.grad).item()
        opt.step()
    names = [lay.name for lay in mon.run.layers]
    assert sorted(names) == ["emb", "mid"]  # 'out' owns only the tied weight: not a second layer
    emb = mon.run.layers[names.index("emb")]
    assert emb.numel == 60
    assert mon.run.metric("grad_norm")[1][0, names.index("emb")] == pytest.approx(
        emb_grad, rel=1e-6
    )


def test_frozen_and_sometimes_unused_layers_and_forward_order() -> None:
    torch.manual_seed(5)
    model = Branchy()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with gg.watch(model, opt, detail_every=1) as mon:
        for step in range(4):
            opt.zero_grad(set_to_none=True)
            model(torch.randn(3, 4), use_rare=step % 2 == 1).sum().backward()
            opt.step()
    run = mon.run
    names = [lay.name for lay in run.layers]
    # forward order of the first pass; 'rare' did not run then, so it comes last
    assert names == ["body", "frozen", "head", "rare"]
    frozen = run.layers[1]
    assert frozen.trainable is False
    _, gn = run.metric("grad_norm")
    _, wn = run.metric("weight_norm")
    assert np.isnan(gn[:, 1]).all() and np.isfinite(wn[:, 1]).all()
    assert np.isnan(gn[[0, 2], 3]).all() and np.isfinite(gn[[1, 3], 3]).all()


@pytest.mark.parametrize("detail_every", [1, 10])
def test_nonfinite_is_counted_per_layer(detail_every: int) -> None:
    torch.manual_seed(6)
    model = mlp(depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with gg.watch(model, opt, detail_every=detail_every) as mon:
        for step in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(
                model(torch.randn(4, 8)), torch.zeros(4, dtype=torch.long)
            ).backward()
            if step == 1:
                model[2].weight.grad[0, 0] = float("nan")
                model[2].bias.grad[0] = float("inf")
            opt.step()
    _, nf = mon.run.metric("nonfinite")
    np.testing.assert_array_equal(nf[:2], [[0, 0, 0], [0, 2, 0]])
    # SGD with lr=0 still computes w - 0 * nan = nan: step 2 sees NaN grads everywhere, and NaN
    # weights in layer 1 where the weights are read (detail steps; step 2 is one with detail_every=1)
    np.testing.assert_array_equal(nf[2], [2, 4, 2] if detail_every == 1 else [2, 2, 2])
    _, gmax = mon.run.metric("grad_max")
    assert np.isnan(gmax[1, 1])


def test_outputs_bit_identical_with_and_without_watch() -> None:
    torch.manual_seed(7)
    a = mlp(depth=4)
    b = copy.deepcopy(a)
    oa = torch.optim.Adam(a.parameters(), lr=1e-2)
    ob = torch.optim.Adam(b.parameters(), lr=1e-2)
    outs_a, outs_b = [], []
    for model, opt, outs, watched in ((a, oa, outs_a, False), (b, ob, outs_b, True)):
        mon = gg.watch(model, opt, config="full") if watched else None
        for step in range(4):
            x, y = _batch("mlp", step)
            out = model(x)
            outs.append(out.detach().clone())
            opt.zero_grad()
            nn.functional.cross_entropy(out, y).backward()
            opt.step()
        if mon:
            mon.close()
    for oa_, ob_ in zip(outs_a, outs_b):
        assert torch.equal(oa_, ob_)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def _hook_state(model: nn.Module, opt: torch.optim.Optimizer) -> list:
    state = []
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_pre_hooks_with_kwargs",
            "_forward_hooks_always_called",
        ):
            state.append(dict(getattr(m, attr, {})))
    state.append(dict(opt._optimizer_step_pre_hooks))
    state.append(dict(opt._optimizer_step_post_hooks))
    return state


def test_every_hook_removed_after_close_and_after_exception() -> None:
    model = mlp(depth=3)
    model[0].register_forward_hook(lambda m, a, o: None)  # the user's own hook must survive
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _hook_state(model, opt)
    mon = gg.watch(model, opt, config="full")
    assert _hook_state(model, opt) != before
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    mon.close()
    assert _hook_state(model, opt) == before
    with pytest.raises(ZeroDivisionError), gg.watch(model, opt, config="full"):
        model(torch.randn(2, 8)).sum().backward()
        raise ZeroDivisionError
    assert _hook_state(model, opt) == before


def test_manual_loop_without_optimizer() -> None:
    torch.manual_seed(8)
    model = mlp(depth=3)
    with gg.watch(model, detail_every=1) as mon:
        for _ in range(3):
            model.zero_grad()
            loss = nn.functional.cross_entropy(
                model(torch.randn(4, 8)), torch.zeros(4, dtype=torch.long)
            )
            loss.backward()
            before = [p.detach().clone() for p in model[0].parameters()]
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
            after = list(model[0].parameters())
            ratio = (
                torch.linalg.vector_norm(
                    torch.cat([(b - a).flatten() for a, b in zip(after, before)])
                )
                / torch.linalg.vector_norm(torch.cat([b.flatten() for b in before]))
            ).item()
            mon.step()
            mon.log(loss=loss)
    run = mon.run
    assert list(run.metric("grad_norm")[0]) == [0, 1, 2]
    assert run.metric("update_ratio")[1][-1, 0] == pytest.approx(ratio, rel=1e-5)
    assert list(run.scalar("loss")[0]) == [0, 1, 2]
    with pytest.raises(gg.GradguardError, match="without an optimizer"):
        gg.watch(model, torch.optim.SGD(model.parameters(), lr=0.1)).step()


def test_log_takes_tensors_and_numbers_and_rejects_the_rest() -> None:
    model = mlp(depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt) as mon:
        mon.log(before_any_step=1)
        for _ in range(2):
            loss = model(torch.randn(2, 8)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss, acc=0.5)
        with pytest.raises(gg.GradguardError, match="shape"):
            mon.log(bad=torch.ones(3))
        with pytest.raises(gg.GradguardError, match="number"):
            mon.log(bad="x")
    run = mon.run
    assert list(run.scalar("loss")[0]) == [0, 1]
    assert list(run.scalar("before_any_step")[0]) == [0]
    assert run.scalar("acc")[1].tolist() == [0.5, 0.5]
    assert run.scalar("lr")[1].tolist() == [0.1, 0.1]


def test_forward_order_places_functionally_used_layers_after_their_parent() -> None:
    # nn.MultiheadAttention uses out_proj.weight without calling out_proj: out_proj never runs as a
    # module, yet it belongs right after its attention block, not after the output head
    torch.manual_seed(5)
    model = TinyTransformer()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt) as mon:
        x, y = _batch("transformer", 0)
        opt.zero_grad()
        out = model(x)
        nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
        opt.step()
    names = [lay.name for lay in mon.recorded_layers()]
    for i in range(2):
        attn = f"enc.layers.{i}.self_attn"
        assert names.index(f"{attn}.out_proj") == names.index(attn) + 1, names
    assert names[-1] == "head", names


def test_store_keeps_one_averaged_value_per_step_and_auto_flush_does_not_wait(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradguard.runs.writer import StoreWriter

    waits: list[bool] = []
    submit = StoreWriter.submit

    def spy(self: StoreWriter, batch: object, *, wait: bool = False) -> None:
        waits.append(wait)
        submit(self, batch, wait=wait)  # type: ignore[arg-type]

    monkeypatch.setattr(StoreWriter, "submit", spy)
    model = mlp(depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = f"{tmp_path}/acc.db"
    logged = []
    with gg.watch(model, opt, store=path, flush_every=2, diagnose_online=False) as mon:
        for step in range(5):  # flushes after steps 1 and 3 (automatic), step 4 at close
            opt.zero_grad()
            for micro in range(3):
                x, y = _batch("mlp", 10 * step + micro)
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                mon.log(loss=loss, micro=float(micro))
                logged.append(loss.item())
            opt.step()
    assert waits[:2] == [False, False] and waits[-1] is True  # automatic flushes, then close()
    stored = gg.load(path)
    steps, loss_vals = stored.scalar("loss")
    assert steps.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(loss_vals, np.asarray(logged).reshape(5, 3).mean(1), rtol=1e-12)
    np.testing.assert_array_equal(loss_vals, mon.run.scalar("loss")[1])  # memory == store
    np.testing.assert_array_equal(stored.scalar("micro")[1], [1.0] * 5)


@pytest.mark.parametrize("fused", [False, True])
def test_max_abs_kernels_agree_on_nan_inf_empty_and_half(fused: bool) -> None:
    # fused=True is the accelerator path (one _foreach_norm(inf)); run on CPU tensors here
    from gradguard.record.kernels import max_abs

    tensors = [
        torch.tensor([1.0, -3.0, 2.0]),
        torch.tensor([1.0, -math.inf]),
        torch.zeros(0),  # an empty FSDP2 shard
        torch.tensor([2.0, -5.0]).half(),
        torch.tensor([[0.5, -0.25]]).bfloat16(),
    ]
    got = max_abs(tensors, fused=fused)
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), [3.0, math.inf, 0.0, 5.0, 0.5])
    assert torch.isnan(max_abs([torch.tensor([1.0, math.nan])], fused=False)).all()


def test_take_gradients_now_records_pre_clip_norms_once_per_step() -> None:
    torch.manual_seed(6)
    model = mlp(depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pre, post = [], []
    with gg.watch(model, opt, detail_every=1) as mon:
        for step in range(3):
            x, y = _batch("mlp", step)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            pre.append(reference_grad_stats(model, ["0", "2", "4"])["grad_norm"])
            if step != 1:  # step 1: the optimizer's pre-hook takes the (clipped) gradients
                mon.take_gradients_now()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
            post.append(reference_grad_stats(model, ["0", "2", "4"])["grad_norm"])
            opt.step()
    steps, gn = mon.run.metric("grad_norm")
    assert steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(gn[[0, 2]], np.stack([pre[0], pre[2]]), rtol=1e-6)
    np.testing.assert_allclose(gn[1], post[1], rtol=1e-6)
    assert not np.allclose(pre[0], post[0])
    assert np.isfinite(mon.run.metric("update_ratio")[1]).all()


def test_take_gradients_now_holds_in_a_loop_without_an_optimizer() -> None:
    # regression (issue 12, item 4): with mon.step() (parameters updated by hand, as in
    # pytorch/examples' word_language_model) the pre-clip norms were overwritten by the clipped ones
    torch.manual_seed(6)
    model = mlp(depth=3)
    pre, post = [], []
    with gg.watch(model, detail_every=1) as mon:
        for step in range(3):
            x, y = _batch("mlp", step)
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            pre.append(reference_grad_stats(model, ["0", "2", "4"])["grad_norm"])
            if step != 1:
                mon.take_gradients_now()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
            post.append(reference_grad_stats(model, ["0", "2", "4"])["grad_norm"])
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
            mon.step()
    steps, gn = mon.run.metric("grad_norm")
    assert steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(gn[[0, 2]], np.stack([pre[0], pre[2]]), rtol=1e-6)
    np.testing.assert_allclose(gn[1], post[1], rtol=1e-6)
    assert not np.allclose(pre[0], post[0])


def test_exactly_zero_backpropagated_signal_is_zero_not_missing() -> None:
    # regression (issue 12, item 6): a layer whose output gets an exactly zero gradient (every
    # unit of the ReLU after it dead) was stored as NaN and dropped out of the depth fits
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every pre-activation negative: ReLU passes no gradient
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt, config="full", diagnose_online=False) as mon:
        loss = model(torch.randn(16, 4)).square().mean()
        loss.backward()
        opt.step()
    _, agn = mon.run.metric("act_grad_norm")
    assert agn[0, 0] == 0.0  # measured: zero
    assert agn[0, 1] > 0.0  # the output layer gets the loss gradient


def test_no_host_read_between_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training steps (gradient statistics, update ratio, activations, log) never read a tensor
    on the host: on a GPU each read would be a device sync. Only flush() reads."""
    torch.manual_seed(8)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )
    # SGD: torch's Adam reads its step count with .item() on CPU itself
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    mon = gg.watch(model, opt, detail_every=1, flush_every=1000, diagnose_online=False)
    x, y = _batch("mlp", 0)
    nn.functional.cross_entropy(model(x), y).backward()  # first forward: layer order learned
    opt.step()
    opt.zero_grad()

    def read(*args: object, **kwargs: object) -> None:
        raise AssertionError("host read of a tensor on the training path")

    with monkeypatch.context() as m:
        for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, read)
        for step in range(3):
            x, y = _batch("mlp", step)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss, lr_as_tensor=torch.tensor(1e-3))
    assert mon.failures.parts == set()  # nothing was disabled by the patched reads
    mon.close()
    steps, _ = mon.run.metric("act_grad_norm")
    assert steps.tolist() == [0, 1, 2, 3]
    assert mon.run.scalar("loss")[0].tolist() == [1, 2, 3]


class _Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(x))


class Block(nn.Module):
    """A transformer-like block by its names (a Block with an Attention child)."""

    def __init__(self, d: int, residual: bool) -> None:
        super().__init__()
        self.attn = _Attention(d)
        self.mlp = nn.Linear(d, d)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            x = x + self.attn(x)
            return x + self.mlp(x)
        return self.mlp(self.attn(x))


@pytest.mark.parametrize("residual", [False, True])
def test_the_graph_decides_residual_structure_not_class_names(residual: bool) -> None:
    # regression (issue 12, item 5): a GPT whose residual adds were removed was recorded
    # residual=True from its class names, so "add skip connections" was missing from its remedies
    model = nn.Sequential(Block(8, residual), Block(8, residual), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gg.watch(model, opt, diagnose_online=False) as mon:
        assert mon.run_config["residual"] is True  # the class-name guess before any forward
        model(torch.randn(4, 8)).square().mean().backward()
        opt.step()
    assert mon.run.config["residual"] is residual
    assert ("residual_module" in mon.run.config) is residual


def test_class_names_stand_when_the_first_forward_has_no_graph() -> None:
    model = nn.Sequential(Block(8, False), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gg.watch(model, opt, diagnose_online=False) as mon, torch.no_grad():
        model(torch.randn(4, 8))  # e.g. an evaluation pass first: nothing to read
    assert mon.run.config["residual"] is True and mon.run.config["residual_module"] == "Block"


def test_sparse_gradients_are_measured() -> None:
    # regression (issue 13, item 1): an nn.Embedding(sparse=True) made linalg_vector_norm fail on
    # the sparse backend, and gradient statistics were switched off for every layer
    torch.manual_seed(0)
    emb = nn.Embedding(50, 8, sparse=True)
    head = nn.Linear(8, 3)
    model = nn.Sequential(emb, head)
    opts = [torch.optim.SparseAdam(emb.parameters(), lr=1e-2)]
    dense_opt = torch.optim.SGD(head.parameters(), lr=0.1)
    refs = []
    with gg.watch(model, dense_opt, diagnose_online=False) as mon:
        for _ in range(3):
            idx = torch.randint(0, 50, (16, 4))
            idx[0, :2] = 7  # a repeated index: coalesce sums its rows
            loss = model(idx).mean(1).square().mean()
            for o in (*opts, dense_opt):
                o.zero_grad()
            loss.backward()
            refs.append(
                [
                    float(torch.linalg.vector_norm(emb.weight.grad.to_dense().double())),
                    float(
                        torch.linalg.vector_norm(
                            torch.cat([p.grad.flatten() for p in head.parameters()]).double()
                        )
                    ),
                ]
            )
            opts[0].step()
            dense_opt.step()
    assert mon.failures.parts == set()
    steps, gn = mon.run.metric("grad_norm")
    assert steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(gn, np.array(refs), rtol=1e-5)
    _, gmax = mon.run.metric("grad_max")
    assert np.isfinite(gmax).all()


def test_a_helper_that_cannot_attach_is_refused_before_any_hook(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = mlp(depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(gg.GradguardError, match="cannot be attached"):
        gg.watch(model, opt, clip=object(), store=tmp_path / "x.db")
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert not opt._optimizer_step_pre_hooks
    assert not (tmp_path / "x.db").exists()


def test_weight_norms_are_read_on_detail_steps_and_the_first_step_of_each_flush() -> None:
    torch.manual_seed(0)
    model = mlp(depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    expected = {}
    with gg.watch(model, opt, detail_every=4, flush_every=3) as mon:
        for step in range(10):
            x, y = _batch("mlp", step)
            opt.zero_grad()
            _loss("mlp", model(x), y).backward()
            names = [lay.name for lay in mon.recorded_layers()]
            expected[step] = reference_grad_stats(model, names)["weight_norm"]
            opt.step()
    steps, values = mon.run.metric("weight_norm")
    # flushes hold steps 0-2, 3-5, 6-8, 9: first steps 0, 3, 6, 9; detail steps 0, 4, 8
    assert list(steps) == [0, 3, 4, 6, 8, 9]
    np.testing.assert_allclose(values, np.stack([expected[s] for s in steps]), rtol=1e-6)
    assert list(mon.run.metric("grad_norm")[0]) == list(range(10))
