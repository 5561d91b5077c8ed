"""The web page in a real browser: Debian's chromium (scripts/install.sh installs it; Playwright's own
browser download cannot work offline) driven by Playwright against a live uvicorn on a free loopback
port. Checks what a strategist sees: persona cards with their quotes, the user map, the segment view, a
quote opening its source text, a newly published run followed without reloading, and the key prompt when
the server has keys. Screenshots are written under pytest's tmp folder and checked not to be blank.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from persona_llm.runs.workspace import Workspace
from persona_llm.server import ServerSettings, create_app
from tests.conftest import copy_workspace
from tests.test_server import READ_KEY, live_server, make_keys, publish_renamed_copy

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/install.sh installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is missing (scripts/install.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One chromium for the module, with a fresh profile; each test opens its own context."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


#: Decodes a PNG in a blank page and counts its colours (the browser's own decoder: no imaging package).
_COLOUR_STATS_JS = """async (src) => {
  const img = new Image(); img.src = src; await img.decode();
  const canvas = document.createElement("canvas"); canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext("2d"); ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const counts = new Map();
  for (let i = 0; i < d.length; i += 4) { const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2]; counts.set(k, (counts.get(k) || 0) + 1); }
  let top = 0; for (const v of counts.values()) top = Math.max(top, v);
  return { colours: counts.size, top_share: top / (d.length / 4), width: img.width, height: img.height };
}"""


def check_screenshot(browser: Any, path: Path, *, min_colours: int = 16) -> dict[str, Any]:
    """A screenshot file that is not blank: many colours, and no one colour covering nearly all of it."""
    page = browser.new_page()
    try:
        stats = page.evaluate(_COLOUR_STATS_JS, "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode())
    finally:
        page.close()
    assert stats["width"] >= 800 and stats["height"] >= 600, stats
    assert stats["colours"] >= min_colours, f"{path.name}: only {stats['colours']} colours"
    assert stats["top_share"] < 0.97, f"{path.name}: {stats['top_share']:.0%} one colour"
    return dict(stats)


def test_png_check_catches_a_blank_page(browser: Any, shots: Path) -> None:
    page = browser.new_page()
    page.set_content("<html><body style='background:#fff'></body></html>")
    page.screenshot(path=str(shots / "blank.png"))
    page.close()
    with pytest.raises(AssertionError, match="colours|one colour"):
        check_screenshot(browser, shots / "blank.png")


def test_page_shows_personas_map_segments_and_cited_texts(
    browser: Any, shots: Path, persona_workspace: Path, tmp_path: Path
) -> None:
    workspace = copy_workspace(persona_workspace, tmp_path / "ws")
    run = Workspace.open(workspace).current()
    personas = run.load_personas()
    app = create_app(workspace, settings=ServerSettings(page_poll_s=0.5))
    with live_server(app) as url:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        page.wait_for_selector("article.card")
        cards = page.locator("article.card")
        assert cards.count() == len(personas)
        first = cards.nth(0)
        assert personas[0].name in first.inner_text() and first.is_visible()
        assert page.locator(f"article.card[data-persona-id='{personas[0].persona_id}'] blockquote.quote").count() == len(
            personas[0].quotes
        )
        assert page.locator("#map svg circle").count() == len(run.load_assignments())
        assert page.locator("#legend button").count() == len(run.load_segments().segments)
        assert run.path.name in page.inner_text("#run-line")
        page.screenshot(path=str(shots / "personas.png"))
        check_screenshot(browser, shots / "personas.png")

        # A quote opens the text it was taken from.
        quote = personas[0].quotes[0]
        first.locator("blockquote.quote").first.click()
        page.wait_for_selector("#text-dialog[open]")
        body = page.inner_text("#text-body")
        assert quote.text in body and body == run.load_texts().set_index("text_id").loc[quote.text_id, "text"]
        page.screenshot(path=str(shots / "text.png"))
        check_screenshot(browser, shots / "text.png")
        page.click("#text-dialog button")

        # The segment view, from the map's legend.
        seg = run.load_segments().segments[1]
        page.click(f"#legend button[data-segment='{seg.segment_id}']")
        page.wait_for_selector("#segment-panel:not([hidden])")
        assert page.locator("#persona-panel").is_hidden()
        view = page.inner_text("#segment-panel")
        assert f"Segment {seg.segment_id}" in view and seg.keywords[0].term in view
        assert page.locator("#segment-body blockquote.rep").count() == len(seg.representatives)
        page.screenshot(path=str(shots / "segment.png"))
        check_screenshot(browser, shots / "segment.png")
        page.click("#segment-close")
        assert page.locator("#persona-panel").is_visible()

        # Publishing a new run switches the open page (no reload, no server restart).
        name = publish_renamed_copy(workspace, "Renamed")
        page.wait_for_selector("#notice:not([hidden])", timeout=10_000)
        assert name in page.inner_text("#notice")
        page.wait_for_function("document.querySelector('article.card h3').textContent.startsWith('Renamed')")
        assert name in page.inner_text("#run-line")
        page.close()
    assert errors == []


def test_page_asks_for_a_key_when_the_server_has_keys(browser: Any, shots: Path, persona_workspace: Path) -> None:
    app = create_app(persona_workspace, keys=make_keys())
    with live_server(app) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-form:not([hidden])")
        assert page.locator("article.card").count() == 0
        page.fill("#key-input", "wrong-key-" + "w" * 20)
        page.click("#key-form button")
        page.wait_for_function("document.getElementById('key-error').textContent.includes('API key')")
        page.fill("#key-input", READ_KEY)
        page.click("#key-form button")
        page.wait_for_selector("article.card")
        assert page.locator("#key-form").is_hidden()
        page.screenshot(path=str(shots / "with-key.png"))
        check_screenshot(browser, shots / "with-key.png")
        page.close()


def test_chat_panel_streams_an_answer_and_opens_a_cited_text(
    browser: Any, shots: Path, persona_workspace: Path
) -> None:
    from tests.test_server_chat import fake_model, scripted

    run = Workspace.open(persona_workspace).current()
    texts = run.load_texts().set_index("text_id")["text"]
    with fake_model(scripted()) as (_, model):
        app = create_app(persona_workspace, chat_model=model, chat_strategy="router")
        with live_server(app) as url:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            page.wait_for_selector("#chat-panel:not([hidden])")
            page.wait_for_selector("article.card")
            page.fill("#chat-input", "What do customers say about slugs?")
            page.click("#chat-send")
            page.wait_for_selector(".msg.bot .cite", timeout=60_000)
            bot = page.locator(".msg.bot").last
            assert "Customers write about it" in bot.locator(".text").inner_text()
            assert "checks passed" in bot.inner_text()
            cite = bot.locator(".cite").first
            text_id = cite.get_attribute("data-text-id")
            page.screenshot(path=str(shots / "chat.png"))
            check_screenshot(browser, shots / "chat.png")
            cite.click()
            page.wait_for_selector("#text-dialog[open]")
            assert page.inner_text("#text-body") == texts[text_id]
            page.click("#text-dialog button")
            # A second question continues the conversation the first one started.
            page.fill("#chat-input", "And roses?")
            page.click("#chat-send")
            page.wait_for_function("document.querySelectorAll('.msg.bot .cite').length >= 2", timeout=60_000)
            assert page.evaluate("state.conversation").startswith("c-")
            page.close()
    assert errors == []
