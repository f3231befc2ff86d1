"""Error responses: bad input is a 422 naming the field, a missing model a 503, and anything
unexpected a 500 that says only "internal error" (the traceback goes to the log, never the client)."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipelines.api.forecast_service import RequestError
from pipelines.api.model_holder import ModelNotReady

log = logging.getLogger("shadowcast.serve")

VALIDATION_RESPONSES = {422: {"description": "The request is invalid; `detail` names the field, cluster and row."}}
NOT_READY_RESPONSES = {503: {"description": "No model is loaded yet."}}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each bad `input` back; an infinite float there cannot even be
        # written as JSON (that would turn a 422 into a 500), and echoing megabytes helps nobody.
        items = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": items}, status_code=422)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": [exc.as_item()]}, status_code=422)

    @app.exception_handler(ModelNotReady)
    async def _not_ready(request: Request, exc: ModelNotReady) -> JSONResponse:
        return JSONResponse({"detail": f"no model is being served yet: {exc}"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s %s", incident, request.method, request.url.path)
        return JSONResponse({"detail": f"internal error (incident {incident}; see the server log)"}, status_code=500)
