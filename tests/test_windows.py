"""Windows by tensor slicing: known answers against plain indexing, and no leakage into the hold-out."""

import numpy as np
import pandas as pd
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.data import validate_panel
from forecasting.synthetic import SyntheticSpec, generate_panel
from forecasting.windows import CovariateScaler, WindowSampler, WindowShape, build_tensors, gather_windows, last_windows


def panel_of(lengths: list[int]):
    rows = []
    for i, n in enumerate(lengths):
        times = pd.date_range("2024-01-01", periods=n, freq="h")
        rows.append(pd.DataFrame({"cluster_id": f"c{i}", "timestamp": times,
                                  "demand": 1000.0 * i + np.arange(n), "cpu": 0.5 + np.arange(n)}))
    return validate_panel(pd.concat(rows), past_covariates=["cpu"])


def tensors_for(panel, shape, future_steps=0):
    scaler = CovariateScaler.fit(panel, ("cpu",))
    return build_tensors(panel, known=CovariateScaler((), (), ()), past=scaler,
                         cluster_vocab={c: i for i, c in enumerate(panel.cluster_ids)}, time_feature_names=("hour_of_day",),
                         left_pad=shape.span, future_steps=future_steps)


def test_gathered_window_equals_plain_slicing():
    panel = panel_of([30, 20])
    shape = WindowShape(max_lag=3, context=4, horizon=2)
    t = tensors_for(panel, shape)
    batch = gather_windows(t, torch.tensor([1]), t.end[1:2], shape)
    # Cluster c1 holds 1000..1019; the window ends at its last value and spans 3 + 4 + 2 = 9 steps.
    assert batch["target"][0].tolist() == [1000.0 + v for v in range(11, 20)]
    assert batch["observed"][0].tolist() == [1.0] * 9
    # past_prev at each of the 6 unrolled steps holds the covariate one step earlier (standardised).
    cpu = panel.history().query("cluster_id == 'c1'")["cpu"].to_numpy()
    expected = (cpu[13:19] - np.mean(panel.history()["cpu"])) / np.std(panel.history()["cpu"])
    np.testing.assert_allclose(batch["past_prev"][0, :, 0].numpy(), expected, rtol=1e-5)


def test_left_padding_is_unobserved_zero():
    panel = panel_of([5])
    shape = WindowShape(max_lag=6, context=2, horizon=1)
    t = tensors_for(panel, shape)
    batch = gather_windows(t, torch.tensor([0]), t.end, shape)
    assert batch["observed"][0].tolist() == [0.0] * 4 + [1.0] * 5
    assert batch["target"][0, :4].tolist() == [0.0] * 4


def test_future_window_extends_past_the_last_observation():
    panel = panel_of([12])
    shape = WindowShape(max_lag=2, context=3, horizon=4)
    t = tensors_for(panel, shape, future_steps=4)
    batch = last_windows(t, shape, future=True)
    assert batch["observed"][0, -4:].tolist() == [0.0] * 4
    assert batch["target"][0, 2:5].tolist() == [9.0, 10.0, 11.0]


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(8, 60), min_size=1, max_size=4), holdout=st.integers(0, 3), seed=st.integers(0, 99))
def test_sampled_windows_never_predict_the_holdout(lengths, holdout, seed):
    panel = panel_of(lengths)
    shape = WindowShape(max_lag=2, context=3, horizon=2)
    t = tensors_for(panel, shape)
    try:
        sampler = WindowSampler(t, shape, holdout=holdout)
    except ValueError:
        assert all(n < shape.horizon + holdout + 1 for n in lengths)
        return
    batch = sampler.sample(64, torch.Generator().manual_seed(seed))
    values = batch["target"][:, -shape.horizon:]
    lengths_t = torch.tensor(lengths, dtype=torch.float32)
    cluster = batch["cluster"]
    # The value i of cluster k is 1000k + i: the predicted steps must all precede the hold-out.
    position = values - 1000.0 * cluster[:, None]
    observed = batch["observed"][:, -shape.horizon:] > 0
    assert (position[observed] < (lengths_t[cluster][:, None] - holdout).expand_as(position)[observed]).all()
    # Each window's context holds at least one observation.
    assert (batch["observed"][:, shape.max_lag:shape.max_lag + shape.context].sum(1) > 0).all()


def test_batches_sliced_from_one_gather_are_the_batches_gathered_one_by_one():
    """Training gathers windows for several batches at once; the batches must be exactly those of
    sampling batch by batch from the same generator (a short last block included)."""
    from forecasting.lightning import _SampledWindows

    panel = generate_panel(SyntheticSpec(num_clusters=6, days=28, seed=3))
    shape = WindowShape(24, 24, 12)
    t = build_tensors(panel, known=CovariateScaler.fit(panel, panel.known_covariates),
                      past=CovariateScaler.fit(panel, panel.past_covariates),
                      cluster_vocab={c: i for i, c in enumerate(panel.cluster_ids)},
                      time_feature_names=("hour_of_day",), left_pad=shape.span)
    sampler = WindowSampler(t, shape)
    windows = _SampledWindows(sampler, batch_size=8, batches=7, seed=5)
    windows.WINDOWS_PER_GATHER = 24  # blocks of 3 batches: 3 + 3 + 1
    blocked = list(windows)
    generator = torch.Generator().manual_seed(5 * 1_000_003)
    one_by_one = [sampler.sample(8, generator) for _ in range(7)]
    assert len(blocked) == 7
    for a, b in zip(blocked, one_by_one, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
