"""The HTTP server and its web page: `create_app(workspace)` (FastAPI), run by `persona-llm serve`.

    app.py        the app factory and the routes (probes, readers, chat, briefs, admin, the page)
    published.py  the published run, resolved per request, and what the API shows of a run
    models.py     request and response models (the OpenAPI schema)
    auth.py       API keys (salted hashes, constant-time comparison) and scopes
    limits.py     per-key rate limits and the queue in front of the model
    llm.py        the model behind chat and briefs (opened in the background, one slot at a time)
    chat.py       segment chat per run, conversations bound to their run and key
    jobs.py       background jobs (a refresh), one at a time
    requests.py   request ids and the access log
    settings.py   listening address and limits
    static/       the web page (HTML, JS, CSS; no build step)
"""

from persona_llm.server.app import create_app
from persona_llm.server.auth import ApiKeys, Principal
from persona_llm.server.settings import ServerSettings

__all__ = ["ApiKeys", "Principal", "ServerSettings", "create_app"]
