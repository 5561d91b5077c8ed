"""The HTTP server: `create_app(workspace)` makes the FastAPI app; `persona-llm serve` runs it with uvicorn.

    GET  /healthz, /readyz                         the process is up; the store (and model) answer
    GET  /                                         the web page (persona cards, map, segment view)
    GET  /v1/info                                  the published run and what this server offers
    GET  /v1/runs, /v1/segments[/{id}], /v1/personas[/{id}], /v1/texts/{id}, /v1/search, /v1/map, /v1/eval
    POST /v1/chat                                  (chat scope) a segment-chat answer as server-sent events
    POST /v1/briefs                                (chat scope) a validated, gated brief for a persona
    POST /v1/admin/refresh, GET /v1/admin/jobs/{id} (admin scope) refresh the workspace with new data, in the
                                                   background; status by job id
    POST /v1/admin/publish, /v1/admin/rollback     (admin scope) one writer at a time: a second gets 409

Every /v1 reader serves the run published at the moment of the request (`?run=NAME` reads another run of
the workspace): publish or rollback, from this server or from the command line, switches readers at once.

One process. The run's default store is Chroma's embedded (persistent) client: a SQLite file and index
files inside the run folder, which Chroma does not support sharing between processes (each process keeps
its own caches of the same files, and SQLite's locks do not cover the index files). So `serve` runs one
uvicorn process with threads for concurrency, never `--workers N`; the rate limiter and the model queue
are in-memory state of that one process too. Runs built with `[store] url` keep their records in a
`chroma run` server instead, which any number of readers may share.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles

from persona_llm import __version__
from persona_llm.errors import BackendError, ConfigError, PersonaLLMError, RunStoreError, WorkspaceLockedError
from persona_llm.llm.base import LLMSettings
from persona_llm.llm.chat_model import ChatModel
from persona_llm.personas.report import persona_markdown, segment_colour
from persona_llm.runs.rundir import EVAL
from persona_llm.runs.workspace import Workspace
from persona_llm.segment.base import TEXTS
from persona_llm.server import models as api
from persona_llm.server.auth import LOCAL_PRINCIPAL, ApiKeys, Principal, Scope
from persona_llm.server.chat import ChatService, Conversation
from persona_llm.server.jobs import Job, JobRunning, Jobs
from persona_llm.server.limits import RateLimiter
from persona_llm.server.llm import ModelUnavailable, ServerModel
from persona_llm.server.published import NotFound, PublishedRuns, RunView
from persona_llm.server.requests import RequestIdMiddleware, request_id_var
from persona_llm.server.settings import ServerSettings

log = logging.getLogger(__name__)

STATIC = importlib.resources.files("persona_llm.server") / "static"
CHAT_STRATEGIES = ("auto", "router", "tools")


@dataclass
class ServerContext:
    """Everything a request handler needs, made once per app."""

    workspace: Path
    settings: ServerSettings
    keys: ApiKeys
    runs: PublishedRuns
    limiter: RateLimiter
    model: ServerModel | None = None
    chat: ChatService | None = None
    jobs: Jobs = field(default_factory=Jobs)
    features: list[str] = field(default_factory=list)

    def require_model(self) -> ServerModel:
        if self.model is None:  # routes that need one are only added with one
            raise ModelUnavailable("this server runs without a model")
        return self.model

    def public_message(self, exc: Exception) -> str:
        """An error's message without the server's folder layout (a client sees the workspace's name)."""
        return str(exc).replace(str(self.workspace.resolve()), self.workspace.name).replace(
            str(self.workspace), self.workspace.name
        )


# -- authentication and scopes --------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key (instead of Bearer)")


def _context(request: Request) -> ServerContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def requires(scope: Scope) -> Callable[..., Principal]:
    """A dependency: the caller's key must be valid (401) and hold `scope` (403); then its rate applies (429)."""

    def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        ctx = _context(request)
        if ctx.keys:
            presented = bearer.credentials if bearer is not None else header_key
            principal = ctx.keys.identify(presented)
            if principal is None:
                raise HTTPException(
                    401, "missing or wrong API key (send Authorization: Bearer KEY)",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
            bucket = f"key:{principal.name}"
        else:
            principal = LOCAL_PRINCIPAL
            bucket = f"addr:{request.client.host if request.client else '-'}"
        request.state.principal = principal
        if not principal.allows(scope):
            raise HTTPException(403, f"the key {principal.name!r} lacks the {scope!r} scope")
        wait = ctx.limiter.take(bucket)
        if wait > 0:
            raise HTTPException(
                429, f"rate limit: {ctx.settings.rate_per_minute:g} requests per minute; retry in {wait:.1f}s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )  # fmt: skip
        return principal

    return check


ReadKey = Annotated[Principal, Depends(requires("read"))]
ChatKey = Annotated[Principal, Depends(requires("chat"))]
AdminKey = Annotated[Principal, Depends(requires("admin"))]
RunQuery = Annotated[
    str | None,
    Query(max_length=200, description="a run of the workspace (its name in /v1/runs); default: the published one"),
]


def _view(request: Request, run: str | None) -> RunView:
    return _context(request).runs.view(run)


# -- errors -----------------------------------------------------------------------------------------------


def _error(request: Request, status: int, message: str, fields: list[dict[str, Any]] | None = None) -> JSONResponse:
    rid = getattr(request.state, "request_id", "")
    body = api.ErrorBody(error=message, request_id=rid, fields=fields or [])
    return JSONResponse(body.model_dump(), status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
            fields.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", "")), "type": err.get("type")})
        first = fields[0] if fields else {"field": "body", "message": "invalid"}
        message = f"invalid {first['field']}: {first['message']}"
        return _error(request, 422, message, fields=fields)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = _error(request, exc.status_code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(request, 404, _context(request).public_message(exc))

    @app.exception_handler(JobRunning)
    async def job_running(request: Request, exc: JobRunning) -> JSONResponse:
        return _error(request, 409, str(exc))

    @app.exception_handler(WorkspaceLockedError)
    async def locked(request: Request, exc: WorkspaceLockedError) -> JSONResponse:
        message = f"another writer holds the workspace (pid {exc.pid if exc.pid is not None else '?'}); try again later"
        return _error(request, 409, message)

    @app.exception_handler(RunStoreError)
    async def store_error(request: Request, exc: RunStoreError) -> JSONResponse:
        # Nothing published, or a run that cannot be read as asked: the server has nothing to serve.
        return _error(request, 503, _context(request).public_message(exc))

    @app.exception_handler(ModelUnavailable)
    async def model_unavailable(request: Request, exc: ModelUnavailable) -> JSONResponse:
        response = _error(request, 503, str(exc))
        response.headers["Retry-After"] = "10"
        return response

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, exc: BackendError) -> JSONResponse:
        # The model or the store failed to answer as asked: the fault is upstream of this server.
        log.error("%s", exc)
        return _error(request, 502, _context(request).public_message(exc))

    @app.exception_handler(PersonaLLMError)
    async def library_error(request: Request, exc: PersonaLLMError) -> JSONResponse:
        log.error("%s", exc)
        return _error(request, 500, _context(request).public_message(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(request, 500, "internal error; the server log has the details under this request id")


# -- the app ----------------------------------------------------------------------------------------------


def create_app(
    workspace: str | Path,
    *,
    settings: ServerSettings | None = None,
    keys: ApiKeys | None = None,
    llm: LLMSettings | None = None,
    chat_model: ChatModel | None = None,
    chat_strategy: str = "auto",
) -> FastAPI:
    """The FastAPI app serving `workspace` (a persona-llm workspace; its published run is read per request).

    `keys`: the API keys (default: none, which only a loopback listener may run without: `settings.host`
    beyond loopback without keys is refused here, and `serve` binds to that host). `settings`: limits and
    the listening address (ServerSettings defaults). `llm`: the model for chat and briefs, opened in the
    background when the app starts and stopped with it (each call bounded by `settings.llm_timeout_s`); or
    `chat_model`, a model already open (not stopped here). Without either the app has no model routes.
    `chat_strategy`: SegmentChat's (auto, router, tools).
    """
    settings = settings or ServerSettings()
    keys = keys if keys is not None else ApiKeys()
    settings.check_bind(has_keys=bool(keys))
    if chat_strategy not in CHAT_STRATEGIES:
        raise ConfigError(f"unknown chat strategy {chat_strategy!r}; use {', '.join(CHAT_STRATEGIES)}")
    path = Path(workspace)
    ctx = ServerContext(
        workspace=path,
        settings=settings,
        keys=keys,
        runs=PublishedRuns(path, cache_size=settings.run_cache),
        limiter=RateLimiter(settings.rate_per_minute, settings.rate_burst),
    )
    if llm is not None or chat_model is not None:
        if llm is not None and chat_model is None:
            llm = llm.model_copy(update={"timeout_s": min(llm.timeout_s, settings.llm_timeout_s)})
        ctx.model = ServerModel(llm, chat=chat_model, slots=settings.llm_slots, queue=settings.llm_queue)
        ctx.chat = ChatService(ctx.runs, ctx.model, cache_size=settings.run_cache, strategy=chat_strategy)
        ctx.features += ["chat", "briefs"]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ctx.model is not None:
            ctx.model.start()
        try:
            yield
        finally:
            if ctx.chat is not None:
                ctx.chat.close()
            if ctx.model is not None:
                ctx.model.close()

    app = FastAPI(
        title="persona-llm",
        version=__version__,
        description="Segments, personas and the texts behind them, for other programs and people.",
        max_body_size=settings.max_body_bytes,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(RequestIdMiddleware)
    _install_error_handlers(app)
    _add_probes(app)
    _add_readers(app)
    if ctx.model is not None:
        _add_chat(app)
        _add_briefs(app)
    _add_admin(app)
    _add_page(app)
    return app


def _add_probes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        """The process is up (nothing else is checked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "a dependency does not answer"}})
    def readyz(request: Request) -> JSONResponse:
        """The published run can be read, its store answers, and so does the model (when there is one)."""
        ctx = _context(request)
        checks: dict[str, dict[str, Any]] = {}
        try:
            view = ctx.runs.view()
            view.segments  # noqa: B018 - loading it is the check
            checks["run"] = {"ok": True, "detail": view.name}
        except (PersonaLLMError, NotFound) as exc:
            checks["run"] = {"ok": False, "detail": ctx.public_message(exc)}
            view = None
        if view is not None:
            checks["store"] = _store_check(view)
        if ctx.model is not None:
            checks["llm"] = ctx.model.check()
        ready = all(c["ok"] for c in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)


def _store_check(view: RunView) -> dict[str, Any]:
    from persona_llm.segment.store import ChromaStore, store_for_run

    try:
        store = store_for_run(view.run)
        if not isinstance(store, ChromaStore):
            return {"ok": True, "detail": "this run has no store"}
        if store.url:
            store.client.heartbeat()
        n = store.count(TEXTS, view.run_id)
        return {"ok": True, "detail": f"{'server' if store.url else 'embedded'} store, {n} texts"}
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason is reported
        return {"ok": False, "detail": f"store does not answer: {str(exc)[:200]}"}


def _add_readers(app: FastAPI) -> None:
    @app.get("/v1/info", response_model=api.ServerInfo, tags=["read"])
    def info(request: Request) -> api.ServerInfo:
        """The published run and what this server offers; needs no key (it shows no data)."""
        ctx = _context(request)
        current = ctx.runs.current_name()
        run_id = None
        with contextlib.suppress(PersonaLLMError, NotFound):
            run_id = ctx.runs.view(current).run_id if current else None
        s = ctx.settings
        return api.ServerInfo(
            version=__version__, workspace=ctx.workspace.name, current_run=current, run_id=run_id,
            auth="api-key" if ctx.keys else "none (loopback only)", features=list(ctx.features),
            limits={
                "max_body_bytes": s.max_body_bytes, "max_question_chars": s.max_question_chars,
                "max_search_chars": s.max_search_chars, "max_results": s.max_results,
                "rate_per_minute": s.rate_per_minute, "page_poll_s": s.page_poll_s,
            },
        )  # fmt: skip

    @app.get("/v1/runs", response_model=api.RunList, tags=["read"])
    def runs(request: Request, _: ReadKey) -> api.RunList:
        """The workspace's runs, oldest first; `current` is the published one."""
        return _context(request).runs.run_list()

    @app.get("/v1/segments", response_model=api.SegmentList, tags=["read"])
    def segments(request: Request, _: ReadKey, run: RunQuery = None) -> api.SegmentList:
        """Every segment: size, share, top keywords and its persona (if one was written)."""
        return _view(request, run).segment_list()

    @app.get("/v1/segments/{segment_id}", response_model=api.SegmentDetail, tags=["read"])
    def segment(request: Request, segment_id: int, _: ReadKey, run: RunQuery = None) -> api.SegmentDetail:
        """One segment: keywords, representative texts, attribute summaries, quality."""
        view = _view(request, run)
        seg = view.segment(segment_id)
        return api.SegmentDetail(
            run=view.name, colour=segment_colour(segment_id), persona=view.persona_ref(segment_id), segment=seg
        )

    @app.get("/v1/personas", response_model=api.PersonaList, tags=["read"])
    def personas(request: Request, _: ReadKey, run: RunQuery = None) -> api.PersonaList:
        """Every persona in brief, with its verified quotes."""
        return _view(request, run).persona_list()

    @app.get(
        "/v1/personas/{persona_id}", response_model=api.PersonaDetail, tags=["read"],
        responses={200: {"content": {"text/markdown": {}}, "description": "JSON, or Markdown with format=markdown"}},
    )  # fmt: skip
    def persona(
        request: Request,
        persona_id: Annotated[str, PathParam(max_length=100)],
        _: ReadKey,
        format: Literal["json", "markdown"] = "json",
        run: RunQuery = None,
    ) -> Any:
        """One persona, whole: JSON (default) or Markdown (`format=markdown`)."""
        view = _view(request, run)
        found = view.persona(persona_id)
        if format == "markdown":
            return PlainTextResponse(persona_markdown(found), media_type="text/markdown; charset=utf-8")
        return api.PersonaDetail(run=view.name, persona=found)

    @app.get("/v1/texts/{text_id}", response_model=api.TextDetail, tags=["read"])
    def text(
        request: Request, text_id: Annotated[str, PathParam(max_length=100)], _: ReadKey, run: RunQuery = None) -> api.TextDetail:
        """One cleaned (PII-redacted) text of the run: what a quote or a citation points at."""
        view = _view(request, run)
        return api.TextDetail(run=view.name, text=view.text(text_id))

    @app.get("/v1/search", response_model=api.SearchResult, tags=["read"])
    def search(
        request: Request,
        _: ReadKey,
        q: Annotated[str, Query(min_length=1, description="words to find (all of them)")],
        segment_id: Annotated[int | None, Query(description="only this segment's texts")] = None,
        limit: Annotated[int, Query(ge=1, description="most hits to return")] = 20,
        run: RunQuery = None,
    ) -> api.SearchResult:
        """Texts that hold every word of `q`, most occurrences first, optionally within one segment."""
        s = _context(request).settings
        if len(q) > s.max_search_chars:
            raise RequestValidationError(
                [{"loc": ("query", "q"), "msg": f"String should have at most {s.max_search_chars} characters",
                  "type": "string_too_long"}]  # fmt: skip
            )
        return _view(request, run).search(q, segment_id=segment_id, limit=min(limit, s.max_results))

    @app.get("/v1/map", response_model=api.UserMapData, tags=["read"])
    def user_map(request: Request, _: ReadKey, run: RunQuery = None) -> api.UserMapData:
        """The report's 2-D user map (PCA of user embeddings), as points for a client to draw."""
        return _view(request, run).user_map()

    @app.get("/v1/eval", tags=["read"], responses={404: {"description": "the run was not evaluated"}})
    def evaluation(request: Request, _: ReadKey, run: RunQuery = None) -> dict[str, Any]:
        """The run's last evaluation (`persona-llm eval`), as eval.json holds it."""
        view = _view(request, run)
        if not view.run.has(EVAL):
            raise NotFound(f"run {view.name} has no evaluation; run `persona-llm eval` on the workspace")
        return view.run.load_eval()


def _chat_turn(request: Request, body: api.ChatRequest, principal: ChatKey) -> tuple[Conversation, str]:
    """Everything that can fail before the answer starts, so it fails with its own status code."""
    ctx = _context(request)
    assert ctx.chat is not None and ctx.model is not None
    question = " ".join(body.question.split())
    if len(question) > ctx.settings.max_question_chars:
        raise RequestValidationError(
            [{"loc": ("body", "question"), "type": "string_too_long",
              "msg": f"String should have at most {ctx.settings.max_question_chars} characters"}]  # fmt: skip
        )
    if not question:
        raise RequestValidationError([{"loc": ("body", "question"), "type": "string_too_short", "msg": "the question is empty"}])
    ctx.model.get()  # 503 while the model starts
    if ctx.model.queue.admitted >= ctx.model.queue.slots + ctx.model.queue.queue:
        raise HTTPException(503, "the model is busy: too many questions are waiting; try again shortly",
                            headers={"Retry-After": "10"})  # fmt: skip
    return ctx.chat.conversation(principal.name, body.conversation_id), question


ChatTurn = Annotated[tuple[Conversation, str], Depends(_chat_turn)]


def _add_chat(app: FastAPI) -> None:
    @app.post(
        "/v1/chat", response_class=EventSourceResponse, tags=["chat"],
        responses={
            200: {"description": "events: `conversation` (its id and run), `status`, `token` (the draft as it is "
                  "written), then `final` (the checked answer: citations, quotes, checks) or `error`"},
            404: {"model": api.ErrorBody, "description": "unknown or expired conversation"},
            503: {"model": api.ErrorBody, "description": "the model is starting or busy"},
        },
    )  # fmt: skip
    def chat(request: Request, turn: ChatTurn) -> Iterator[ServerSentEvent]:
        """Ask about the segments. The answer streams as server-sent events; the `final` event's answer is the
        checked one (a sentence the texts do not support is removed). Send the `conversation_id` of the
        first answer to continue a conversation (on the run it started on)."""
        ctx = _context(request)
        assert ctx.chat is not None and ctx.model is not None
        conversation, question = turn
        rid = request_id_var.get()
        yield ServerSentEvent(event="conversation", data={"conversation_id": conversation.conversation_id,
                                                          "run": conversation.run})  # fmt: skip
        try:
            with ctx.model.slot(ctx.settings.llm_queue_wait_s):
                for event in ctx.chat.stream(conversation, question):
                    if event.type == "final":
                        yield ServerSentEvent(event="final", data=event.answer)
                    else:
                        yield ServerSentEvent(event=event.type, data={"text": event.text})
        except PersonaLLMError as exc:  # the stream has started: the error is an event, with the request id
            log.error("chat failed: %s", exc)
            yield ServerSentEvent(event="error", data={"error": ctx.public_message(exc), "request_id": rid})
        except Exception:
            log.exception("chat failed")
            yield ServerSentEvent(event="error", data={
                "error": "internal error; the server log has the details under this request id", "request_id": rid})  # fmt: skip


def _add_briefs(app: FastAPI) -> None:
    @app.post(
        "/v1/briefs", tags=["briefs"],
        responses={
            200: {"description": "the brief (JSON: {run, brief}; or Markdown or HTML with format md/html)",
                  "content": {"text/markdown": {}, "text/html": {}}},
            503: {"model": api.ErrorBody, "description": "the model is starting or busy"},
        },
    )  # fmt: skip
    def brief(request: Request, body: api.BriefRequest, _: ChatKey) -> Response:
        """Write a brief for a persona of the run: a campaign brief, a day-in-the-life narrative, or a
        messaging matrix (`persona_id` "all" or a comma-separated list). Every citation, quote and claim is
        checked against the segment's texts, as for personas; confidence comes from that evidence."""
        from persona_llm.briefs import BriefWriter, render_brief, select_personas

        ctx = _context(request)
        view = _view(request, body.run)
        try:  # the persona first: a wrong one costs no model time
            select_personas(view.personas(), body.persona_id, body.kind, view.name)
        except ConfigError as exc:
            raise RequestValidationError([{"loc": ("body", "persona_id"), "msg": str(exc), "type": "value_error"}]) from None
        embedder = ctx.runs.embedder(view.run)
        with ctx.require_model().slot(ctx.settings.llm_queue_wait_s) as model:
            written = BriefWriter(chat=model, support_embedder=embedder).write(
                view.run, persona_id=body.persona_id, goal=body.goal, kind=body.kind, channel=body.channel
            )
        log.info("wrote a %s brief for %s (confidence %s)", body.kind, body.persona_id, getattr(written, "confidence", "-"))
        if body.format == "md":
            return PlainTextResponse(render_brief(written, "md"), media_type="text/markdown; charset=utf-8")
        if body.format == "html":
            return Response(render_brief(written, "html"), media_type="text/html; charset=utf-8")
        return JSONResponse({"run": view.name, "brief": written.model_dump(mode="json")})


def _context_settings(app: FastAPI) -> ServerSettings:
    return app.state.ctx.settings  # type: ignore[no-any-return]


def _add_admin(app: FastAPI) -> None:
    def workspace_of(request: Request) -> Workspace:
        # A Workspace object of its own per request: the writer lock is a flock on a file this object
        # opens, so two requests (or a request and a CLI command) exclude each other like two processes.
        return Workspace.open(_context(request).workspace)

    @app.post(
        "/v1/admin/publish", response_model=api.PublishResult, tags=["admin"],
        responses={409: {"model": api.ErrorBody, "description": "another writer holds the workspace"}},
    )  # fmt: skip
    def publish(request: Request, body: api.PublishRequest, _: AdminKey) -> api.PublishResult:
        """Publish a run of the workspace (atomic; readers switch with their next request)."""
        ws = workspace_of(request)
        if body.run not in ws.run_names():
            raise NotFound(f"no run named {body.run!r} (see /v1/runs)")
        with ws.lock():
            previous = ws.current_name()
            ws.publish(body.run)
        log.info("published %s (was %s)", body.run, previous)
        return api.PublishResult(published=body.run, previous=previous, action="publish")

    @app.post(
        "/v1/admin/rollback", response_model=api.PublishResult, tags=["admin"],
        responses={409: {"model": api.ErrorBody, "description": "locked, or no earlier published run"}},
    )  # fmt: skip
    def rollback(request: Request, _: AdminKey) -> api.PublishResult:
        """Publish the run that was published before the current one."""
        ws = workspace_of(request)
        with ws.lock():
            previous = ws.current_name()
            try:
                run = ws.rollback()
            except WorkspaceLockedError:
                raise
            except RunStoreError as exc:
                raise HTTPException(409, _context(request).public_message(exc)) from None
        log.info("rolled back to %s (was %s)", run.path.name, previous)
        return api.PublishResult(published=run.path.name, previous=previous, action="rollback")

    @app.post(
        "/v1/admin/refresh", status_code=202, response_model=Job, tags=["admin"],
        max_body_size=_context_settings(app).max_upload_bytes,
        responses={
            202: {"description": "the refresh started in the background; poll GET /v1/admin/jobs/{job_id}"},
            409: {"model": api.ErrorBody, "description": "a job is running, or another writer holds the workspace"},
        },
        openapi_extra={"requestBody": {"required": True, "description": "the new data: CSV, JSON lines or Parquet",
                       "content": {"text/csv": {}, "application/x-ndjson": {}, "application/vnd.apache.parquet": {}}}},
    )  # fmt: skip
    async def refresh(
        request: Request,
        _: AdminKey,
        user_column: Annotated[str, Query(min_length=1, max_length=200)],
        text_column: Annotated[str, Query(min_length=1, max_length=200)],
        id_column: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        attributes: Annotated[str | None, Query(max_length=2000, description="comma-separated columns")] = None,
        mode: Literal["auto", "assign", "recluster"] = "auto",
        snapshot: Annotated[bool, Query(description="the data is the full data set: users it lacks are removed")] = False,
        dry_run: Annotated[bool, Query(description="compute the diff, write nothing")] = False,
        format: Literal["csv", "jsonl", "parquet"] = "csv",
    ) -> Job:
        """Refresh the workspace with new data sent as the request body (as `persona-llm refresh` does: new
        users assigned to the fitted segments or a re-clustering, only changed personas rewritten, gates,
        atomic publish). The refresh runs in the background: the answer is its job, to poll."""
        import shutil
        import tempfile

        from persona_llm import workflows

        ctx = _context(request)
        try:
            columns = workflows.column_map(
                workflows.Config(), user=user_column, text=text_column, id=id_column, attributes=attributes
            )
        except ConfigError as exc:
            raise RequestValidationError([{"loc": ("query", "user_column"), "msg": str(exc), "type": "value_error"}]) from None
        if ctx.jobs.running is not None:
            raise JobRunning(f"job {ctx.jobs.running} is still running; wait for it (GET /v1/admin/jobs/{ctx.jobs.running})")
        with Workspace.open(ctx.workspace).lock():  # a writer elsewhere: 409 before the upload is read
            pass
        # Personas the refresh must rewrite use the server's model (503 while it starts); a server without one
        # lets the refresh open the backend the PERSONA_LLM_* variables name, only if a persona needs it.
        model = ctx.model.get() if ctx.model is not None else None
        # The data holds what customers wrote, before any redaction: a private folder, removed after the job.
        spool = Path(tempfile.mkdtemp(prefix="persona-llm-refresh-"))
        data = spool / f"new-data.{format}"
        try:
            with open(data, "wb") as fh:
                async for chunk in request.stream():
                    fh.write(chunk)
            if data.stat().st_size == 0:
                raise RequestValidationError([{"loc": ("body",), "msg": "the request body (the new data) is empty", "type": "missing"}])
        except BaseException:
            shutil.rmtree(spool, ignore_errors=True)
            raise

        def work(say: Callable[[str], None]) -> Any:
            from persona_llm.refresh import refresh as refresh_workspace

            result = refresh_workspace(
                ctx.workspace, data, columns=columns, mode=mode, snapshot=snapshot, dry_run=dry_run, chat=model,
                progress=say,
            )  # fmt: skip
            return result.status, result.exit_code, result.summary(), result.diff.model_dump(mode="json")

        size = data.stat().st_size
        try:
            job = ctx.jobs.start("refresh", work, cleanup=lambda: shutil.rmtree(spool, ignore_errors=True))
        except BaseException:
            shutil.rmtree(spool, ignore_errors=True)
            raise
        log.info("refresh job %s started (%d bytes of %s)", job.job_id, size, format)
        return job

    @app.get("/v1/admin/jobs/{job_id}", response_model=Job, tags=["admin"])
    def job(request: Request, job_id: Annotated[str, PathParam(max_length=40)], _: AdminKey) -> Job:
        """A job's status: running, then published, unchanged, gate_failed, dry_run, locked or failed, with
        its progress lines and, when done, its summary and full result (a refresh: its diff)."""
        found = _context(request).jobs.get(job_id)
        if found is None:
            raise NotFound(f"no job {job_id!r} (jobs are kept while the server runs)")
        return found


def _add_page(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")
