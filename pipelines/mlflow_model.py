"""The MLflow pyfunc wrapper around a saved predictor folder, so registry tools can serve it too.

shadowcast's own loader (`forecasting.predictor.load_predictor`) reads the folder straight from
the model's artifacts and does not need this class; it exists for `mlflow.pyfunc.load_model`.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema


class ShadowcastDPE(mlflow.pyfunc.PythonModel):
    """Input: a long-format panel (cluster_id, timestamp, demand, covariates). Params: `horizon`,
    `num_samples`, `seed`. Output: per cluster and step, the mean and quantiles."""

    def load_context(self, context: Any) -> None:
        from forecasting.predictor import DeepARPredictor

        self.predictor = DeepARPredictor.load(context.artifacts["predictor"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from forecasting.data import validate_panel

        params = params or {}
        meta = self.predictor.metadata
        panel = validate_panel(model_input, source="pyfunc input", freq=meta.network.freq,
                               known_covariates=meta.known.names, past_covariates=meta.past.names)
        forecast = self.predictor.predict(panel, int(params.get("horizon", meta.network.prediction_length)),
                                          int(params.get("num_samples", 100)), seed=int(params.get("seed", 0)))
        return forecast.to_frame()


def signature(known: tuple[str, ...], past: tuple[str, ...], quantile_columns: list[str]) -> ModelSignature:
    inputs = [ColSpec("string", "cluster_id"), ColSpec("datetime", "timestamp"), ColSpec("double", "demand")]
    inputs += [ColSpec("double", name) for name in (*known, *past)]
    outputs = [ColSpec("string", "cluster_id"), ColSpec("datetime", "timestamp"), ColSpec("double", "mean")]
    outputs += [ColSpec("double", name) for name in quantile_columns]
    params = ParamSchema([ParamSpec("horizon", "long", 48), ParamSpec("num_samples", "long", 100),
                          ParamSpec("seed", "long", 0)])
    return ModelSignature(Schema(inputs), Schema(outputs), params)


# Logged as "model from code": MLflow runs this file to build the model instead of unpickling one.
mlflow.models.set_model(ShadowcastDPE())
