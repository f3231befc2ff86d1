"""Telling clients before their traffic moves: a server-sent event stream and webhook registration.

The runtime's `Notifier` holds subscribers and webhooks; a switchover waits (up to
`runtime.notify_timeout_s`) until each stream has taken its "upcoming" event before redirecting.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from fastapi.responses import StreamingResponse

from pipelines.api.auth import AUTH_RESPONSES, READ, WRITE
from pipelines.api.errors import VALIDATION_RESPONSES
from pipelines.api.runtime import Runtime
from pipelines.api.schemas import WebhookOut, WebhookRequest
from pipelines.api.switchovers import NO_RUNTIME, get_runtime

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])
KEEPALIVE_S = 15.0


@router.get("", **READ, summary="Server-sent events: one `switchover` event per phase change that clients must know.",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream."},
                       **AUTH_RESPONSES, **NO_RUNTIME})
def events(cluster_id: str | None = Query(None, min_length=1, max_length=256, description="Only this cluster."),
           runtime: Runtime = Depends(get_runtime)) -> StreamingResponse:
    broadcaster = runtime.notifier.sse
    subscription = broadcaster.subscribe(cluster_id)

    def frames() -> Iterator[bytes]:
        try:
            for frame in subscription.stream(keepalive_s=KEEPALIVE_S):
                yield frame
                if frame.startswith(b"id:"):  # handed to the server to write: the notifier may go on
                    subscription.mark_written(broadcaster)
        finally:  # the client went away (or the server stops)
            broadcaster.unsubscribe(subscription)

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/webhooks", response_model=list[WebhookOut], **READ, summary="Registered webhooks.",
            responses={**AUTH_RESPONSES, **NO_RUNTIME})
def webhooks(runtime: Runtime = Depends(get_runtime)) -> list[WebhookOut]:
    return [WebhookOut(id=h.id, url=h.url, cluster_id=h.cluster_id) for h in runtime.notifier.webhooks()]


@router.post("/webhooks", response_model=WebhookOut, status_code=status.HTTP_201_CREATED, **WRITE,
             summary="Register a URL that gets each notice as a JSON POST (registering twice is harmless).",
             responses={**VALIDATION_RESPONSES, **AUTH_RESPONSES, **NO_RUNTIME})
def register_webhook(request: WebhookRequest, runtime: Runtime = Depends(get_runtime)) -> WebhookOut:
    try:
        hook = runtime.notifier.register_webhook(request.url, request.cluster_id)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["body", "url"], "msg": str(exc), "type": "value_error"}]) from None
    return WebhookOut(id=hook.id, url=hook.url, cluster_id=hook.cluster_id)


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, **WRITE, response_class=Response,
               summary="Stop sending notices to a webhook.", responses={**AUTH_RESPONSES, **NO_RUNTIME})
def unregister_webhook(webhook_id: str = Path(min_length=1, max_length=64),
                       runtime: Runtime = Depends(get_runtime)) -> Response:
    try:
        runtime.notifier.unregister_webhook(webhook_id)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id!r}") from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
