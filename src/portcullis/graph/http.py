"""GraphQL over HTTP (the GraphQL Foundation's spec) on the control plane: `/graphql`.

- `POST /graphql` with an `application/json` body `{query, operationName,
  variables, extensions}`; `GET /graphql?query=...` for queries only (a mutation
  over GET is 405 with `Allow: POST`).
- Responses are `application/graphql-response+json` when the client accepts it
  (then a request that fails before execution - unparseable, over a limit,
  invalid - is a 400, as the spec requires for that media type) and
  `application/json` otherwise (legacy clients: 200 with `errors`). An `Accept`
  that allows neither is 406.
- Authentication is REST's: `Authorization: Bearer <admin JWT or API token>`,
  checked before the body is read; 401 with `WWW-Authenticate` otherwise.
- Persisted documents (`services.graphql_documents`): `extensions.persistedQuery`
  names a stored document by its SHA-256 (Apollo's automatic persisted queries); a
  hash sent with its query registers the document once it passed the limits and
  validation. With trusted-documents-only, only an operator's documents run. Their
  refusals are request errors with `extensions.code` (`PERSISTED_QUERY_NOT_FOUND`
  404, `TRUSTED_DOCUMENT_REQUIRED` 403, ... for `application/graphql-response+json`;
  200 for legacy `application/json`).
- Before validation the document is held to the limits (`graph.limits`): size and
  tokens while parsing, then depth, aliases and cost on the fragment-expanded
  operation; a document over a limit never executes.
- A resolver's refusal (`ServiceError`) is a GraphQL error whose `extensions` carry
  REST's problem `type`, `status` and a `code`; anything unexpected is masked
  ("internal error", with the request id) and logged.
- Browsers (`Accept: text/html`) get GraphiQL, self-hosted; `/graphql/schema.graphql`
  serves the SDL (unless introspection is switched off).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

import structlog
from fastapi import Request
from fastapi.responses import PlainTextResponse, Response
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationType,
    get_operation_ast,
    specified_rules,
    validate,
)
from graphql import execute as graphql_execute
from graphql import subscribe as graphql_subscribe
from graphql.validation import NoSchemaIntrospectionCustomRule

from portcullis.graph.context import GraphContext, GraphDeps
from portcullis.graph.graphiql import graphiql_response, wants_graphiql
from portcullis.graph.limits import (
    DocumentLimits,
    LimitExceeded,
    check_limits,
    parse_within_limits,
)
from portcullis.graph.schema import graphql_schema, sdl
from portcullis.services.context import Operation, RequestFacts
from portcullis.services.errors import ServiceError
from portcullis.services.graphql_documents import (
    DocumentStore,
    PersistedQueries,
    PersistedQueryError,
    resolve_document,
)
from portcullis.services.rbac import Caller

log = structlog.get_logger("portcullis.graph")

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
MAX_VALIDATION_ERRORS = 20


@dataclass(frozen=True, slots=True)
class GraphOptions:
    limits: DocumentLimits = field(default_factory=DocumentLimits)
    introspection: bool = True
    persisted: PersistedQueries = field(default_factory=PersistedQueries)
    # Where persisted documents live; None: the store's table (shared by every node).
    documents: DocumentStore | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """An operation that passed every check before execution (`GraphEndpoint.prepare`)."""

    document: DocumentNode
    name: str | None
    variables: dict[str, Any] | None
    kind: OperationType
    context: GraphContext


class RequestError(Exception):
    """A GraphQL request refused before execution (the response has no `data`)."""

    def __init__(
        self,
        status: int,
        errors: list[dict[str, Any]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(errors[0]["message"] if errors else "request error")
        self.status = status
        self.errors = errors
        self.headers = dict(headers or {})


def _error(message: str, code: str, **extensions: Any) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code, **extensions}}


def _media_type(request: Request) -> str | None:
    """The response media type the client accepts (None: neither GraphQL one).

    No `Accept` (or `*/*`) gets `application/graphql-response+json`, as the spec
    recommends; an explicit `application/json` preference is honoured."""
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return GRAPHQL_RESPONSE
    best: tuple[float, int, str] | None = None
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        candidate = {
            GRAPHQL_RESPONSE: GRAPHQL_RESPONSE,
            JSON: JSON,
            "application/*": GRAPHQL_RESPONSE,
            "*/*": GRAPHQL_RESPONSE,
        }.get(media)
        if candidate is None or quality <= 0:
            continue
        # Higher quality first; at equal quality, the client's order.
        key = (quality, -position, candidate)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


def _respond(
    media: str, body: dict[str, Any], status: int, headers: Mapping[str, str] = {}
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type=media,
        headers={"cache-control": "no-store", **headers},
    )


async def _params(request: Request) -> dict[str, Any]:
    """The request's GraphQL parameters, from the query string (GET) or the JSON body."""
    if request.method == "GET":
        params: dict[str, Any] = {
            "query": request.query_params.get("query"),
            "operationName": request.query_params.get("operationName"),
        }
        for name in ("variables", "extensions"):
            raw = request.query_params.get(name)
            if raw is not None:
                try:
                    params[name] = json.loads(raw)
                except (ValueError, RecursionError) as exc:
                    raise RequestError(
                        400, [_error(f"'{name}' is not JSON", "BAD_REQUEST")]
                    ) from exc
        return params
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != JSON:
        raise RequestError(
            415,
            [_error("send the request as application/json", "UNSUPPORTED_MEDIA_TYPE")],
            {"accept": JSON},
        )
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise RequestError(400, [_error("the body is not JSON", "BAD_REQUEST")]) from exc
    except RecursionError as exc:
        raise RequestError(
            400, [_error("the body's JSON is nested too deeply", "BAD_REQUEST")]
        ) from exc
    if not isinstance(body, dict):
        raise RequestError(400, [_error("the body must be a JSON object", "BAD_REQUEST")])
    return body


def _checked(params: Mapping[str, Any]) -> tuple[str | None, str | None, dict[str, Any] | None]:
    query, name, variables = (
        params.get("query"),
        params.get("operationName"),
        params.get("variables"),
    )
    if query is not None and not isinstance(query, str):
        raise RequestError(400, [_error("'query' must be a string", "BAD_REQUEST")])
    if name is not None and not isinstance(name, str):
        raise RequestError(400, [_error("'operationName' must be a string", "BAD_REQUEST")])
    if variables is not None and not isinstance(variables, dict):
        raise RequestError(400, [_error("'variables' must be an object", "BAD_REQUEST")])
    extensions = params.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise RequestError(400, [_error("'extensions' must be an object", "BAD_REQUEST")])
    return query, name, variables


class GraphEndpoint:
    """The `/graphql` endpoint of one control-plane application."""

    def __init__(self, deps: GraphDeps, options: GraphOptions) -> None:
        self.deps = deps
        self.options = options
        self.schema = graphql_schema()
        rules = list(specified_rules)
        if not options.introspection:
            rules.append(NoSchemaIntrospectionCustomRule)
        self.rules = tuple(rules)

    async def handle(self, request: Request) -> Response:
        # Before negotiation: a browser's Accept also lists */*, which would pick JSON.
        if wants_graphiql(request):
            return await self.graphiql(request)
        media = _media_type(request)
        if media is None:
            return PlainTextResponse(f"accepts {GRAPHQL_RESPONSE} or {JSON}", status_code=406)
        try:
            prepared = await self.prepare_request(request, streaming=False)
            result = await self.execute(prepared)
        except RequestError as exc:
            return self.refusal(media, exc)
        body = self.response_body(result, prepared.context.facts)
        status = 200 if result.data is not None or media == JSON else 400
        return _respond(media, body, status)

    async def prepare_request(self, request: Request, *, streaming: bool) -> Prepared:
        """`prepare` for an HTTP request: authenticated, its parameters read."""
        caller = await self._authenticate(request)
        params = await _params(request)
        get = request.method == "GET"
        return await self.prepare(caller, _facts(request), params, get=get, streaming=streaming)

    def refusal(self, media: str, exc: RequestError) -> Response:
        """A request refused before execution, as a response of `media`."""
        # Legacy application/json: a well-formed request answers 200 even when its
        # document fails to parse or validate (the spec's rule for that media type).
        status = 200 if media == JSON and is_graphql_error(exc) else exc.status
        return _respond(media, {"errors": exc.errors}, status, exc.headers)

    async def prepare(
        self,
        caller: Caller,
        facts: RequestFacts,
        params: Mapping[str, Any],
        *,
        get: bool = False,
        streaming: bool = True,
    ) -> Prepared:
        """A request's operation, ready to run - the one path every transport (HTTP,
        graphql-transport-ws, graphql-sse) takes: persisted documents resolved, parsed
        within the limits, the operation chosen, limits on the expanded operation and
        validation; a `RequestError` otherwise. `get`: the request came as GET (queries
        only, or subscriptions when `streaming`); `streaming`: the transport can carry
        a subscription."""
        query, name, variables = _checked(params)
        text, to_register = await self._resolve(query, params.get("extensions"))
        document = self._prepare(text)
        operation = get_operation_ast(document, name)
        if operation is None:
            raise RequestError(
                400, [_error("name the operation to run (operationName)", "BAD_REQUEST")]
            )
        kind = operation.operation
        if kind is OperationType.SUBSCRIPTION and not streaming:
            raise RequestError(
                400,
                [
                    _error(
                        "subscriptions need a streaming transport: WebSocket "
                        "(graphql-transport-ws) or 'Accept: text/event-stream' (graphql-sse)",
                        "STREAMING_TRANSPORT_REQUIRED",
                    )
                ],
            )
        if get and kind is OperationType.MUTATION:
            raise RequestError(
                405,
                [_error("only queries may be sent with GET; use POST", "METHOD_NOT_ALLOWED")],
                {"allow": "POST"},
            )
        self._validate(document, name, variables)
        if to_register is not None:
            await self._register(text, Operation.for_caller(caller, facts, self.deps.state().audit))
        return Prepared(document, name, variables, kind, GraphContext(caller, facts, self.deps))

    def response_body(self, result: ExecutionResult, facts: RequestFacts) -> dict[str, Any]:
        """An execution result as the response (or `next` message) carries it."""
        body: dict[str, Any] = {}
        if result.errors:
            body["errors"] = [self._format(e, facts) for e in result.errors]
        body["data"] = result.data
        return body

    async def subscribe(
        self, prepared: Prepared
    ) -> AsyncIterator[ExecutionResult] | ExecutionResult:
        """Run an operation for a streaming transport: a subscription's results as they
        come, or the single result of a query, a mutation or a subscription refused
        before its stream opened (RBAC, bad arguments)."""
        if prepared.kind is not OperationType.SUBSCRIPTION:
            return await self.execute(prepared)
        outcome: AsyncIterator[ExecutionResult] | ExecutionResult = await self._run(
            graphql_subscribe, prepared
        )
        return outcome

    async def _authenticate(self, request: Request) -> Caller:
        caller = await self.authenticate(request.headers.get("authorization", ""))
        if caller is None:
            raise RequestError(
                401,
                [
                    _error(
                        "send 'Authorization: Bearer <token>' with a valid admin token",
                        "UNAUTHENTICATED",
                    )
                ],
                {"www-authenticate": 'Bearer realm="portcullis-admin"'},
            )
        return caller

    async def authenticate(self, authorization: str) -> Caller | None:
        """The caller an `Authorization` value (`Bearer <token>`) stands for, if any."""
        credential = bearer(authorization)
        return None if credential is None else await self.deps.authenticate(credential)

    def documents(self) -> DocumentStore:
        """The persisted documents: the given store, else the control plane's table."""
        if self.options.documents is not None:
            return self.options.documents
        engine = self.deps.state().engine
        cached = self.deps.caches.get("graphql_documents")
        if cached is None or cached[0] is not engine:
            cached = self.deps.caches["graphql_documents"] = (
                engine,
                self.options.persisted.store(engine),
            )
        store: DocumentStore = cached[1]
        return store

    async def _resolve(self, query: str | None, extensions: Any) -> tuple[str, str | None]:
        """The document text to run (from the query or the persisted documents), and
        the hash to register once it validated."""
        persisted = self.options.persisted
        try:
            return await resolve_document(
                query,
                extensions,
                self.documents(),
                trusted_only=persisted.trusted_only,
                apq_enabled=persisted.apq_enabled,
            )
        except PersistedQueryError as exc:
            raise RequestError(exc.status, [_error(exc.message, exc.code)]) from exc

    async def _register(self, text: str, operation: Operation) -> None:
        """Persist a validated document a client sent with its hash. A failure costs
        the client one more round trip (it sends the query again), never the request."""
        try:
            await self.documents().register(text, trusted=False, operation=operation)
        except Exception as exc:  # a cache write: the request goes on without it
            log.warning(
                "graphql.apq.register_failed",
                request_id=operation.facts.request_id,
                error=type(exc).__name__,
            )

    def _prepare(self, query: str) -> DocumentNode:
        """The document to run: parsed within the size and token limits."""
        try:
            return parse_within_limits(query, self.options.limits)
        except LimitExceeded as exc:
            raise RequestError(400, [_limit_error(exc)]) from exc
        except GraphQLError as exc:
            raise RequestError(
                400, [{**dict(exc.formatted), "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}]
            ) from exc

    def _validate(
        self, document: DocumentNode, name: str | None, variables: dict[str, Any] | None
    ) -> None:
        """Limits on the expanded operation, then the spec's validation rules."""
        try:
            check_limits(
                document,
                self.schema,
                self.options.limits,
                operation_name=name,
                variables=variables,
            )
        except LimitExceeded as exc:
            raise RequestError(400, [_limit_error(exc)]) from exc
        errors = validate(self.schema, document, self.rules, max_errors=MAX_VALIDATION_ERRORS)
        if errors:
            raise RequestError(
                400,
                [
                    {**dict(e.formatted), "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}
                    for e in errors
                ],
            )

    async def execute(self, prepared: Prepared) -> ExecutionResult:
        result = await self._run(graphql_execute, prepared)
        assert isinstance(result, ExecutionResult)
        return result

    async def _run(self, run: Callable[..., Any], prepared: Prepared) -> Any:
        """graphql-core's `execute` or `subscribe` on a prepared operation, awaited."""
        result = run(
            self.schema,
            prepared.document,
            context_value=prepared.context,
            variable_values=prepared.variables,
            operation_name=prepared.name,
        )
        return await result if isawaitable(result) else result

    def _format(self, error: GraphQLError, facts: RequestFacts) -> dict[str, Any]:
        original = error.original_error
        formatted: dict[str, Any] = dict(error.formatted)
        if isinstance(original, ServiceError):
            kind = original.kind
            formatted["extensions"] = {
                "code": kind.slug.replace("-", "_").upper(),
                "type": kind.type_uri,
                "status": kind.status,
                **original.members,
            }
            formatted["message"] = original.detail or kind.title
            return formatted
        if original is None and error.path is None and "extensions" not in formatted:
            # Raised before any field ran: a variable that does not fit its type.
            formatted["extensions"] = {"code": "BAD_USER_INPUT"}
            return formatted
        if original is not None and not isinstance(original, GraphQLError):
            log.error(
                "graphql.resolver_failed",
                request_id=facts.request_id,
                path=error.path,
                error=type(original).__name__,
                exc_info=original,
            )
            formatted["message"] = "internal error"
            formatted["extensions"] = {"code": "INTERNAL_ERROR", "request_id": facts.request_id}
        return formatted

    async def graphiql(self, request: Request) -> Response:
        return graphiql_response(request)

    async def schema_sdl(self, request: Request) -> Response:
        if not self.options.introspection:
            return PlainTextResponse("introspection is switched off", status_code=404)
        return PlainTextResponse(sdl(), media_type="application/graphql; charset=utf-8")


# Refusals of a well-formed request: legacy `application/json` answers them with 200.
_WELL_FORMED_REFUSALS = frozenset(
    {
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "LIMIT_EXCEEDED",
        "PERSISTED_QUERY_NOT_FOUND",
        "PERSISTED_QUERY_NOT_SUPPORTED",
        "PERSISTED_QUERY_HASH_MISMATCH",
        "TRUSTED_DOCUMENT_REQUIRED",
        "UNSUPPORTED_PERSISTED_QUERY_VERSION",
    }
)


def is_graphql_error(exc: RequestError) -> bool:
    """A refusal of a well-formed request (its document, not the HTTP request)."""
    codes = {e.get("extensions", {}).get("code") for e in exc.errors}
    return bool(codes & _WELL_FORMED_REFUSALS)


def _limit_error(exc: LimitExceeded) -> dict[str, Any]:
    return _error(
        str(exc), "LIMIT_EXCEEDED", limit=exc.limit, maximum=exc.maximum, actual=exc.actual
    )


def bearer(authorization: str) -> str | None:
    """The token of a `Bearer <token>` value (None: another scheme, or none)."""
    scheme, _, credential = authorization.strip().partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def _facts(request: Request) -> RequestFacts:
    return RequestFacts.of(
        request.headers.get("x-request-id", ""), request.client.host if request.client else None
    )
