"""init_: variances and orthogonality against the formulas, LSUV on a batch, bad input."""

from __future__ import annotations

import io
import math

import pytest
import torch
from rich.console import Console
from torch import nn

import gradguard as gg
from gradguard.errors import ConfigError, GradguardError
from gradguard.remedies.init import Scheme


def weight_var(m: nn.Module) -> float:
    return float(m.weight.detach().double().var())


def test_he_normal_var_is_2_over_fan_in() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 10))
    nn.init.constant_(net[0].bias, 3.0)
    summary = gg.init_(net, "he")
    # 120k samples: sampling error of the variance ~ sqrt(2/n) = 0.4%
    assert weight_var(net[0]) == pytest.approx(2 / 400, rel=0.03)
    assert summary[0].activation == "ReLU" and summary[0].gain == pytest.approx(math.sqrt(2))
    assert float(net[0].bias.detach().abs().max()) == 0.0  # biases zeroed
    assert summary[1].source == "output layer" and weight_var(net[2]) == pytest.approx(
        1 / 300, rel=0.05
    )


def test_he_fan_out_uniform_and_conv() -> None:
    torch.manual_seed(1)
    lin = nn.Sequential(nn.Linear(200, 500), nn.ReLU(), nn.Linear(500, 2))
    gg.init_(lin, "he", mode="fan_out", distribution="uniform")
    assert weight_var(lin[0]) == pytest.approx(2 / 500, rel=0.03)
    conv = nn.Sequential(nn.Conv2d(16, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    gg.init_(conv, "he")
    assert weight_var(conv[0]) == pytest.approx(2 / (16 * 9), rel=0.05)


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_he_before_selu_is_lecun_var_1_over_fan_in(distribution: str) -> None:
    """SELU self-normalises only with Var(W) = 1/fan_in, not calculate_gain('selu')**2 / fan_in."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(400, 300), nn.SELU(), nn.Linear(300, 10))
    summary = gg.init_(net, "he", distribution=distribution)
    assert weight_var(net[0]) == pytest.approx(1 / 400, rel=0.03)  # 0.5625/400 before the fix
    assert summary[0].activation == "SELU" and summary[0].gain == 1.0
    torch.manual_seed(5)
    gg.init_(net, "he", nonlinearity="selu", distribution=distribution)  # the name: the same
    assert weight_var(net[0]) == pytest.approx(1 / 400, rel=0.03)


def test_selu_gain_is_1_for_xavier_and_orthogonal_and_keeps_a_deep_net_normalised() -> None:
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(300, 200), nn.SELU(), nn.Linear(200, 5))
    gg.init_(net, "xavier")
    assert weight_var(net[0]) == pytest.approx(2 / (300 + 200), rel=0.03)
    gg.init_(net, "orthogonal")
    w = net[0].weight.detach().double()
    torch.testing.assert_close(w @ w.T, torch.eye(200, dtype=torch.float64), atol=1e-5, rtol=0)
    layers: list[nn.Module] = []
    for _ in range(30):
        layers += [nn.Linear(256, 256), nn.SELU()]
    deep = nn.Sequential(*layers)
    gg.init_(deep, "he")
    with torch.no_grad():
        out = deep(torch.randn(2048, 256))
    # the self-normalising fixed point: mean 0, variance 1 after 30 layers
    assert float(out.var()) == pytest.approx(1.0, abs=0.2)
    assert abs(float(out.mean())) < 0.2


def test_xavier_uses_the_following_activation_gain() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(300, 200), nn.Dropout(0.1), nn.Tanh(), nn.Linear(200, 5))
    summary = gg.init_(net, "xavier")
    gain = 5 / 3  # tanh, seen through the dropout
    assert summary[0].activation == "Tanh"
    assert weight_var(net[0]) == pytest.approx(gain**2 * 2 / (300 + 200), rel=0.03)


@pytest.mark.parametrize(
    "act, gain", [(nn.Tanh(), 5 / 3), (nn.ReLU(), math.sqrt(2)), (nn.Sigmoid(), 1.0)]
)
def test_orthogonal_w_wt_is_gain_squared_identity(act: nn.Module, gain: float) -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(64, 32), act, nn.Linear(32, 32))
    gg.init_(net, "orthogonal")
    w = net[0].weight.detach().double()  # (32, 64): rows orthogonal
    torch.testing.assert_close(
        w @ w.T, gain**2 * torch.eye(32, dtype=torch.float64), atol=1e-5, rtol=0
    )
    w2 = net[2].weight.detach().double()  # output layer: gain 1, square: orthogonal matrix
    torch.testing.assert_close(w2 @ w2.T, torch.eye(32, dtype=torch.float64), atol=1e-5, rtol=0)


def test_recurrent_layers_are_orthogonal_per_gate() -> None:
    torch.manual_seed(4)
    lstm = nn.LSTM(10, 16, num_layers=2)
    summary = gg.init_(lstm, "orthogonal")
    assert "4 gates" in summary[0].note
    for gate in lstm.weight_hh_l1.detach().double().chunk(4):  # (16, 16) each
        torch.testing.assert_close(
            gate @ gate.T, torch.eye(16, dtype=torch.float64), atol=1e-5, rtol=0
        )
    assert float(lstm.bias_ih_l0.detach().abs().max()) == 0.0
    rnn = nn.RNN(8, 12, nonlinearity="tanh")
    gg.init_(rnn, "orthogonal")
    w = rnn.weight_hh_l0.detach().double()
    torch.testing.assert_close(
        w @ w.T, (5 / 3) ** 2 * torch.eye(12, dtype=torch.float64), atol=1e-5, rtol=0
    )
    gru = nn.GRU(8, 12)
    gg.init_(gru, "xavier")  # per gate: fan_out 12, not 36
    assert float(gru.weight_ih_l0.detach().double().var()) == pytest.approx(2 / (8 + 12), rel=0.25)


class Scrambled(nn.Module):
    """Registration order (act, fc1, fc2) differs from forward order (fc1, act, fc2)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Tanh()
        self.fc1 = nn.Linear(50, 60)
        self.fc2 = nn.Linear(60, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_forward_trace_finds_activation_that_registration_order_misses() -> None:
    net = Scrambled()
    blind = gg.init_(net, "xavier")
    assert blind.by_name("fc1").source.startswith("default")
    traced = gg.init_(net, "xavier", data=torch.randn(4, 50))
    assert traced.by_name("fc1").activation == "Tanh"
    assert traced.by_name("fc1").source == "forward trace"
    assert traced.by_name("fc1").gain == pytest.approx(5 / 3)
    given = gg.init_(net, "xavier", nonlinearity=nn.LeakyReLU(0.2))
    assert given.by_name("fc1").gain == pytest.approx(math.sqrt(2 / (1 + 0.2**2)))


def _all_hooks_gone(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_lsuv_gives_unit_output_variance_on_the_batch() -> None:
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 64),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(64, 10),
    ).train()
    x = torch.randn(64, 3, 8, 8) * 5 + 2
    summary = gg.init_(net, "lsuv", data=x, tol=0.05)
    assert _all_hooks_gone(net)
    assert net.training  # mode restored
    outs: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, a, o, n=n: outs.__setitem__(n, o))
        for n, m in net.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        net.eval()(x)
    for h in handles:
        h.remove()
    assert len(outs) == 4 == len(summary)
    for name, out in outs.items():
        assert float(out.var()) == pytest.approx(1.0, abs=0.05), name
        assert summary.by_name(name).output_var == pytest.approx(float(out.var()), rel=1e-4)


def test_lsuv_needs_data_and_leaves_no_hooks_on_error() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="data="):
        gg.init_(net, "lsuv")
    with pytest.raises(GradguardError, match="batch shape"):
        gg.init_(net, "lsuv", data=torch.randn(3, 7))
    assert _all_hooks_gone(net)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda net: gg.init_(net, "glorotish"), "'xavier', 'he', 'orthogonal', 'lsuv'"),
        (lambda net: gg.init_(net.parameters(), "he"), "pass the model itself"),
        (lambda net: gg.init_(nn.ReLU(), "he"), "no parameters"),
        (lambda net: gg.init_(nn.Sequential(nn.LayerNorm(3)), "he"), "torch.nn.init"),
        (lambda net: gg.init_(net, "he", nonlinearity="swishy"), "'relu', 'tanh'"),
        (lambda net: gg.init_(net, "he", mode="fan_middle"), "'fan_in', 'fan_out'"),
        (lambda net: gg.init_(net, "xavier", distribution="laplace"), "'uniform', 'normal'"),
        (lambda net: gg.init_(net, "lsuv", data=torch.ones(2, 4), tol=-1), "tol"),
    ],
)
def test_bad_input_names_the_fix(call, match) -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(GradguardError, match=match):
        call(net)


def test_scheme_enum_and_aliases() -> None:
    assert Scheme("kaiming") is Scheme.HE and Scheme.parse("Glorot", "scheme") is Scheme.XAVIER
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert gg.init_(net, Scheme.HE).scheme == "he"


def test_summary_is_readable_text_and_rich() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    summary = gg.init_(net, "he")
    text = str(summary)
    assert text.splitlines()[0] == "init_ he: 2 layers"
    assert "0 [Linear]: he, gain 1.414 for ReLU (registration order)" in text
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None).print(summary)
    assert "ReLU" in buf.getvalue() and "1.414" in buf.getvalue()
    with pytest.raises(AttributeError):  # frozen
        summary[0].gain = 2.0  # type: ignore[misc]
