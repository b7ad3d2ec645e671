"""Clippers vs plain references written here, on random gradients in fp32, fp16 and bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.errors import GradguardError
from gradguard.remedies.clip import AGC, AutoClip, Norm, Value, ZClip

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
SHAPES = [(16, 8), (16,), (4, 3, 3, 3), (4,), ()]


def make_params(dtype: torch.dtype, seed: int = 0, scale: float = 1.0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    ps = []
    for shape in SHAPES:
        p = nn.Parameter(torch.randn(shape, generator=g).to(dtype))
        p.grad = (torch.randn(shape, generator=g) * scale).to(dtype)
        ps.append(p)
    return ps


def grads64(ps: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.double().clone() for p in ps]


def global_norm(gs: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in gs)))


def assert_grads(ps: list[nn.Parameter], ref: list[torch.Tensor], dtype: torch.dtype) -> None:
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p.grad.double(), r, rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_matches_reference_and_torch(dtype: torch.dtype) -> None:
    ps = make_params(dtype)
    g0 = grads64(ps)
    n = global_norm(g0)
    max_norm = n / 3
    ref = [g * min(1.0, max_norm / (n + 1e-6)) for g in g0]
    out = Norm(max_norm)(ps)
    assert out.dtype == torch.float32
    assert float(out) == pytest.approx(n, rel=RTOL[dtype])
    assert_grads(ps, ref, dtype)
    if dtype == torch.float32:  # same as torch's own clip_grad_norm_
        qs = make_params(dtype)
        torch.nn.utils.clip_grad_norm_(qs, max_norm, foreach=True)
        for p, q in zip(ps, qs):
            torch.testing.assert_close(p.grad, q.grad)


def _model_grads(seed: int, scale: float) -> list[nn.Parameter]:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 32), nn.LayerNorm(32),
        nn.Tanh(), nn.Linear(32, 4),
    )  # fmt: skip
    (net(torch.randn(16, 3, 8, 8)).pow(2).sum() * scale).backward()
    return list(net.parameters())


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("max_norm", [0.05, 1e9])  # clipping, and not clipping
def test_norm_equals_torch_clip_grad_norm_on_model_grads(foreach, max_norm: float) -> None:
    """fp32 finite gradients: the same norm and the same gradients as torch's own function."""
    ours, theirs = _model_grads(0, 1.0), _model_grads(0, 1.0)
    n_ours = Norm(max_norm)(ours)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, foreach=foreach)
    torch.testing.assert_close(n_ours, n_theirs)
    assert (float(n_ours) > max_norm) == (max_norm == 0.05)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.grad, q.grad)


def test_norm_differs_from_torch_on_purpose_for_fp16_overflow_and_nonfinite() -> None:
    # fp16: torch's per-tensor norms are fp16, overflow at 65504, and zero every gradient
    p, q = (nn.Parameter(torch.zeros(100, dtype=torch.float16)) for _ in range(2))
    p.grad = torch.full((100,), 1e4, dtype=torch.float16)  # global norm 1e5
    q.grad = p.grad.clone()
    assert torch.isinf(torch.nn.utils.clip_grad_norm_([q], 1.0))
    assert float(q.grad.abs().max()) == 0.0
    assert float(Norm(1.0)([p])) == pytest.approx(1e5, rel=1e-3)  # accumulated in fp32
    assert float(p.grad.float().norm()) == pytest.approx(1.0, rel=1e-3)
    # a non-finite norm: torch multiplies by 0 (inf) or NaN; Norm leaves the grads for a Guard
    ps, qs = make_params(torch.float32, seed=8), make_params(torch.float32, seed=8)
    ps[0].grad[0, 0] = qs[0].grad[0, 0] = float("inf")
    g0 = [p.grad.clone() for p in ps]
    torch.nn.utils.clip_grad_norm_(qs, 1.0)
    assert all(float(q.grad.abs().max()) == 0.0 for q in qs[1:])  # finite grads wiped out
    Norm(1.0)(ps)
    for p, g in zip(ps, g0):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_below_threshold_is_identity(dtype: torch.dtype) -> None:
    ps = make_params(dtype)
    g0 = grads64(ps)
    Norm(global_norm(g0) * 2)(ps)
    assert_grads(ps, g0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_value_matches_reference(dtype: torch.dtype) -> None:
    ps = make_params(dtype)
    g0 = grads64(ps)
    out = Value(0.5)(ps)
    assert float(out) == pytest.approx(global_norm(g0), rel=RTOL[dtype])
    assert_grads(ps, [g.clamp(-0.5, 0.5) for g in g0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_autoclip_matches_reference_over_steps(dtype: torch.dtype) -> None:
    clipper = AutoClip(percentile=25, history=6)
    hist: list[float] = []
    for step in range(10):
        ps = make_params(dtype, seed=step, scale=float(1 + (step * 7) % 5))
        g0 = grads64(ps)
        n = global_norm(g0)
        hist = (hist + [n])[-6:]
        thr = float(np.percentile(hist, 25))
        ref = [g * min(1.0, thr / (n + 1e-6)) for g in g0]
        out = clipper(ps)
        assert float(out) == pytest.approx(n, rel=RTOL[dtype])
        assert_grads(ps, ref, dtype)
    assert sorted(clipper.norms.tolist()) == pytest.approx(sorted(hist), rel=RTOL[dtype])


def agc_reference(ps: list[nn.Parameter], clipping: float, eps: float) -> list[torch.Tensor]:
    out = []
    for p in ps:
        g, w = p.grad.double().clone(), p.detach().double()
        if g.ndim <= 1:  # one unit
            units = [(..., g.reshape(-1), w.reshape(-1))]
        else:  # one unit per row
            units = [(i, g[i].reshape(-1), w[i].reshape(-1)) for i in range(g.shape[0])]
        for idx, gu, wu in units:
            limit = clipping * max(float(wu.norm()), eps)
            gn = float(gu.norm())
            if gn > limit:
                g[idx] = g[idx] * (limit / gn)
        out.append(g)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_agc_unitwise_matches_reference(dtype: torch.dtype) -> None:
    ps = make_params(dtype)
    with torch.no_grad():
        ps[0][3].zero_()  # a dead unit: eps sets its limit
        ps[0][5].mul_(100)  # a big unit: not clipped
    ref = agc_reference(ps, clipping=0.3, eps=1e-3)
    n = global_norm(grads64(ps))
    out = AGC(clipping=0.3, eps=1e-3)(ps)
    assert float(out) == pytest.approx(n, rel=RTOL[dtype])
    assert_grads(ps, ref, dtype)
    # unit-wise: every row of the matrix now has ||g|| / max(||w||, eps) <= clipping
    ratio = ps[0].grad.float().norm(dim=1) / ps[0].detach().float().norm(dim=1).clamp(min=1e-3)
    assert float(ratio.max()) <= 0.3 * (1 + RTOL[dtype])
    assert float(ratio[5]) < 0.3 * 0.5  # the big unit kept its gradient: not clipped globally


@pytest.mark.parametrize("dtype", DTYPES)
def test_agc_reused_across_steps_and_shape_changes(dtype: torch.dtype) -> None:
    """AGC keeps buffers between calls: results must still match, and returned norms not alias."""
    clipper = AGC(clipping=0.05, eps=1e-3)
    outs = []
    for seed in range(3):  # same shapes: buffers reused
        ps = make_params(dtype, seed=seed, scale=1.0 + seed)
        ref = agc_reference(ps, clipping=0.05, eps=1e-3)
        n = global_norm(grads64(ps))
        outs.append((clipper(ps), n))
        assert_grads(ps, ref, dtype)
    for out, n in outs:  # earlier return values are not overwritten by later calls
        assert float(out) == pytest.approx(n, rel=RTOL[dtype])
    g = torch.Generator().manual_seed(7)  # other shapes (and a grad-less param): a new plan
    ps = [nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in [(5, 7), (3,), (2, 3, 4)]]
    for p in ps[1:]:
        p.grad = torch.randn(p.shape, generator=g).to(dtype)
    ref = agc_reference(ps[1:], clipping=0.05, eps=1e-3)
    clipper(ps)
    assert ps[0].grad is None
    assert_grads(ps[1:], ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_agc_accelerator_path_matches_reference(dtype: torch.dtype) -> None:
    """Biases go through one foreach kernel off-CPU: run that branch here on CPU tensors."""
    clipper = AGC(clipping=0.2)
    clipper(make_params(dtype, seed=1))
    assert clipper._plan is not None
    for plan in clipper._plan[1]:
        plan.cpu = False
    ps = make_params(dtype, seed=2)
    ref = agc_reference(ps, clipping=0.2, eps=1e-3)
    n = global_norm(grads64(ps))
    assert float(clipper(ps)) == pytest.approx(n, rel=RTOL[dtype])
    assert_grads(ps, ref, dtype)


def test_agc_leaves_a_nonfinite_unit_alone_and_clips_the_rest() -> None:
    ps = make_params(torch.float32, seed=4)
    ps[0].grad[2, 1] = float("nan")  # row 2 of the matrix
    ps[1].grad[0] = float("inf")  # the whole bias is one unit
    with torch.no_grad():
        ps[2].fill_(float("inf"))  # a non-finite weight: no limit, gradient untouched
    g0 = [p.grad.clone() for p in ps]
    ref = agc_reference(ps, clipping=0.01, eps=1e-3)
    AGC(clipping=0.01)(ps)
    torch.testing.assert_close(ps[0].grad[2], g0[0][2], equal_nan=True)
    torch.testing.assert_close(ps[1].grad, g0[1])
    torch.testing.assert_close(ps[2].grad, g0[2])
    rows = [i for i in range(16) if i != 2]  # the finite rows are clipped as usual
    torch.testing.assert_close(ps[0].grad[rows].double(), ref[0][rows])
    assert float(ps[0].grad[rows].norm(dim=1).max()) < float(g0[0][rows].norm(dim=1).min())
    for p, r in zip(ps[3:], ref[3:]):
        torch.testing.assert_close(p.grad.double(), r)


def zclip_reference(
    norms: list[float], alpha: float, z: float, warmup: int, eps: float
) -> list[float]:
    """Factor per step, from the documented algorithm."""
    mean = var = 0.0
    factors = []
    for count, n in enumerate(norms):
        f = 1.0
        if count >= warmup:
            std = max(var, 0.0) ** 0.5 + eps
            limit = mean + z * std
            if n > limit:
                f = limit / (n + 1e-6)
        c = n * f
        d = c - mean
        if count < warmup:
            k = count + 1
            mean_new = mean + d / k
            var = var + (d * (c - mean_new) - var) / k
            mean = mean_new
        else:
            mean = mean + (1 - alpha) * d
            var = alpha * (var + (1 - alpha) * d * d)
        factors.append(f)
    return factors


@pytest.mark.parametrize("dtype", DTYPES)
def test_zclip_matches_reference_over_steps(dtype: torch.dtype) -> None:
    scales = [1.0, 1.2, 0.9, 1.1, 1.0, 1.05, 8.0, 1.0, 0.95, 30.0, 1.1, 1.0]
    clipper = ZClip(alpha=0.9, z_thresh=2.0, warmup=4)
    norms = [
        global_norm(grads64(make_params(dtype, seed=s, scale=sc))) for s, sc in enumerate(scales)
    ]
    factors = zclip_reference(norms, 0.9, 2.0, 4, clipper.eps)
    assert factors[6] < 0.5 and factors[9] < 0.2  # the reference clips the two spikes
    for s, sc in enumerate(scales):
        ps = make_params(dtype, seed=s, scale=sc)
        g0 = grads64(ps)
        out = clipper(ps)
        assert float(out) == pytest.approx(norms[s], rel=RTOL[dtype])
        assert_grads(ps, [g * factors[s] for g in g0], dtype)


def test_zclip_clips_a_blow_up_during_its_warmup() -> None:
    # regression (issue 12, item 9): a 25-step warm-up let an explosion in the first steps through;
    # during the warm-up a norm over warmup_factor x the largest so far is clipped to that bound
    clipper = ZClip(warmup=25, warmup_factor=10.0)
    norms, outs = [], []
    for s, sc in enumerate([1.0, 1.5, 1000.0, 1.2]):
        ps = make_params(torch.float32, seed=s, scale=sc)
        norms.append(global_norm(grads64(ps)))
        clipper(ps)
        outs.append(global_norm(grads64(ps)))
    assert outs[0] == pytest.approx(norms[0], rel=1e-5)
    assert outs[1] == pytest.approx(norms[1], rel=1e-5)
    assert outs[2] == pytest.approx(10 * max(norms[:2]), rel=1e-4)  # clipped to the bound
    assert outs[3] == pytest.approx(norms[3], rel=1e-5)
    assert float(clipper.peak) == pytest.approx(10 * max(norms[:2]), rel=1e-4)
    off = ZClip(warmup=25, warmup_factor=None)
    ps = make_params(torch.float32, seed=2, scale=1000.0)
    off(make_params(torch.float32, seed=0))
    before = global_norm(grads64(ps))
    off(ps)
    assert global_norm(grads64(ps)) == pytest.approx(before, rel=1e-5)


def _nan_params() -> list[nn.Parameter]:
    ps = make_params(torch.float32, seed=99)
    ps[0].grad[0, 0] = float("nan")
    return ps


@pytest.mark.parametrize("make", [lambda: AutoClip(10, history=8), lambda: ZClip(warmup=3)])
def test_nonfinite_norm_leaves_state_unchanged(make) -> None:
    clipper = make()
    for s in range(5):
        clipper(make_params(torch.float32, seed=s))
    state = {k: v.clone() for k, v in vars(clipper).items() if isinstance(v, torch.Tensor)}
    assert state, "the clipper keeps tensor state"
    for bad in (float("nan"), float("inf")):
        ps = make_params(torch.float32, seed=50)
        ps[1].grad[0] = bad
        g_before = [p.grad.clone() for p in ps]
        out = clipper(ps)
        assert not torch.isfinite(out)
        for k, v in state.items():
            torch.testing.assert_close(getattr(clipper, k), v, equal_nan=True, msg=k)
        for p, g in zip(ps, g_before):  # gradients untouched (a Guard will want to see them)
            torch.testing.assert_close(p.grad, g, equal_nan=True)


@pytest.mark.parametrize(
    "clipper",
    [Norm(1.0), Value(0.1), AutoClip(10), AGC(0.01), ZClip(warmup=5)],
    ids=["Norm", "Value", "AutoClip", "AGC", "ZClip"],
)
def test_spike_x1e6_is_clipped(clipper) -> None:
    normal = []
    for s in range(8):
        ps = make_params(torch.float32, seed=s)
        normal.append(global_norm(grads64(ps)))
        clipper(ps)
    ps = make_params(torch.float32, seed=100, scale=1e6)
    before = clipper(ps)
    after = global_norm([p.grad for p in ps])
    assert float(before) > 1e5
    assert after <= 3 * max(normal)  # back in the normal range (Norm/Value/AGC: far below)
    if isinstance(clipper, Value):
        assert max(float(p.grad.abs().max()) for p in ps) == pytest.approx(0.1)


def test_no_host_sync_on_call(monkeypatch) -> None:
    """The call path never reads a tensor value on the host (item/bool/float/tolist)."""
    clippers = [Norm(1.0), Value(0.1), AutoClip(10), AGC(0.01), ZClip(warmup=2)]
    for c in clippers:  # state allocated before the patch
        c(make_params(torch.float32))

    def boom(*a, **k):
        raise AssertionError("host sync on the clip path")

    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    for c in clippers:
        for s in range(3):
            c(make_params(torch.float32, seed=s, scale=10.0**s))


def test_params_without_grad_are_ignored_and_empty_gives_zero() -> None:
    ps = make_params(torch.float32)
    ps[0].grad = None
    g0 = grads64(ps[1:])
    assert float(Norm(1e9)(ps)) == pytest.approx(global_norm(g0), rel=1e-5)
    q = nn.Parameter(torch.ones(3))
    assert float(ZClip()([q])) == 0.0


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda: Norm(-1.0), "max_norm"),
        (lambda: Norm("1"), "max_norm"),
        (lambda: Value(0), "clip_value"),
        (lambda: AutoClip(percentile=150), "percentile"),
        (lambda: AutoClip(history=0), "history"),
        (lambda: AGC(clipping=-0.1), "clipping"),
        (lambda: ZClip(alpha=1.0), "alpha"),
        (lambda: ZClip(warmup=2.5), "warmup"),
        (lambda: Norm(1.0)(nn.Linear(2, 2)), "model.parameters()"),
        (lambda: Norm(1.0)(3), "model.parameters()"),
        (lambda: Norm(1.0)([("w", torch.ones(2))]), "named_parameters"),
    ],
)
def test_bad_input_names_the_fix(bad, match) -> None:
    with pytest.raises(GradguardError, match=match) as e:
        bad()
    assert "pass" in str(e.value)


def test_gg_clip_module_and_repr() -> None:
    assert gg.clip.ZClip is ZClip
    assert repr(Norm(2.0)) == "Norm(max_norm=2.0)"


class _FakeMonitor:
    def __init__(self) -> None:
        self.logged: list[dict] = []

    def log(self, **kw) -> None:
        self.logged.append(kw)


@pytest.mark.parametrize(
    "clipper", [Norm(1.0), Value(0.05), AutoClip(10), AGC(0.01), ZClip(warmup=2)]
)
def test_attach_logs_norm_before_and_after_as_tensors(clipper) -> None:
    mon = _FakeMonitor()
    clipper.attach(mon)
    ps = make_params(torch.float32, seed=3, scale=5.0)
    out = clipper(ps)
    (rec,) = mon.logged
    assert isinstance(rec["clip_norm_before"], torch.Tensor)
    assert float(rec["clip_norm_before"]) == float(out)
    assert float(rec["clip_norm_after"]) == pytest.approx(
        global_norm([p.grad for p in ps]), rel=1e-5
    )


def test_watch_with_clip_stores_norm_before_and_after() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    clipper = Norm(0.05)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    with gg.watch(model, opt, clip=clipper) as mon:
        for _ in range(5):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            clipper(model.parameters())
            opt.step()
        mon.flush()
        run = mon.run
    steps, before = run.scalar("clip_norm_before")
    _, after = run.scalar("clip_norm_after")
    assert list(steps) == [0, 1, 2, 3, 4]
    assert np.all(before > 0.05)  # this model's gradients exceed the limit
    np.testing.assert_allclose(after, 0.05, rtol=1e-4)


@pytest.mark.parametrize("make", [lambda: AutoClip(25, history=5), lambda: ZClip(warmup=3)])
def test_state_dict_resume_matches_uninterrupted(make) -> None:
    a, b = make(), make()
    for s in range(6):
        a(make_params(torch.float32, seed=s, scale=1 + s))
    state = a.state_dict()
    b.load_state_dict(state)
    for s in range(6, 10):  # a spike included: both must clip it the same way
        pa, pb = (
            make_params(torch.float32, seed=s, scale=50.0 if s == 8 else 1.0),
            make_params(torch.float32, seed=s, scale=50.0 if s == 8 else 1.0),
        )
        a(pa)
        b(pb)
        for x, y in zip(pa, pb):
            torch.testing.assert_close(x.grad, y.grad)
    with pytest.raises(GradguardError, match="same clipper class"):
        Norm(1.0).load_state_dict(state)
