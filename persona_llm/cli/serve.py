"""`serve` (the HTTP server and web page over a workspace) and `api-key` (make a key for it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from persona_llm.cli.app import (
    ApiKeyEnvOption,
    LlmModelOption,
    LlmOption,
    LlmUrlOption,
    ThreadsOption,
    WorkspaceArgument,
    app,
    console,
    fail,
    llm_settings_or_fail,
)
from persona_llm.errors import PersonaLLMError

KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="API key file (TOML [[key]] entries with hashes; see `api-key`). Also "
                 "$PERSONA_LLM_API_KEYS_FILE; plain keys in $PERSONA_LLM_API_KEYS."),  # fmt: skip
]


@app.command("serve")
def serve(
    workspace: WorkspaceArgument,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; beyond loopback only with API keys."),
    port: int = typer.Option(8321, "--port", help="Port to listen on (0: any free port)."),
    keys: KeysOption = None,
    rate: float | None = typer.Option(None, "--rate", help="Requests per minute per key (default 120)."),
    no_llm: bool = typer.Option(False, "--no-llm", help="Serve without a model: no chat and no briefs."),
    strategy: str = typer.Option("auto", "--strategy", help="Chat strategy: auto, router or tools."),
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    api_key_env: ApiKeyEnvOption = None,
    threads: ThreadsOption = None,
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve the workspace's published run over HTTP (API at /v1, docs at /docs, the web page at /).

    One process: a newly published run is served from the next request on, with no restart. The model
    for chat and briefs starts in the background (/readyz says when it answers); --no-llm serves without one."""
    import logging

    import uvicorn

    from persona_llm.runs.workspace import Workspace
    from persona_llm.server import ApiKeys, ServerSettings, create_app
    from persona_llm.server.requests import configure_logging

    try:
        Workspace.open(workspace)
        api_keys = ApiKeys.configured(keys)
        settings = ServerSettings.from_env(host=host, port=port, rate_per_minute=rate)
        settings.check_bind(has_keys=bool(api_keys))
        llm_settings = None
        if not no_llm:
            llm_settings = llm_settings_or_fail(llm=llm, llm_url=llm_url, llm_model=llm_model, api_key_env=api_key_env,
                                                threads=threads)  # fmt: skip
        server_app = create_app(workspace, settings=settings, keys=api_keys, llm=llm_settings, chat_strategy=strategy)
    except PersonaLLMError as exc:
        fail(exc)
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(ValueError(f"--log-level must be debug, info, warning or error, not {log_level!r}"))
    configure_logging(level)
    if api_keys:
        console.print(f"{len(api_keys)} API key(s) configured; every /v1 request needs one")
    else:
        console.print(f"[bold]no API keys configured[/]: listening on {settings.host} (loopback) only, and "
                      "anyone on this machine may read, chat and publish")  # fmt: skip
    console.print(f"serving {workspace} at http://{settings.host}:{settings.port}/ (API docs at /docs)")
    # One worker, always: see persona_llm/server/app.py on why the embedded store needs one process.
    uvicorn.run(server_app, host=settings.host, port=settings.port, workers=1, log_level=log_level.lower(),
                access_log=False, server_header=False)  # fmt: skip


@app.command("api-key")
def api_key(
    name: str = typer.Argument(..., help="A name for the key (shown in the server's log)."),
    scopes: str = typer.Option("read", "--scopes", help="Comma-separated: read, chat, admin."),
    keys: Path | None = typer.Option(None, "--keys", help="Append the key's entry to this key file."),
) -> None:
    """Make a new API key: the key is printed once; only its salted hash is stored in the key file."""
    from persona_llm.server.auth import ApiKeys, key_entry, new_key

    key = new_key()
    try:
        entry = key_entry(name, key, [s.strip() for s in scopes.split(",") if s.strip()])
        if keys is not None:
            existing = keys.read_text(encoding="utf-8") if keys.exists() else ""
            if keys.exists() and any(k.name == name for k in ApiKeys.from_file(keys).keys):
                fail(ValueError(f"{keys}: a key named {name!r} is there already"))
            fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(("\n" if existing and not existing.endswith("\n\n") else "") + entry)
            ApiKeys.from_file(keys)  # the file still parses
    except PersonaLLMError as exc:
        fail(exc)
    typer.echo(key)
    if keys is None:
        typer.echo("\n# add to the key file passed to `persona-llm serve --keys`:\n" + entry)
    else:
        console.print(f"added key {name!r} to {keys}; the key above is not stored anywhere, keep it safe")
