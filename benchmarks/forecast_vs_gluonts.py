"""Our DeepAR against GluonTS's torch DeepAR on M4 hourly, side by side in one process.

    python benchmarks/forecast_vs_gluonts.py            # the real comparison (~20-25 min on 2 cores)
    python benchmarks/forecast_vs_gluonts.py --quick    # a few minutes

Both models: 2 layers × 40 units (GluonTS's default), the same context length, batch size, number
of gradient steps and CPU threads; then 100 sample paths for the 414 series × 48 steps of the M4
test split. The *bound* is a bare `nn.LSTM` of the same size with its defaults (time-major, dropout
0.1 as ours): forward + backward on random tensors of the same batch and sequence length
(training), and stepping as many paths × steps (prediction, as many paths at a time as our
predictor: `CPU_PATHS_PER_BATCH`) with no features and no sampling. `predict_vs_bound` holds ours
to that bound stepping its batches one after another with all threads; ours runs its batches in
parallel one-core streams (see `DeepARPredictor.predict`), so the bound run the same way is
reported too (`bound_streams_predict_s`, `predict_vs_streams_bound`), as is the all-at-once
figure (`bound_all_paths_predict_s`). Throughput is measured in interleaved rounds
(ours, GluonTS, GluonTS with cache_data, bound) and the medians are reported; accuracy is the median
over full-length fits with seeds 0, 1, 2 of each (`--seeds`; each seed's score is in the JSON too).
Both use a 96-step context (GluonTS's default is the 48-step horizon;
ours overfits M4 through its cluster embedding with 48, see forecasting/seasonality.py and the note
in the README). Each trains with its own defaults otherwise: ours decays the learning rate along a
cosine and keeps the last weights, GluonTS halves it on a plateau. Besides the equal-budget pair,
the default run also trains our *tuned* M4 config (`configs/m4-hourly.yaml`: the same network, an
ensemble of 4 seeds) and reports its accuracy and fit time (`ours_tuned_*`). The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from forecasting.baselines import GluonTSDeepAR, SeasonalNaive
from forecasting.datasets import load_dataset
from forecasting.estimator import DeepARConfig, DeepARForecaster
from forecasting.metrics import interval_coverage, mean_weighted_quantile_loss
from forecasting.predictor import CPU_PATHS_PER_BATCH, in_parallel_streams

HORIZON, SAMPLES, BATCH, HIDDEN, LAYERS, BATCHES_PER_EPOCH = 48, 100, 32, 40, 2, 50


def ours(context: int, steps: int, threads: int, seed: int = 0) -> DeepARForecaster:
    return DeepARForecaster(DeepARConfig(
        prediction_length=HORIZON, context_length=context, hidden_size=HIDDEN, num_layers=LAYERS,
        batch_size=BATCH, batches_per_epoch=BATCHES_PER_EPOCH, max_epochs=max(1, steps // BATCHES_PER_EPOCH),
        patience=0, validate=False, num_threads=threads, seed=seed, accelerator="cpu", devices=1))


def gluonts(context: int, steps: int, threads: int, cache: bool, seed: int = 0) -> GluonTSDeepAR:
    return GluonTSDeepAR(HORIZON, context_length=context, num_layers=LAYERS, hidden_size=HIDDEN, batch_size=BATCH,
                         num_batches_per_epoch=BATCHES_PER_EPOCH, max_epochs=max(1, steps // BATCHES_PER_EPOCH),
                         cache_data=cache, num_threads=threads, seed=seed)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bound_lstm(input_size: int) -> torch.nn.LSTM:
    """nn.LSTM with its defaults: time-major ([steps, batch, inputs]), the layout its kernels use."""
    return torch.nn.LSTM(input_size, HIDDEN, LAYERS, dropout=0.1)


def bound_train_seconds(input_size: int, seq_len: int, steps: int) -> float:
    lstm = bound_lstm(input_size)
    optimiser = torch.optim.Adam(lstm.parameters(), lr=1e-3)
    x = torch.randn(seq_len, BATCH, input_size)
    target = torch.randn(seq_len, BATCH, HIDDEN)

    def run() -> None:
        for _ in range(steps):
            out, _ = lstm(x)
            loss = torch.nn.functional.mse_loss(out, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    return timed(run)


def bound_predict_seconds(input_size: int, paths: int, context: int, paths_per_batch: int,
                          streams: int = 1) -> float:
    """Encode the context once for every series, then step `paths` rows through the horizon, as
    many rows at a time as our predictor steps together (`paths_per_batch`, whole series). With
    `streams` > 1 the batches are shared among that many threads of one intra-op thread each, as
    our predictor does (each with its own LSTM copy)."""
    lstm = bound_lstm(input_size).eval()
    series = paths // SAMPLES
    per_batch = max(1, paths_per_batch // SAMPLES)
    starts = list(range(0, series, per_batch))

    def run_batch(index: int, own: Sequence[torch.nn.Module]) -> torch.Tensor:
        n = min(per_batch, series - starts[index])
        with torch.inference_mode():
            _, (h, c) = own[0](torch.randn(context, n, input_size))
            h, c = h.repeat_interleave(SAMPLES, 1), c.repeat_interleave(SAMPLES, 1)
            x = torch.randn(1, n * SAMPLES, input_size)
            for _ in range(HORIZON):
                out, (h, c) = own[0](x, (h, c))
        return out

    if streams == 1:
        return timed(lambda: [run_batch(index, [lstm]) for index in range(len(starts))])
    # The predictor's own scheduler: one-core threads, each with its own copy of the LSTM.
    return timed(lambda: in_parallel_streams(run_batch, len(starts), [lstm], streams))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run: fewer steps and rounds")
    parser.add_argument("--steps", type=int, help="gradient steps of the accuracy fits (default 5000; quick 500)")
    parser.add_argument("--speed-steps", type=int, help="steps per throughput round (default 300; quick 100)")
    parser.add_argument("--rounds", type=int, help="throughput rounds (default 3; quick 1)")
    parser.add_argument("--context", type=int, default=2 * HORIZON, help="context length of both models")
    parser.add_argument("--no-tuned", action="store_true", help="skip the tuned-config fit (default: on unless --quick)")
    parser.add_argument("--seeds", type=int, help="full accuracy fits of each model, compared by the median "
                                                  "(default 3; quick 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    steps = args.steps or (500 if args.quick else 5000)
    speed_steps = args.speed_steps or (100 if args.quick else 300)
    rounds = args.rounds or (1 if args.quick else 3)
    args.seeds = args.seeds or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)

    dataset = load_dataset("m4_hourly", args.data_dir)
    history, actuals = dataset.panel.cut(HORIZON), dataset.panel.actuals(HORIZON)
    seq_len = args.context + HORIZON
    # What our network reads per step (its configured input layer), for the bound's LSTM.
    input_size = ours(args.context, 1, args.threads).network_config(history).input_size
    log = lambda *parts: print(*parts, file=sys.stderr, flush=True)  # noqa: E731

    # Warm-up: imports (Lightning, GluonTS) and first-call costs stay out of the timed rounds.
    ours(args.context, 5, args.threads).fit(history)
    gluonts(args.context, 5, args.threads, cache=True).fit(history)
    bound_train_seconds(input_size, seq_len, 5)

    # Throughput: interleaved rounds so that machine noise hits every contender alike.
    speed: dict[str, list[float]] = {"ours": [], "gluonts": [], "gluonts_cached": [], "bound": []}
    for r in range(rounds):
        samples = speed_steps * BATCH
        speed["ours"].append(samples / timed(lambda: ours(args.context, speed_steps, args.threads).fit(history)))
        speed["gluonts"].append(samples / timed(
            lambda: gluonts(args.context, speed_steps, args.threads, cache=False).fit(history)))
        speed["gluonts_cached"].append(samples / timed(
            lambda: gluonts(args.context, speed_steps, args.threads, cache=True).fit(history)))
        speed["bound"].append(samples / bound_train_seconds(input_size, seq_len, speed_steps))
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in speed.items()))
    sps = {k: statistics.median(v) for k, v in speed.items()}

    # Accuracy at an equal budget: a full fit of each per seed (one seed's score swings by more than
    # the gap between the two models), compared by the median. Seed 0's models are also timed predicting.
    log(f"accuracy fits: {steps} steps of batch {BATCH}, seeds {list(range(args.seeds))}")
    scores: dict[str, list[tuple[float, float]]] = {"ours": [], "gluonts": []}
    fit_s: dict[str, list[float]] = {"ours": [], "gluonts": []}
    first: dict = {}  # seed 0's models
    for seed in range(args.seeds):
        for name, model in (("ours", ours(args.context, steps, args.threads, seed)),
                            ("gluonts", gluonts(args.context, steps, args.threads, cache=False, seed=seed))):
            fit_s[name].append(timed(lambda model=model: model.fit(history)))
            forecast = model.predict(history, HORIZON, SAMPLES)
            scores[name].append((mean_weighted_quantile_loss(forecast, actuals), interval_coverage(forecast, actuals, 0.9)))
            first.setdefault(name, model)
        log(f"seed {seed}: ours wQL {scores['ours'][-1][0]:.4f}, GluonTS wQL {scores['gluonts'][-1][0]:.4f}")

    our_model, peer = first["ours"], first["gluonts"]
    predict_times: dict[str, list[float]] = {"ours": [], "gluonts": [], "bound": [], "bound_all_paths": [],
                                             "bound_streams": []}
    paths = len(history.cluster_ids) * SAMPLES
    for _ in range(rounds):
        predict_times["ours"].append(timed(lambda: our_model.predict(history, HORIZON, SAMPLES)))
        predict_times["gluonts"].append(timed(lambda: peer.predict(history, HORIZON, SAMPLES)))
        predict_times["bound"].append(bound_predict_seconds(input_size, paths, args.context, CPU_PATHS_PER_BATCH))
        # The bound as first written: every path in one batch (slower on a CPU: see CPU_PATHS_PER_BATCH).
        predict_times["bound_all_paths"].append(bound_predict_seconds(input_size, paths, args.context, paths))
        # The bound run the way our predictor runs on a CPU: its batches in parallel one-core streams.
        predict_times["bound_streams"].append(
            bound_predict_seconds(input_size, paths, args.context, CPU_PATHS_PER_BATCH, streams=args.threads))
    predict_s = {k: statistics.median(v) for k, v in predict_times.items()}

    tuned = {}
    if not (args.quick or args.no_tuned):
        from pipelines.settings import PROJECT_ROOT, TrainConfig, load_config
        from pipelines.train import deepar_config

        log("tuned config: configs/m4-hourly.yaml")
        settings = load_config(PROJECT_ROOT / "configs" / "m4-hourly.yaml", TrainConfig)
        best = DeepARForecaster(deepar_config(settings), num_threads=args.threads, progress_bar=False)
        tuned_fit_s = timed(lambda: best.fit(history))
        tuned_forecast = best.predict(history, HORIZON, SAMPLES)
        tuned = {"ours_tuned_wql": round(mean_weighted_quantile_loss(tuned_forecast, actuals), 4),
                 "ours_tuned_cov90": round(interval_coverage(tuned_forecast, actuals, 0.9), 3),
                 "ours_tuned_fit_s": round(tuned_fit_s, 1),
                 "ours_tuned_ensemble": best.config.ensemble_size}

    naive = SeasonalNaive(24).predict(history, HORIZON)
    result = {
        "dataset": "m4_hourly",
        "series": len(history.cluster_ids),
        "steps": steps,
        "batch_size": BATCH,
        "context_length": args.context,
        "threads": args.threads,
        "rounds": rounds,
        "accuracy_seeds": args.seeds,
        "ours_wql": round(statistics.median(w for w, _ in scores["ours"]), 4),
        "gluonts_wql": round(statistics.median(w for w, _ in scores["gluonts"]), 4),
        "seasonal_naive_wql": round(mean_weighted_quantile_loss(naive, actuals), 4),
        "ours_cov90": round(statistics.median(c for _, c in scores["ours"]), 3),
        "gluonts_cov90": round(statistics.median(c for _, c in scores["gluonts"]), 3),
        "ours_wql_seeds": [round(w, 4) for w, _ in scores["ours"]],
        "gluonts_wql_seeds": [round(w, 4) for w, _ in scores["gluonts"]],
        "ours_train_samples_per_s": round(sps["ours"], 1),
        "gluonts_train_samples_per_s": round(sps["gluonts"], 1),
        "gluonts_cached_train_samples_per_s": round(sps["gluonts_cached"], 1),
        "bound_train_samples_per_s": round(sps["bound"], 1),
        "train_speedup": round(sps["ours"] / sps["gluonts"], 3),
        "train_speedup_vs_cached": round(sps["ours"] / sps["gluonts_cached"], 3),
        "train_vs_bound": round(sps["ours"] / sps["bound"], 3),
        "ours_fit_s": round(statistics.median(fit_s["ours"]), 1),
        "gluonts_fit_s": round(statistics.median(fit_s["gluonts"]), 1),
        "ours_predict_s": round(predict_s["ours"], 3),
        "gluonts_predict_s": round(predict_s["gluonts"], 3),
        "bound_predict_s": round(predict_s["bound"], 3),
        "predict_speedup": round(predict_s["gluonts"] / predict_s["ours"], 3),
        "predict_vs_bound": round(predict_s["bound"] / predict_s["ours"], 3),
        "predict_paths_per_batch": CPU_PATHS_PER_BATCH,
        "bound_all_paths_predict_s": round(predict_s["bound_all_paths"], 3),
        "predict_streams": args.threads,
        "bound_streams_predict_s": round(predict_s["bound_streams"], 3),
        "predict_vs_streams_bound": round(predict_s["bound_streams"] / predict_s["ours"], 3),
        **tuned,
        "speed_rounds": {k: [round(x, 1) for x in v] for k, v in speed.items()},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
