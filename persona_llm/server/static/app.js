// The persona-llm web page: persona cards, the user map, a segment view and (when the server has it) a
// chat panel. Plain DOM code, no build step. Every text from the API is inserted as text, never as HTML:
// customer texts are data.
"use strict";

const state = { key: sessionStorage.getItem("persona-llm-key") || "", current: null, info: null, polling: null, conversation: null, conversationRun: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

class AuthError extends Error {}

function headers(extra = {}) {
  const h = { ...extra };
  if (state.key) h["Authorization"] = "Bearer " + state.key;
  return h;
}

async function api(path) {
  const res = await fetch(path, { headers: headers() });
  if (res.status === 401 || res.status === 403) throw new AuthError((await res.json()).error);
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return res.json();
}

function showNotice(text) {
  const n = $("notice");
  n.textContent = text;
  n.hidden = !text;
}

// -- the map ---------------------------------------------------------------------------------------------

function renderMap(map) {
  const W = 420, H = 300, pad = 10;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "user map");
  const colours = Object.fromEntries(map.segments.map((s) => [s.segment_id, s.colour]));
  for (const [x, y, sid] of map.points) {
    const c = document.createElementNS(svgNS, "circle");
    c.setAttribute("cx", (pad + x * (W - 2 * pad)).toFixed(1));
    c.setAttribute("cy", (H - pad - y * (H - 2 * pad)).toFixed(1));
    c.setAttribute("r", sid < 0 ? "2" : "3.2");
    c.setAttribute("fill", sid < 0 ? map.unassigned_colour : (colours[sid] || "#888"));
    c.dataset.segment = sid;
    if (sid >= 0) c.addEventListener("click", () => showSegment(sid));
    svg.append(c);
  }
  $("map").replaceChildren(svg);
  $("legend").replaceChildren(...map.segments.map((s) =>
    el("button", { type: "button", "data-segment": s.segment_id, onclick: () => showSegment(s.segment_id) },
      el("span", { class: "dot", style: `background:${s.colour}` }), el("span", { text: s.label }))));
  $("map-note").textContent = map.note;
}

// -- persona cards ---------------------------------------------------------------------------------------

function quoteNode(q) {
  return el("blockquote", { class: "quote", title: "open the text this quote comes from", "data-text-id": q.text_id,
    onclick: () => openText(q.text_id) }, q.text, el("span", { class: "src", text: q.text_id }));
}

function renderCards(list) {
  const cards = list.personas.map((p) =>
    el("article", { class: "card", "data-persona-id": p.persona_id, style: `border-top:5px solid ${p.colour}` },
      el("h3", {}, p.name, el("span", { class: "seg muted", text: `segment ${p.segment_id}` }),
        el("span", { class: "badge " + p.confidence, text: `${p.confidence} confidence` })),
      el("p", { class: "tagline", text: p.tagline }),
      el("p", { class: "muted", text: `${p.user_count} users (${(p.share * 100).toFixed(1)}%) · ${p.n_texts} texts` }),
      el("p", { text: p.summary }),
      el("div", { class: "chips" }, ...p.keywords.map((k) => el("span", { class: "chip", text: k }))),
      ...(p.quotes.length ? p.quotes.map(quoteNode) : [el("p", { class: "muted", text: "No quote passed the grounding gate." })]),
      el("button", { class: "link", type: "button", onclick: () => showSegment(p.segment_id), text: "segment view →" })));
  $("cards").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted", text: "This run has no personas yet." })]));
}

// -- segment view ----------------------------------------------------------------------------------------

function attributesTable(attrs) {
  const rows = [];
  for (const [name, a] of Object.entries(attrs)) {
    const value = a.kind === "numeric"
      ? `mean ${a.mean.toFixed(1)} (all users ${a.overall_mean.toFixed(1)})`
      : a.top.slice(0, 3).map((t) => `${t.value} ${(t.share * 100).toFixed(0)}% (all ${(t.overall_share * 100).toFixed(0)}%)`).join(", ");
    rows.push(el("tr", {}, el("th", { text: name }), el("td", { text: value })));
  }
  return rows.length ? el("table", { class: "attrs" }, ...rows) : el("p", { class: "muted", text: "no attributes" });
}

async function showSegment(segmentId) {
  try {
    const d = await api(`/v1/segments/${segmentId}`);
    const s = d.segment;
    $("segment-title").textContent = `Segment ${s.segment_id}` + (d.persona ? ` · ${d.persona.name}` : "");
    $("segment-body").replaceChildren(
      el("p", { class: "muted", text: `${s.size} users (${(s.share * 100).toFixed(1)}%) · ${s.n_texts} texts · cohesion ${s.quality.cohesion.toFixed(2)}` }),
      el("h4", { text: "Keywords" }),
      el("div", { class: "chips" }, ...s.keywords.map((k) => el("span", { class: "chip", text: k.term }))),
      el("h4", { text: "Representative texts" }),
      ...s.representatives.map((r) => el("blockquote", { class: "rep", "data-text-id": r.text_id, onclick: () => openText(r.text_id) },
        r.text, el("span", { class: "src muted", text: ` ${r.text_id}` }))),
      el("h4", { text: "Attributes" }),
      attributesTable(s.attributes));
    $("segment-panel").hidden = false;
    $("persona-panel").hidden = true;
    $("segment-panel").scrollIntoView({ block: "nearest" });
  } catch (e) { handleError(e); }
}

function closeSegment() {
  $("segment-panel").hidden = true;
  $("persona-panel").hidden = false;
}

// -- a cited text ----------------------------------------------------------------------------------------

async function openText(textId, run) {
  try {
    const d = await api(`/v1/texts/${encodeURIComponent(textId)}` + (run ? `?run=${encodeURIComponent(run)}` : ""));
    $("text-title").textContent = `Text ${d.text.text_id}`;
    $("text-meta").textContent = `segment ${d.text.segment_id} · language ${d.text.language} · run ${d.run}`;
    $("text-body").textContent = d.text.text;
    const dialog = $("text-dialog");
    if (!dialog.open) dialog.showModal();
  } catch (e) { handleError(e); }
}

// -- loading and following the published run ---------------------------------------------------------------

function handleError(e) {
  if (e instanceof AuthError) {
    $("key-form").hidden = false;
    $("key-error").textContent = state.key ? e.message : "";
    return;
  }
  showNotice("Error: " + e.message);
}

async function loadRun() {
  const [segments, personas, map] = await Promise.all([api("/v1/segments"), api("/v1/personas"), api("/v1/map")]);
  $("run-line").textContent = `run ${segments.run} · ${segments.segments.length} segments · ${personas.personas.length} personas · ${segments.n_users} users`;
  renderMap(map);
  renderCards(personas);
  $("key-form").hidden = true;
}

async function start() {
  try {
    state.info = await api("/v1/info");
    if (!state.polling) state.polling = setInterval(follow, (state.info.limits.page_poll_s || 10) * 1000);
    if (state.info.features.includes("chat")) setupChat();
    await loadRun();
    state.current = state.info.current_run;
  } catch (e) { handleError(e); }
}

async function follow() {
  try {
    const info = await api("/v1/info");
    if (state.current && info.current_run && info.current_run !== state.current) {
      state.current = info.current_run;
      await loadRun();
      closeSegment();
      showNotice(`A new run was published: now showing ${info.current_run}.`);
    }
  } catch (e) { /* the next poll tries again */ }
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("key-input").value.trim();
  sessionStorage.setItem("persona-llm-key", state.key);
  start();
});
$("segment-close").addEventListener("click", closeSegment);

// -- chat ------------------------------------------------------------------------------------------------

function setupChat() {
  $("chat-panel").hidden = false;
  document.querySelector("main").classList.add("with-chat");
  $("chat-form").addEventListener("submit", (ev) => { ev.preventDefault(); ask(); });
  $("chat-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); ask(); }
  });
}

// Server-sent events from a POST body: blocks separated by a blank line, "event:" and "data:" lines.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

async function ask() {
  const question = $("chat-input").value.trim();
  if (!question) return;
  $("chat-input").value = "";
  $("chat-send").disabled = true;
  const log = $("chat-log");
  log.append(el("div", { class: "msg user", text: question }));
  const answer = el("div", { class: "text" });
  const status = el("div", { class: "checks" });
  const bot = el("div", { class: "msg bot" }, answer, status);
  log.append(bot);
  try {
    const body = { question };
    if (state.conversation) body.conversation_id = state.conversation;
    const res = await fetch("/v1/chat", { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body) });
    if (!res.ok) {
      let msg = res.statusText;
      try { msg = (await res.json()).error; } catch (e) { /* not JSON */ }
      if (res.status === 404) state.conversation = null;  // expired: the next question starts a new one
      throw new Error(msg);
    }
    for await (const { event, data } of sseEvents(res)) {
      if (event === "conversation") { state.conversation = data.conversation_id; state.conversationRun = data.run; }
      else if (event === "token") answer.textContent += data.text;
      else if (event === "status") { status.textContent = data.text; if (data.text.includes("re-ask")) answer.textContent = ""; }
      else if (event === "final") showAnswer(bot, answer, status, data);
      else if (event === "error") throw new Error(data.error);
      log.scrollTop = log.scrollHeight;
    }
  } catch (e) {
    bot.classList.add("warn");
    status.textContent = "Error: " + e.message;
  } finally {
    $("chat-send").disabled = false;
  }
}

function showAnswer(bot, answer, status, data) {
  answer.textContent = data.answer;  // the checked answer replaces the streamed draft
  const checks = data.checks;
  const removed = checks.removed.length ? ` · removed: ${checks.removed.length} unsupported part(s)` : "";
  status.textContent = (data.refused ? "refused · " : "") + (checks.passed ? "checks passed" : "checked") + removed;
  if (data.citations.length) {
    bot.append(el("div", { class: "cites" }, ...data.citations.map((c) =>
      el("button", { class: "cite", type: "button", "data-text-id": c.text_id, title: c.text.slice(0, 200),
        onclick: () => openText(c.text_id, state.conversationRun) }, `${c.text_id} · segment ${c.segment_id}`))));
  }
}

start();
