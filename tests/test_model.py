"""The DeepAR model: sampling shape and determinism, collapse on constants, beating seasonal naive,
and save/load round trips."""

import numpy as np
import torch
import pandas as pd
import pytest

from forecasting.baselines import SeasonalNaive
from forecasting.data import validate_panel
from forecasting.estimator import DeepARConfig, DeepARForecaster
from forecasting.metrics import mean_weighted_quantile_loss
from forecasting.predictor import DeepARPredictor
from forecasting.synthetic import SyntheticSpec, generate_panel

TINY = dict(prediction_length=12, context_length=24, hidden_size=16, num_layers=1, dropout=0.0,
            batch_size=32, batches_per_epoch=20, max_epochs=2, patience=0, progress_bar=False)


@pytest.fixture(scope="module")
def seasonal_panel():
    """Six clusters with a strong daily cycle and weekly dip, plus the event/temperature covariates."""
    return generate_panel(SyntheticSpec(num_clusters=6, days=28, events_per_week=0.5, seed=3))


@pytest.fixture(scope="module")
def tiny_model(seasonal_panel):
    return DeepARForecaster(DeepARConfig(**TINY)).fit(seasonal_panel.cut(12))


def test_sample_paths_have_the_forecast_shape(tiny_model, seasonal_panel):
    history = seasonal_panel.cut(12)
    forecast = tiny_model.predict(history, horizon=7, num_samples=30)
    assert forecast.samples.shape == (6, 30, 7)
    assert forecast.cluster_ids == history.cluster_ids
    assert (forecast.starts == history.last_observed().to_numpy() + pd.Timedelta(hours=1)).all()
    assert (forecast.samples >= 0).all()


def test_same_seed_same_paths_other_seed_other_paths(tiny_model, seasonal_panel):
    history = seasonal_panel.cut(12)
    a = tiny_model.predict(history, 12, 20, seed=5).samples
    b = tiny_model.predict(history, 12, 20, seed=5).samples
    c = tiny_model.predict(history, 12, 20, seed=6).samples
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_quantiles_collapse_on_a_constant_series():
    times = pd.date_range("2024-01-01", periods=24 * 14, freq="h")
    levels = [5.0, 50.0, 500.0]
    panel = validate_panel(pd.DataFrame({
        "cluster_id": np.repeat(["a", "b", "c"], len(times)), "timestamp": np.tile(times, 3),
        "demand": np.repeat(levels, len(times))}))
    untrained = DeepARForecaster(DeepARConfig(**{**TINY, "max_epochs": 1, "batches_per_epoch": 1}))
    trained = DeepARForecaster(DeepARConfig(**{**TINY, "max_epochs": 12, "batches_per_epoch": 40, "lr": 1e-2,
                                               "validate": False}))
    level = np.array(levels)[:, None]
    for model, expect_tight in ((untrained.fit(panel), False), (trained.fit(panel), True)):
        low, high = model.predict(panel, 12, 200).quantile([0.05, 0.95])
        tight = bool(((low > 0.96 * level) & (high < 1.04 * level)).all())
        assert tight == expect_tight


def test_trained_model_beats_seasonal_naive_on_a_known_seasonal_pattern(seasonal_panel):
    history, actuals = seasonal_panel.cut(24), seasonal_panel.actuals(24)
    config = DeepARConfig(prediction_length=24, context_length=48, hidden_size=32, num_layers=2, batch_size=64,
                          batches_per_epoch=30, max_epochs=8, lr=3e-3, patience=0, seed=0)
    model = DeepARForecaster(config).fit(history)
    ours = mean_weighted_quantile_loss(model.predict(history, 24, 100, seed=0), actuals)
    daily = mean_weighted_quantile_loss(SeasonalNaive(24).predict(history, 24), actuals)
    weekly = mean_weighted_quantile_loss(SeasonalNaive(168).predict(history, 24), actuals)
    assert ours < 0.8 * min(daily, weekly), (ours, daily, weekly)
    # Deterministic: the same config and seed give the same score.
    again = DeepARForecaster(config).fit(history)
    assert mean_weighted_quantile_loss(again.predict(history, 24, 100, seed=0), actuals) == pytest.approx(ours, rel=1e-6)


def test_save_and_load_round_trip_gives_identical_forecasts(tiny_model, seasonal_panel, tmp_path):
    history = seasonal_panel.cut(12)
    path = tiny_model.predictor.save(tmp_path / "model")
    loaded = DeepARPredictor.load(path)
    np.testing.assert_array_equal(tiny_model.predict(history, 12, 25, seed=3).samples,
                                  loaded.predict(history, 12, 25, seed=3).samples)
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "weights.pt"]


def test_unknown_clusters_are_forecast_with_the_shared_embedding(tiny_model, seasonal_panel):
    frame = seasonal_panel.frame.copy()
    frame["cluster_id"] = frame["cluster_id"].str.replace("cluster", "new")
    renamed = seasonal_panel.replace_frame(frame).cut(12)
    forecast = tiny_model.predict(renamed, 12, 10)
    assert forecast.cluster_ids[0].startswith("new") and np.isfinite(forecast.samples).all()


def test_predict_rejects_missing_covariates_and_other_frequencies(tiny_model, seasonal_panel):
    history = seasonal_panel.cut(12)
    no_event = validate_panel(history.frame.drop(columns="event"), known_covariates=["temperature"],
                              past_covariates=["cpu_util"])
    with pytest.raises(ValueError, match=r"needs known-future covariates \['event'\]"):
        tiny_model.predict(no_event, 12, 5)
    hourly = history.frame
    daily = hourly[hourly["timestamp"].dt.hour == 0]
    as_daily = validate_panel(daily, known_covariates=["temperature", "event"], past_covariates=["cpu_util"])
    with pytest.raises(ValueError, match="frequency 'D' differs"):
        tiny_model.predict(as_daily, 12, 5)


def test_forecast_needs_known_covariates_over_the_horizon(tiny_model, seasonal_panel):
    history = seasonal_panel.cut(12)
    with pytest.raises(ValueError, match="known-future covariate is missing"):
        tiny_model.predict(history, 13, 5)  # only 12 future rows carry temperature and events


def test_config_values_are_checked():
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        DeepARConfig(hidden_size=0)
    with pytest.raises(ValueError, match="dropout"):
        DeepARConfig(dropout=1.0)


def test_an_ensemble_mixes_its_members_paths_and_round_trips(seasonal_panel, tmp_path):
    history = seasonal_panel.cut(12)
    ensemble = DeepARForecaster(DeepARConfig(**{**TINY, "ensemble_size": 2})).fit(history)
    members = ensemble.predictor.members
    assert len(members) == 2
    assert not all(torch.equal(a, b) for a, b in zip(members[0].state_dict().values(),
                                                      members[1].state_dict().values(), strict=True))
    mixed = ensemble.predict(history, 12, 10, seed=4).samples
    # The first member draws the first half of the paths from the same generator state.
    alone = DeepARPredictor(members[0], ensemble.predictor.metadata).predict(history, 12, 5, seed=4).samples
    np.testing.assert_array_equal(mixed[:, :5], alone)
    loaded = DeepARPredictor.load(ensemble.predictor.save(tmp_path / "ensemble"))
    np.testing.assert_array_equal(loaded.predict(history, 12, 10, seed=4).samples, mixed)


def test_negative_binomial_on_fractional_demand_is_refused_before_training(seasonal_panel):
    counts = seasonal_panel.cut(12)
    assert counts.holds_counts()  # the synthetic demand is whole requests
    frame = counts.frame.assign(demand=counts.frame["demand"] + 0.25)
    history = counts.replace_frame(frame)
    assert not history.holds_counts()
    with pytest.raises(ValueError, match="'negative_binomial' models counts.*use 'student_t'"):
        DeepARForecaster(DeepARConfig(**{**TINY, "distribution": "negative_binomial"})).fit(history)


def test_the_logged_epoch_train_loss_is_the_mean_of_that_epochs_batch_losses(seasonal_panel):
    import lightning.pytorch as pl

    class BatchLosses(pl.Callback):
        def __init__(self) -> None:
            self.epochs: list[list[float]] = []
            self.logged: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.epochs.append([])

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.epochs[-1].append(float(outputs["loss"]))

        def on_train_epoch_end(self, trainer, module) -> None:
            self.logged.append(float(trainer.callback_metrics["train_loss"]))

    seen = BatchLosses()
    config = {**TINY, "max_epochs": 3, "batches_per_epoch": 7, "validate": False}
    model = DeepARForecaster(DeepARConfig(**config)).fit(seasonal_panel.cut(12), callbacks=[seen])
    assert [len(e) for e in seen.epochs] == [7, 7, 7]
    np.testing.assert_allclose(seen.logged, [np.mean(e) for e in seen.epochs], rtol=1e-5)
    assert [row["train_loss"] for row in model.summary.history] == pytest.approx(seen.logged, rel=1e-6)


def test_the_cosine_schedule_ends_training_at_one_percent_of_the_learning_rate(seasonal_panel):
    import lightning.pytorch as pl

    class LearningRates(pl.Callback):
        def __init__(self) -> None:
            self.seen: list[float] = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    rates = LearningRates()
    config = {**TINY, "max_epochs": 4, "batches_per_epoch": 5, "lr": 2e-3, "lr_schedule": "cosine", "validate": False}
    DeepARForecaster(DeepARConfig(**config)).fit(seasonal_panel.cut(12), callbacks=[rates])
    total = 20
    expected = [2e-5 + (2e-3 - 2e-5) * (1 + np.cos(np.pi * step / total)) / 2 for step in range(total)]
    np.testing.assert_allclose(rates.seen, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="lr_schedule must be 'plateau' or 'cosine'"):
        DeepARConfig(lr_schedule="linear")


def test_paths_are_stepped_in_batches_of_whole_clusters_of_any_size(tiny_model, seasonal_panel):
    history = seasonal_panel.cut(12)
    predictor = tiny_model.predictor
    one_cluster_a_time = predictor.predict(history, 12, 40, seed=2, max_paths_per_batch=40).samples
    smaller_than_one_cluster = predictor.predict(history, 12, 40, seed=2, max_paths_per_batch=7).samples
    all_at_once = predictor.predict(history, 12, 40, seed=2, max_paths_per_batch=10_000).samples
    # A batch never splits a cluster's paths, so below one cluster's worth it is one cluster a time.
    np.testing.assert_array_equal(one_cluster_a_time, smaller_than_one_cluster)
    assert all_at_once.shape == one_cluster_a_time.shape == (6, 40, 12)
    # A batch's paths depend on its own clusters only: the first batch of one cluster draws what
    # that cluster alone would.
    first = history.select(history.cluster_ids[:1])
    np.testing.assert_array_equal(one_cluster_a_time[:1], predictor.predict(first, 12, 40, seed=2).samples)
    np.testing.assert_array_equal(all_at_once, predictor.predict(history, 12, 40, seed=2, max_paths_per_batch=240).samples)
    with pytest.raises(ValueError, match="max_paths_per_batch must be >= 1"):
        predictor.predict(history, 12, 40, max_paths_per_batch=0)


def test_parallel_sampling_streams_draw_the_same_paths_and_give_back_the_thread_count(tiny_model, seasonal_panel):
    """Batches sampled side by side on several threads give exactly the paths of one thread (each
    batch has its own seed), and torch's process-wide thread count is put back afterwards."""
    predictor, history = tiny_model.predictor, seasonal_panel.cut(12)
    threads = torch.get_num_threads()
    one = predictor.predict(history, 12, 40, seed=3, max_paths_per_batch=80, streams=1).samples
    three = predictor.predict(history, 12, 40, seed=3, max_paths_per_batch=80, streams=3).samples
    np.testing.assert_array_equal(one, three)
    assert torch.get_num_threads() == threads
    # Each batch's generator is seeded from (seed, position): fixed, and different per batch and seed.
    from forecasting.predictor import chunk_seed

    seeds = {chunk_seed(seed, index) for seed in (0, 1, 3) for index in range(4)}
    assert len(seeds) == 12 and chunk_seed(3, 1) == chunk_seed(3, 1)
    with pytest.raises(ValueError, match="streams must be >= 1"):
        predictor.predict(history, 12, 40, streams=0)


def test_the_layered_training_pass_computes_the_same_lstm():
    """Training with dropout runs the LSTM layer by layer with our own mask: with the mask keeping
    everything it must equal the fused call, and with p > 0 it must drop something, reproducibly."""
    import dataclasses

    from forecasting.model import DeepARNetwork, NetworkConfig

    torch.manual_seed(0)
    config = NetworkConfig(freq="h", lags=(1, 2), context_length=6, prediction_length=3, num_clusters=2,
                           time_features=(), hidden_size=8, num_layers=3, dropout=1e-9)
    network = DeepARNetwork(config).train()
    inputs = torch.randn(5, 9, config.input_size)
    fused = network.rnn(inputs)[0]
    torch.testing.assert_close(network.run_rnn(inputs), fused, rtol=1e-5, atol=1e-6)
    network.config = dataclasses.replace(config, dropout=0.5)
    torch.manual_seed(3)
    dropped = network.run_rnn(inputs)
    torch.manual_seed(3)
    torch.testing.assert_close(network.run_rnn(inputs), dropped)
    assert not torch.allclose(dropped, fused, atol=1e-3)
    torch.testing.assert_close(network.eval().run_rnn(inputs), fused)  # no dropout outside training


def test_flat_gradients_zero_and_clip_like_torch_and_reattach_what_was_replaced():
    """Training keeps every gradient in one buffer: zeroing and norm clipping on it must give the
    updates torch's own zero_grad + clip_grad_norm_ give, step after step."""
    from forecasting.lightning import FlatGradients
    from forecasting.model import DeepARNetwork, NetworkConfig

    config = NetworkConfig(freq="h", lags=(1, 2), context_length=6, prediction_length=3, num_clusters=2,
                           time_features=(), hidden_size=8, num_layers=2, dropout=0.0)
    torch.manual_seed(0)
    ours, theirs = DeepARNetwork(config), DeepARNetwork(config)
    theirs.load_state_dict(ours.state_dict())
    batch = {"target": torch.rand(4, 11) * 10, "observed": torch.ones(4, 11), "time_feat": torch.zeros(4, 9, 0),
             "known": torch.zeros(4, 9, 0), "past_prev": torch.zeros(4, 9, 0), "cluster": torch.tensor([0, 1, 0, 1])}
    flat = FlatGradients.attach(list(ours.parameters()))
    ours_opt, theirs_opt = torch.optim.Adam(ours.parameters(), lr=0.1), torch.optim.Adam(theirs.parameters(), lr=0.1)
    for step in range(3):
        if step == 1:
            next(ours.parameters()).grad = None  # something dropped a gradient: zero_ puts the view back
        flat.zero_()
        assert flat.intact()
        ours.loss(batch).backward()
        flat.clip_norm_(0.05)  # far below the raw norm, so the clipping is exercised
        ours_opt.step()
        theirs_opt.zero_grad()
        theirs.loss(batch).backward()
        assert float(torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.05)) > 0.05
        theirs_opt.step()
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.linalg.vector_norm(flat.buffer) == pytest.approx(0.05, rel=1e-4)
    next(ours.parameters()).grad = torch.zeros_like(next(ours.parameters()))
    assert not flat.intact()  # the Lightning hook then falls back to Lightning's own clipping
    assert FlatGradients.attach([torch.zeros(2), torch.zeros(2, dtype=torch.float64)]) is None


def test_the_dropout_mask_drops_p_of_the_elements_independently():
    from forecasting.model import dropout_mask

    torch.manual_seed(0)
    like = torch.empty(144, 32, 41)  # not a multiple of 4 elements
    dropped, p = dropout_mask(like, 0.1)
    assert dropped.shape == like.shape and dropped.dtype == torch.bool
    assert p == round(0.1 * 65536) / 65536
    many = torch.cat([dropout_mask(like, 0.1)[0].flatten() for _ in range(20)]).float()
    assert float(many.mean()) == pytest.approx(p, abs=0.002)
    # Neighbouring elements (which share a 64-bit draw) are independent.
    pairs = many.view(-1, 2)
    assert float((pairs[:, 0] * pairs[:, 1]).mean()) == pytest.approx(p * p, abs=0.001)
    assert not dropout_mask(like, 1e-9)[0].any()
    assert dropout_mask(like, 0.999999)[1] < 1.0
