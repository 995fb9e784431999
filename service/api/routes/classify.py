"""POST /classify: an uploaded image in, the defended model's prediction out.

One handler, ``serve``, a plain ASGI call: the app calls it straight away
(``fast_routes``, ``service.app.ServiceApp``), in front of FastAPI's error, telemetry and
body-limit layers, routing and dependency solving (about 6% of a request's event-loop
time in py-spy's samples). The router holds it as a plain Starlette route too (so a
wrong method is a 405 naming POST, and a request the app does not match still arrives),
and ``document`` writes its operation into the OpenAPI document, which FastAPI fills
only from its own routes. ``serve_express`` answers a request that arrived whole straight
from the connection layer (``service.api.express``); both share every step after the body.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.api.admission import admitted
from service.api.auth import holds_admin_token
from service.api.error_handlers import service_error_response, validation_error_response
from service.api.query import check_query
from service.api.schemas import ClassifyResponse, error_responses
from service.edge.body import Reservation, image_upload_arrived, read_image_upload
from service.edge.clients import client_address
from service.edge.express import Answer, ExpressRequest
from service.errors import NotReady, ServiceError
from service.inference.pool import ClassifierPool
from service.sanitize.upload import Upload

router = APIRouter(tags=["classify"])

SUMMARY = "Classify an image (raw body or multipart 'file')"
# The body is read by the service's own bounded reader; the document says what it looks like.
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


class ClassifyQuery(BaseModel):
    """The query parameters of ``POST /classify`` (any other is refused, 400)."""

    model: str | None = Field(None, max_length=128, description="loaded model name")
    include_quantized: bool = Field(
        False, description="also return the quantized image the model saw (PNG, base64)"
    )
    include_input: bool = Field(
        False,
        description="also return the image as the model's input, after decoding, "
        "resizing and scaling to [0, 1], before quantization (PNG, base64)",
    )


async def serve(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /classify`` as a plain ASGI call (see the module's docstring)."""
    answer = await _respond(Request(scope, receive), None)
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
    await send({"type": "http.response.body", "body": answer.body})


async def serve_express(app: Any, incoming: ExpressRequest) -> Answer:
    """``POST /classify`` as an express request (``service.api.express``): the same answer
    as ``serve`` gives, for a request that has all arrived."""
    scope = {
        "type": "http",
        "app": app,
        "method": incoming.method,
        "path": "/classify",
        "query_string": incoming.query,
        "headers": incoming.headers,
        "client": incoming.client,
    }
    return await _respond(Request(scope), incoming.body)


async def _respond(request: Request, arrived: bytes | None) -> Answer:
    """The answer to ``request``, whose body has ``arrived`` or is still to be read."""
    try:
        try:
            query = _parse_query(request.scope["query_string"])
        except ValidationError as exc:
            errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
            return Answer.of(validation_error_response(request, errors))
        pool: ClassifierPool | None = request.app.state.pool
        if pool is None:
            raise NotReady("the model pool has not been loaded yet")
        body = await _classify(pool, request, query, arrived)
        return _json_answer(body)
    except ServiceError as exc:
        retry_after = request.app.state.settings.retry_after_seconds
        return Answer.of(service_error_response(request, exc, retry_after))


_NO_QUERY = ClassifyQuery()


def _parse_query(raw: bytes) -> ClassifyQuery:
    """The query string as ``ClassifyQuery``: 400 for a name it lacks, pydantic's error for
    a bad value. Most requests have none, and share one instance (it is never changed)."""
    if not raw:
        return _NO_QUERY
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    check_query((name for name, _ in pairs), ClassifyQuery.model_fields)
    return ClassifyQuery.model_validate(dict(pairs))


async def _classify(
    pool: ClassifierPool, request: Request, query: ClassifyQuery, arrived: bytes | None
) -> dict:
    classifier = pool.get(query.model)
    settings = pool.settings

    async def read(reservation: Reservation) -> Upload:
        anonymous = not holds_admin_token(request)
        with classifier.upstream_slot():  # the batcher may wait for a body on its way
            if arrived is not None:
                return image_upload_arrived(
                    request,
                    arrived,
                    settings.max_body_bytes,
                    reservation=reservation,
                    anonymous=anonymous,
                )
            return await read_image_upload(
                request,
                settings.max_body_bytes,
                settings.body_read_timeout_seconds,
                min_rate=settings.body_min_rate_bytes_per_second,
                grace_seconds=settings.body_min_rate_grace_seconds,
                reservation=reservation,
                anonymous=anonymous,
            )

    async with admitted(pool, read, client_address(request.scope)) as upload:
        return await classifier.classify(upload, query.include_quantized, query.include_input)


def _json_answer(body: dict) -> Answer:
    """The answer's JSON, encoded by orjson: 1.3 us against the standard library's 19 us
    on a typical answer here, on the event loop. orjson would write NaN and infinity as
    null (``Classifier.encode`` refuses them first) and keeps non-ASCII text as UTF-8, as
    the other routes' JSON does. The headers are Starlette's ``JSONResponse``'s, in its
    order, without building one."""
    content = orjson.dumps(body)
    headers = [(b"content-length", b"%d" % len(content)), _JSON_TYPE]
    if body["warnings"]:
        codes = ", ".join(warning["code"] for warning in body["warnings"])
        headers.insert(0, (_WARNING_NAME, codes.encode("latin-1")))
    return Answer(200, headers, content)


# Names the warnings of an answer (``service.inference.fit``), for clients that read headers.
WARNING_HEADER = "QuSec-Input-Warning"
_WARNING_NAME = WARNING_HEADER.lower().encode("latin-1")
_JSON_TYPE = (b"content-type", b"application/json")


class _Endpoint:
    """``serve`` as an ASGI app (Starlette would wrap a plain function as a request handler)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(scope, receive, send)


router.routes.append(Route("/classify", endpoint=_Endpoint(), methods=["POST"], name="classify"))


def document(openapi: dict[str, Any]) -> None:
    """Write ``POST /classify`` into ``openapi``, as FastAPI would for a route of its own."""
    parameters = []
    for name, schema in ClassifyQuery.model_json_schema()["properties"].items():
        # As FastAPI writes it: a default of None (the parameter may be left out) goes unsaid.
        schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
        entry = {"name": name, "in": "query", "required": False, "schema": schema}
        parameters.append({**entry, "description": schema["description"]})
    _, definitions = models_json_schema(
        [(ClassifyResponse, "serialization")], ref_template="#/components/schemas/{model}"
    )
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in definitions["$defs"].items():
        # FastAPI's own version wins where another route already put the model there.
        components.setdefault(name, _without_null_defaults(schema))
    warning = {
        "description": "the codes of the answer's warnings, when it has any",
        "schema": {"type": "string"},
    }
    responses: dict[str, Any] = {
        "200": {
            "description": "Successful Response",
            "headers": {WARNING_HEADER: warning},
            "content": _json("ClassifyResponse"),
        }
    }
    for status, entry in error_responses(400, 404, 408, 413, 415, 422, 429, 503, 504).items():
        extra = {"headers": entry["headers"]} if "headers" in entry else {}
        responses[str(status)] = {
            "description": entry["description"],
            **extra,
            "content": _json(entry["model"].__name__),
        }
    operation = {
        "tags": ["classify"],
        "summary": SUMMARY,
        "operationId": "classify_classify_post",
        "parameters": parameters,
        "responses": responses,
        **_BODY_DOC,
    }
    openapi.setdefault("paths", {})["/classify"] = {"post": operation}


def _without_null_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's schema as FastAPI writes a response's: no ``"default": null`` on its fields."""
    properties = {
        name: {k: v for k, v in field.items() if not (k == "default" and v is None)}
        for name, field in schema.get("properties", {}).items()
    }
    return {**schema, "properties": properties} if properties else schema


def _json(component: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}}
