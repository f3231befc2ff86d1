"""GPU path check: train a few hundred steps on CUDA with bf16 mixed precision, print samples/s.

    python benchmarks/gpu_check.py [--steps 300] [--batch-size 256] [--precision bf16-mixed]

Never part of CI. Prints one JSON line last; exits 2 with a message when CUDA is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--clusters", type=int, default=200)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch; this check needs a GPU", file=sys.stderr)
        return 2
    from forecasting.estimator import DeepARConfig, DeepARForecaster
    from forecasting.synthetic import SyntheticSpec, generate_panel

    panel = generate_panel(SyntheticSpec(num_clusters=args.clusters, days=90, seed=0))
    batches = 50
    config = DeepARConfig(prediction_length=48, context_length=96, batch_size=args.batch_size,
                          batches_per_epoch=batches, max_epochs=max(1, args.steps // batches), patience=0,
                          accelerator="gpu", devices=1, precision=args.precision, validate=False)
    forecaster = DeepARForecaster(config).fit(panel)
    started = time.perf_counter()
    forecast = forecaster.predict(panel, 48, 100)
    predict_s = time.perf_counter() - started
    summary = forecaster.summary
    print(json.dumps({
        "device": torch.cuda.get_device_name(0),
        "precision": args.precision,
        "steps": summary.steps // args.batch_size,
        "batch_size": args.batch_size,
        "train_samples_per_s": round(summary.samples_per_second, 1),
        "predict_s_cpu_paths": round(predict_s, 3),
        "forecast_shape": list(forecast.samples.shape),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
