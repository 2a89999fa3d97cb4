"""The warehouse HTTP API: an app factory with thin routes.

Routes check who calls and what was sent, then hand over to
:class:`~warehouse_mock.service.ShipmentService`. Every error, the framework's own 404,
405 and validation errors included, is answered as ``application/problem+json`` (see
:mod:`warehouse_mock.problems`). OpenAPI docs are served at ``/docs``.

Checks of ``POST /v1/shipments`` run in this order: bearer token (401), then
``Idempotency-Key`` (400), then the body (422). The body is read by the route itself, not
by FastAPI, so that an unauthenticated caller never learns anything about the body and so
that the idempotency fingerprint is taken from the JSON document as sent.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeVar, cast

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from warehouse_mock import problems
from warehouse_mock.faults import FaultInjector
from warehouse_mock.problems import ProblemError, problem_doc_responses, problem_response
from warehouse_mock.schemas import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    FaultConfig,
    Health,
    Shipment,
    ShipmentCreate,
    ShipmentList,
    Void,
    VoidCreate,
)
from warehouse_mock.service import (
    Clock,
    ShipmentService,
    legacy_token_scope,
    request_fingerprint,
    utc_now,
)
from warehouse_mock.settings import Settings
from warehouse_mock.storage import LegacyScopeError, ScopeMergeError, Storage

logger = logging.getLogger(__name__)

API_VERSION: Final = "1.1.0"
M = TypeVar("M", bound=BaseModel)

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`")


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a client (its id is its idempotency scope) or the admin."""

    role: Literal["client", "admin"]
    scope: str | None = None


def _service(request: Request) -> ShipmentService:
    return cast(ShipmentService, request.app.state.service)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Identify the caller by its bearer token; 401 when missing or unknown."""
    if credentials is None:
        raise ProblemError(
            problems.UNAUTHORIZED,
            "an 'Authorization: Bearer <token>' header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    settings = _service(request).settings
    token = credentials.credentials
    # Compare with every token (no early exit) so timing does not tell which one is near.
    matches = [
        client
        for client, tokens in settings.clients.items()
        for candidate in tokens
        if _same(token, candidate.get_secret_value())
    ]
    if matches:
        return Caller("client", matches[0])
    if _same(token, settings.admin_token.get_secret_value()):
        return Caller("admin")
    raise ProblemError(
        problems.UNAUTHORIZED,
        "the bearer token is not valid",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def require_client(caller: Annotated[Caller, Depends(authenticate)]) -> str:
    """A client token is required; returns its idempotency scope."""
    if caller.scope is None:
        raise ProblemError(problems.FORBIDDEN, "shipments are created with a client token")
    return caller.scope


def require_admin(caller: Annotated[Caller, Depends(authenticate)]) -> None:
    """The admin token is required."""
    if caller.role != "admin":
        raise ProblemError(problems.FORBIDDEN, "this endpoint needs the admin token")


def idempotency_key(request: Request) -> str:
    """The request's ``Idempotency-Key``; 400 when missing, repeated or malformed.

    Read from the raw headers rather than declared as a FastAPI header parameter, whose
    own check would answer a missing header with 422 instead of 400.
    """
    values = request.headers.getlist("idempotency-key")
    if not values:
        raise ProblemError(
            problems.MISSING_IDEMPOTENCY_KEY, "the Idempotency-Key header is required"
        )
    if len(values) > 1:
        raise ProblemError(
            problems.MISSING_IDEMPOTENCY_KEY, "send exactly one Idempotency-Key header"
        )
    value = values[0]
    if not (1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH) or not all(
        " " <= ch <= "~" for ch in value
    ):
        raise ProblemError(
            problems.MISSING_IDEMPOTENCY_KEY,
            f"the Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
            "characters",
        )
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: The largest request body read (a shipment is under 2 KiB); a larger one is refused, 413.
MAX_BODY_BYTES: Final = 64 * 1024
#: The deepest JSON nesting accepted (a shipment nests 2 levels).
MAX_JSON_DEPTH: Final = 16
#: The most validation errors listed in a 422 (the count says how many there were).
MAX_ERRORS: Final = 20


async def _bounded_body(request: Request) -> bytes:
    """The body, read up to :data:`MAX_BODY_BYTES`; 413 as soon as it is larger."""
    too_large = ProblemError(
        problems.BODY_TOO_LARGE, f"the request body is larger than {MAX_BODY_BYTES} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def _depth(document: Any) -> int:
    """How deep ``document`` nests (iteratively: no recursion for an attacker to exhaust)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                children = node.values() if isinstance(node, dict) else node
                stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse(raw: bytes, model: type[M]) -> tuple[Any, M]:
    """Parse and validate (in a worker thread: a large body must not stall the event loop)."""
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise ProblemError(
            problems.INVALID_REQUEST,
            f"the body is not valid JSON: {str(exc)[:200]}",
            errors=[{"loc": ["body"], "msg": str(exc)[:200], "type": "json_invalid"}],
        ) from None
    if _depth(document) > MAX_JSON_DEPTH:
        raise _too_deep()
    try:
        return document, model.model_validate(document)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False)
        ]
        raise _invalid(errors) from None


def _too_deep() -> ProblemError:
    detail = f"the body nests deeper than {MAX_JSON_DEPTH} levels"
    return ProblemError(
        problems.INVALID_REQUEST,
        detail,
        errors=[{"loc": ["body"], "msg": detail, "type": "json_too_deep"}],
    )


async def read_json_body(request: Request, model: type[M]) -> tuple[Any, M]:
    """Read (bounded), parse and validate the body; 413 if too large, 422 if invalid.

    Returns:
        The JSON document as sent (for fingerprints) and the validated model.
    """
    raw = await _bounded_body(request)
    return await run_in_threadpool(_parse, raw, model)


def _invalid(errors: list[dict[str, Any]]) -> ProblemError:
    shown = errors[:MAX_ERRORS]
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in shown)
    if len(errors) > len(shown):
        summary += f"; and {len(errors) - len(shown)} more error(s)"
    return ProblemError(problems.INVALID_REQUEST, summary or "invalid request", errors=shown)


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` with nested models inlined (for ``openapi_extra``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return cast(dict[str, Any], resolve(schema))


def _json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(model)}},
        }
    }


_IDEMPOTENCY_KEY_DOC: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "1-255 printable ASCII characters, the same on every retry of a request",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
        "pattern": "^[ -~]+$",
    },
}


ServiceDep = Annotated[ShipmentService, Depends(_service)]
ClientScope = Annotated[str, Depends(require_client)]
IdempotencyKey = Annotated[str, Depends(idempotency_key)]
AnyCaller = Annotated[Caller, Depends(authenticate)]
Admin = Annotated[None, Depends(require_admin)]

_AUTH_PROBLEMS = (problems.UNAUTHORIZED, problems.FORBIDDEN)

router = APIRouter()


@router.get("/healthz", tags=["health"], response_model=Health)
def healthz(service: ServiceDep) -> Health:
    """The service and its database answer."""
    try:
        service.storage.ping()
    except Exception as exc:
        logger.warning("health check: database unreachable: %s", exc)
        raise ProblemError(problems.SERVICE_UNAVAILABLE, "the database is unreachable") from None
    return Health()


@router.post(
    "/v1/shipments",
    tags=["shipments"],
    status_code=201,
    response_model=Shipment,
    responses=problem_doc_responses(
        problems.MISSING_IDEMPOTENCY_KEY,
        *_AUTH_PROBLEMS,
        problems.REQUEST_IN_FLIGHT,
        problems.INVALID_REQUEST,
        problems.IDEMPOTENCY_KEY_MISMATCH,
        problems.SKU_REFUSED,
        problems.KEY_VOIDED,
        problems.THROTTLED,
        problems.INTERNAL_ERROR,
        problems.SERVICE_UNAVAILABLE,
    ),
    openapi_extra={**_json_body_doc(ShipmentCreate), "parameters": [_IDEMPOTENCY_KEY_DOC]},
)
async def create_shipment(
    request: Request, scope: ClientScope, key: IdempotencyKey, service: ServiceDep
) -> Response:
    """Ship one order line, exactly once per ``Idempotency-Key``.

    Repeating the key with the same JSON body replays the stored answer with
    ``Idempotent-Replayed: true``; with another body it is a 422; while the first request
    is still in flight it is a 409; once the key is voided it is a 410, whatever the body.
    """
    document, payload = await read_json_body(request, ShipmentCreate)
    answer = await service.create_shipment(
        scope=scope,
        idempotency_key=key,
        request=payload,
        fingerprint=request_fingerprint(document),
    )
    headers = {"Location": f"/v1/shipments/{answer.shipment_id}"}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        answer.body,
        status_code=answer.status_code,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "/v1/voids",
    tags=["shipments"],
    response_model=Void,
    responses=problem_doc_responses(
        *_AUTH_PROBLEMS, problems.INVALID_REQUEST, problems.SERVICE_UNAVAILABLE
    ),
    openapi_extra=_json_body_doc(VoidCreate),
)
async def void_key(request: Request, scope: ClientScope, service: ServiceDep) -> Void:
    """Void an ``Idempotency-Key`` for good, and cancel the shipment made under it.

    Afterwards ``POST /v1/shipments`` with the key answers 410 ``/problems/key-voided``
    and creates nothing, also for a request that was in flight when the key was voided.
    Voiding again answers the first void's time and reason.
    """
    _, payload = await read_json_body(request, VoidCreate)
    return await service.void_key(
        scope=scope, idempotency_key=payload.idempotency_key, reason=payload.reason
    )


@router.get(
    "/v1/shipments",
    tags=["shipments"],
    response_model=ShipmentList,
    responses=problem_doc_responses(*_AUTH_PROBLEMS, problems.INVALID_REQUEST),
)
def list_shipments(
    caller: AnyCaller,
    service: ServiceDep,
    order_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    idempotency_key: Annotated[
        str | None, Query(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_LENGTH)
    ] = None,
) -> ShipmentList:
    """The caller's shipments of one order, or the one made under an ``Idempotency-Key``.

    A client sees only its own shipments; the admin token sees every client's. At least
    one of ``order_id`` and ``idempotency_key`` is required.
    """
    if order_id is None and idempotency_key is None:
        raise ProblemError(problems.INVALID_REQUEST, "give order_id or idempotency_key (or both)")
    shipments = service.find_shipments(
        scope=caller.scope, order_id=order_id, idempotency_key=idempotency_key
    )
    return ShipmentList(shipments=shipments)


@router.get(
    "/v1/shipments/{shipment_id}",
    tags=["shipments"],
    response_model=Shipment,
    responses=problem_doc_responses(*_AUTH_PROBLEMS, problems.NOT_FOUND),
)
def get_shipment(caller: AnyCaller, service: ServiceDep, shipment_id: str) -> Shipment:
    """One shipment by id: the caller's own (client token) or any (admin token)."""
    shipment = service.get_shipment(shipment_id, scope=caller.scope)
    if shipment is None:
        raise ProblemError(problems.NOT_FOUND, f"no shipment {shipment_id!r}")
    return shipment


@router.get(
    "/_admin/faults",
    tags=["admin"],
    response_model=FaultConfig,
    responses=problem_doc_responses(*_AUTH_PROBLEMS),
)
def get_faults(_admin: Admin, service: ServiceDep) -> FaultConfig:
    """The fault configuration in force in this process."""
    return service.faults.config


@router.put(
    "/_admin/faults",
    tags=["admin"],
    response_model=FaultConfig,
    responses=problem_doc_responses(*_AUTH_PROBLEMS, problems.INVALID_REQUEST),
    openapi_extra=_json_body_doc(FaultConfig),
)
async def put_faults(_admin: Admin, request: Request, service: ServiceDep) -> FaultConfig:
    """Replace the fault configuration of this process (omitted fields: no fault)."""
    _, config = await read_json_body(request, FaultConfig)
    service.faults.configure(config)
    logger.warning("faults configured: %s", config.model_dump_json())
    return config


@router.delete(
    "/_admin/faults",
    tags=["admin"],
    response_model=FaultConfig,
    responses=problem_doc_responses(*_AUTH_PROBLEMS),
)
def delete_faults(_admin: Admin, service: ServiceDep) -> FaultConfig:
    """Turn every fault off."""
    service.faults.reset()
    logger.info("faults reset")
    return service.faults.config


def _install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError) -> Response:
        return problem_response(exc.kind, exc.detail, headers=exc.headers, errors=exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        err = _invalid(errors)
        return problem_response(err.kind, err.detail, errors=err.errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        return problem_response(
            problems.kind_for_status(exc.status_code), str(exc.detail), headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(problems.INTERNAL_ERROR, "unexpected error")


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    """Build the warehouse app for ``settings``.

    The database engine is created here but connects only at startup, where the schema
    is migrated to the latest revision, rows of per-token scopes move to their client
    (or start-up fails naming them) and expired stored responses are purged.

    Args:
        settings: Validated settings.
        clock: Source of the current time (aware UTC).

    Returns:
        The ASGI app.
    """
    storage = Storage(settings.database_url)
    service = ShipmentService(
        settings=settings, storage=storage, faults=FaultInjector(settings.faults), clock=clock
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Keys were scoped per token before they were per client: move those rows over,
        # for the tokens accepted now and the retired ones.
        legacy_scopes = {
            legacy_token_scope(token.get_secret_value()): client
            for client, tokens in (*settings.clients.items(), *settings.retired_tokens.items())
            for token in tokens
        }
        try:
            await run_in_threadpool(
                storage.migrate, legacy_scopes, client_ids=tuple(settings.clients)
            )
        except (LegacyScopeError, ScopeMergeError) as exc:
            logger.error("the warehouse cannot start: %s", exc)
            storage.dispose()
            raise
        await run_in_threadpool(service.purge_expired)
        logger.info(
            "warehouse database ready: %s (stored responses kept %g h)",
            storage.engine.url.render_as_string(hide_password=True),
            settings.retention_hours,
        )
        try:
            yield
        finally:
            storage.dispose()

    app = FastAPI(
        title="Mock warehouse",
        version=API_VERSION,
        description=(
            "Ships order lines exactly once per `Idempotency-Key`, with fault injection "
            "for demos and tests. Errors are `application/problem+json`."
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.include_router(router)
    _install_problem_handlers(app)
    return app
