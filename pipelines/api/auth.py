"""FastAPI side of `pipelines.security`: who may call which route.

Mutating routes always need a key (`require_key`); read-only routes need one only when
`security.protect_reads` is on (`read_access`); health probes never do. Missing credentials are
401 (with `WWW-Authenticate: Bearer`), wrong ones 403. With no key hashes configured, mutating
routes are refused (403): a server started without keys is read-only, never open.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from pipelines.api.deps import Services, get_services

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (`shadowcast hash-key`).")
bearer_token = HTTPBearer(auto_error=False, description="The same key as a bearer token.")

AUTH_RESPONSES = {
    401: {"description": "No API key or bearer token was sent."},
    403: {"description": "The key is not valid (or no keys are configured for mutating routes)."},
}


def _check(services: Services, header_key: str | None, bearer: HTTPAuthorizationCredentials | None) -> None:
    if not services.keys.configured:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "this server has no API keys configured (security.api_key_hashes), so it refuses "
                            "every protected route; add a hash made with `shadowcast hash-key`")
    key = header_key or (bearer.credentials if bearer else None)
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "send an API key as `X-API-Key` or `Authorization: Bearer`",
                            headers={"WWW-Authenticate": "Bearer"})
    if not services.keys.verify(key):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the API key is not valid")


def require_key(services: Services = Depends(get_services), header_key: str | None = Security(api_key_header),
                bearer: HTTPAuthorizationCredentials | None = Security(bearer_token)) -> None:
    _check(services, header_key, bearer)


def read_access(services: Services = Depends(get_services), header_key: str | None = Security(api_key_header),
                bearer: HTTPAuthorizationCredentials | None = Security(bearer_token)) -> None:
    if services.settings.security.protect_reads:
        _check(services, header_key, bearer)


# Route keyword sets: `@router.post(path, **WRITE)`. The `x-access` mark in the schema is how
# `describe_open_reads` finds read routes (FastAPI mounts routers lazily, so the dependency
# itself is not visible from the app's route list).
READ = {"dependencies": [Depends(read_access)], "openapi_extra": {"x-access": "read"}}
WRITE = {"dependencies": [Depends(require_key)], "openapi_extra": {"x-access": "write"}}


def describe_open_reads(app: FastAPI) -> None:
    """Make the OpenAPI schema tell the truth about *this* server: when reads are open, read-only
    routes declare no security requirement (clients and generated tests then need no key)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()  # FastAPI caches this same dict, so editing it in place sticks
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict) and operation.get("x-access") == "read":
                    operation.pop("security", None)
        return schema

    app.openapi = openapi
