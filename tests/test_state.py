"""gradguard.functional.state: the guard's variables and the step log's columns."""

from __future__ import annotations

from gradguard.functional.state import STATS, STEP_LOG_COLUMNS, StepRow, state_specs
from gradguard.functional.step import GuardConfig, Layout

LAYOUT = Layout(layer_of=(0, 0, 1), layer_names=("conv", "dense"), agc_excluded=(0, 0, 1))


def test_the_step_log_columns_are_a_step_rows_logged_fields():
    # StepRow names each column; the step is counted on the host, the layers follow the columns.
    assert STEP_LOG_COLUMNS == (
        "pre_clip_norm",
        "post_clip_norm",
        "threshold",
        "event",
        "batch_loss",
    )
    assert StepRow._fields == ("step", *STEP_LOG_COLUMNS, "layer_norms")


def test_the_variables_each_mode_keeps():
    plain = state_specs(GuardConfig(step_log_size=16, spike_window=8), LAYOUT)
    assert plain["step_log"] == ("float32", 0.0, (16, 5 + 2))  # 5 columns and 2 layers
    assert plain["window_layer_norm_max"][2] == (2,) and plain["spike_history"][2] == (8,)
    assert set(STATS) <= set(plain)
    assert not {"autoclip_history", "zscore_mean", "loss_spike_history", "collapse_count"} & set(
        plain
    )
    auto = state_specs(GuardConfig(mode="autoclip", autoclip_window=30), LAYOUT)
    assert auto["autoclip_history"] == ("float32", 0.0, (30,))
    zscore = state_specs(GuardConfig(mode="zscore", loss_spikes=True, collapse_loss=2.3), LAYOUT)
    assert {"zscore_count", "zscore_mean", "zscore_var"} <= set(zscore)
    assert {"loss_spike_history", "collapse_count", "collapse_learned"} <= set(zscore)
