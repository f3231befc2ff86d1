"""The served model and how it is swapped without dropping a request.

`ModelHolder.current` is one attribute holding an immutable `LoadedModel`. A request reads it
once and uses that object to the end, so a swap (one attribute assignment, atomic in CPython)
never changes the model under a request in flight, and the old model is freed when the last
request holding it returns. Loading happens beside the serving threads (a reload route or the
periodic alias check run it in a worker thread), so requests keep being answered meanwhile.

A location is a model folder or an MLflow URI. With a registry alias
(`models:/shadowcast-dpe@champion`) the holder first resolves the alias to a version and loads
that exact version, so the version reported is the one actually served even if the alias moves
during the download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("shadowcast.serve")

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


class ModelNotReady(RuntimeError):
    """No model has been loaded yet (or the first load failed)."""


@dataclass(frozen=True)
class Resolved:
    uri: str  # exact thing to load: a folder, `models:/name/<version>`, `runs:/…`
    version: str  # registry version, or `sha256:<12 hex>` of a folder's files


@dataclass(frozen=True)
class LoadedModel:
    predictor: Any  # forecasting.predictor.DeepARPredictor (or anything with .predict/.metadata)
    location: str  # what the settings asked for
    resolved: Resolved
    loaded_at: float  # wall-clock seconds
    # torch's recurrent modules are not safe to run from several threads at once (the LSTM
    # re-checks its flat weight list on every call; two threads race on it and fail), so one
    # model samples for one request at a time. Sampling already uses every core inside torch.
    _sampling: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def version(self) -> str:
        return self.resolved.version

    def predict(self, panel: Any, horizon: int, num_samples: int, seed: int) -> Any:
        with self._sampling:
            return self.predictor.predict(panel, horizon, num_samples, seed=seed)


class ModelLoader(Protocol):
    def resolve(self, location: str) -> Resolved: ...

    def load(self, resolved: Resolved) -> Any: ...


class RegistryLoader:
    """Loads shadowcast predictors from folders and from the MLflow registry (torch-only path)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self._tracking_uri = tracking_uri

    def resolve(self, location: str) -> Resolved:
        match = _REGISTRY_URI.match(location)
        if match and match["alias"]:
            client = self._client()
            version = client.get_model_version_by_alias(match["name"], match["alias"]).version
            return Resolved(f"models:/{match['name']}/{version}", str(version))
        if match:
            return Resolved(location, match["version"])
        if "://" in location or ":/" in location:  # runs:/…, s3://…: immutable, the URI is the version
            return Resolved(location, location)
        return Resolved(location, f"sha256:{_folder_fingerprint(Path(location))}")

    def load(self, resolved: Resolved) -> Any:
        from forecasting.predictor import DeepARPredictor

        if "://" not in resolved.uri and ":/" not in resolved.uri:
            return DeepARPredictor.load(resolved.uri)
        import mlflow

        # Download into a folder we delete once the weights are in memory (reloads would pile up otherwise).
        staging = tempfile.mkdtemp(prefix="shadowcast-model-")
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=resolved.uri, dst_path=staging,
                                                             tracking_uri=self._uri()))
            from forecasting.predictor import MODEL_FILE

            found = sorted(local.rglob(MODEL_FILE), key=lambda p: len(p.parts))
            if not found:
                raise FileNotFoundError(f"{resolved.uri}: holds no shadowcast model ({MODEL_FILE})")
            return DeepARPredictor.load(found[0].parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _uri(self) -> str:
        from pipelines.tracking import tracking_uri

        return tracking_uri(self._tracking_uri)

    def _client(self) -> Any:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self._uri(), registry_uri=self._uri())


@dataclass(frozen=True)
class ReloadResult:
    changed: bool
    previous_version: str | None
    version: str


class ModelHolder:
    """The current model, swapped atomically; at most one load runs at a time."""

    def __init__(self, location: str, loader: ModelLoader,
                 on_swap: Callable[[LoadedModel], None] = lambda model: None) -> None:
        self.location = location
        self._loader = loader
        self._on_swap = on_swap
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedModel:
        model = self._current
        if model is None:
            raise ModelNotReady(self.last_error or "the model is still loading")
        return model

    @property
    def ready(self) -> bool:
        return self._current is not None

    def reload(self, location: str | None = None, *, force: bool = False) -> ReloadResult:
        """Resolve `location` (default: the configured one), load it unless it is the version
        already served (or `force`), then swap. Blocking: call it from a worker thread."""
        with self._load_lock:
            target = location or self.location
            previous = self._current
            try:
                resolved = self._loader.resolve(target)
                if previous is not None and not force and resolved == previous.resolved:
                    return ReloadResult(False, previous.version, previous.version)
                started = time.perf_counter()
                model = LoadedModel(self._loader.load(resolved), target, resolved, time.time())
            except Exception as exc:
                self.last_error = f"loading {target}: {exc}"
                raise
            self._current = model  # the swap: one reference assignment
            self.location = target
            self.last_error = None
            self._on_swap(model)
            log.info("serving model %s (version %s), loaded in %.2f s", resolved.uri, resolved.version,
                     time.perf_counter() - started)
            return ReloadResult(True, previous.version if previous else None, model.version)


def _folder_fingerprint(folder: Path) -> str:
    from forecasting.predictor import MODEL_FILE, WEIGHTS_FILE

    digest = hashlib.sha256()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(f"{folder}: not a shadowcast model folder (no {name})")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
