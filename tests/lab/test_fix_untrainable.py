"""lab fix_untrainable: an untrainable net, gg.fix's remedy, and training before/after."""

from __future__ import annotations

from gradguard import lab


def test_fix_turns_a_chaotic_tanh_net_into_one_that_trains() -> None:
    result = lab.run_experiment(
        "fix_untrainable", quick=True, quiet=True, configs=["tanh, sigma_w^2 = 16"]
    )
    before, after = result.table
    assert (before["when"], after["when"]) == ("before", "after")
    assert before["trainable"] is False and before["confidence"] > 0.9
    assert after["remedy"] == "critical" and after["trainable"] is True
    assert before["test_acc"] < 0.5 and after["test_acc"] > 0.9  # trained with the same budget
    assert set(result.figures) == {"loss_curves", "accuracy"}
    assert result.figures["loss_curves"][:4] == b"\x89PNG"
    assert set(result.runs) == {"tanh, sigma_w^2 = 16 (before)", "tanh, sigma_w^2 = 16 (after)"}
    assert "gg.fix chose critical" in result.reading
