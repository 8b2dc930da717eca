// pagelens serve: the web page. Plain JavaScript, no build step, no CDN.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { key: sessionStorage.getItem("pagelens-key"), query: "", hits: [], docs: null,
  explanation: null, token: null, jobTimer: null, view: "pages-view" };

// -- talking to the API ---------------------------------------------------------------
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.key) headers["X-API-Key"] = state.key;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    await askKey();
    return api(path, options);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

function askKey() {
  return new Promise((resolve) => {
    const dialog = $("#key-dialog");
    $("#key-form").onsubmit = () => {
      state.key = $("#api-key").value;
      sessionStorage.setItem("pagelens-key", state.key);
      resolve();
    };
    dialog.showModal();
  });
}

// Page images are fetched with the key (an <img src> cannot send a header).
async function loadImage(img, url) {
  try {
    const blob = await (await api(url)).blob();
    img.src = URL.createObjectURL(blob);
  } catch (error) {
    img.alt = `image unavailable: ${error.message}`;
    img.dataset.error = String(error.status || "");
  }
}

function status(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- the index and its channels -------------------------------------------------------
async function loadInfo() {
  const info = await (await api("/info")).json();
  const box = $("#channels");
  box.querySelectorAll("label, .hint").forEach((n) => n.remove());
  if (!info.channels.length) box.append(el("span", { class: "hint" }, "(nothing indexed yet)"));
  for (const channel of info.channels) {
    const input = el("input", { type: "checkbox", value: channel, id: `ch-${channel}` });
    input.checked = true;
    box.append(el("label", { for: `ch-${channel}` }, input, " ", channel));
  }
  $("#index-line").textContent =
    `${info.documents} documents, ${info.pages} pages in ${info.location} · model ${info.model}` +
    (info.text_model ? ` + text ${info.text_model}` : "");
}

function chosenChannels() {
  return [...document.querySelectorAll("#channels input:checked")].map((i) => i.value);
}

// -- search ---------------------------------------------------------------------------
async function search(event) {
  event.preventDefault();
  const q = $("#q").value.trim();
  if (!q) return;
  const channels = chosenChannels();
  if (!channels.length) { status("Choose at least one channel.", true); return; }
  state.query = q;
  status("Searching…");
  const body = { queries: [q], k: Number($("#k").value), channels };
  try {
    const out = await (await api("/search", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
    state.hits = out.results[0].hits;
    state.docs = null;
    status(`${state.hits.length} pages in ${Math.round(out.milliseconds)} ms (${out.channels.join(" + ")}, ${out.fusion}).`);
    renderGrid();
    if (state.view === "docs-view") loadDocuments();
    if (state.view === "page-view") showView("pages-view");
  } catch (error) {
    status(error.message, true);
  }
}

function renderGrid() {
  const grid = $("#grid");
  grid.replaceChildren();
  for (const hit of state.hits) {
    const img = el("img", { alt: `${hit.doc_path}, page ${hit.page_number}`, loading: "lazy" });
    const chips = el("span");
    for (const c of hit.channels) chips.append(el("span", { class: "chip" }, c));
    const button = el("button", { class: "thumb", type: "button",
        onclick: () => openPage(hit.doc_sha256, hit.page_number, hit.doc_path) },
      img,
      el("span", { class: "doc" }, hit.doc_path),
      el("span", { class: "meta" }, `page ${hit.page_number} · score ${hit.score.toFixed(3)}`),
      chips);
    grid.append(el("li", {}, button));
    loadImage(img, `${hit.image}?dpi=40`);
  }
}

// -- documents ranked by their best pages ---------------------------------------------
async function loadDocuments() {
  const list = $("#doc-list");
  list.replaceChildren();
  if (!state.query) { list.append(el("li", {}, "Search first: documents are ranked by their best pages.")); return; }
  const params = new URLSearchParams({ q: state.query, k: $("#k").value,
    channels: chosenChannels().join(",") });
  try {
    const out = await (await api(`/search/documents?${params}`)).json();
    const documents = out.results[0].documents;
    if (!documents.length) list.append(el("li", {}, "No document matched."));
    for (const doc of documents) {
      const pages = el("div", { class: "pages" });
      for (const p of doc.pages) {
        pages.append(el("button", { type: "button", class: "secondary",
          onclick: () => openPage(doc.doc_sha256, p.page_number, doc.doc_path) },
          `page ${p.page_number} (${p.score.toFixed(3)})`));
      }
      list.append(el("li", {},
        el("strong", {}, doc.doc_path), ` · score ${doc.score.toFixed(3)}`, pages));
    }
  } catch (error) {
    list.append(el("li", { class: "error" }, error.message));
  }
}

// -- one page and why it matched ------------------------------------------------------
async function openPage(doc, page, docPath) {
  state.returnFocus = document.activeElement;
  showView("page-view");
  $("#page-title").textContent = `${docPath}, page ${page}`;
  const img = $("#page-img");
  img.removeAttribute("src");
  img.alt = `${docPath}, page ${page}`;
  $("#tokens").replaceChildren();
  $("#matches").replaceChildren();
  $("#explain-note").textContent = "Working out which parts matched…";
  const canvas = $("#overlay");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  delete canvas.dataset.drawn;
  const loaded = new Promise((resolve) => { img.onload = resolve; });
  loadImage(img, `/pages/${doc}/${page}/image?dpi=110`);
  $("#back").focus();
  if (!state.query) { $("#explain-note").textContent = "Search for something to see what matches."; return; }
  try {
    const params = new URLSearchParams({ q: state.query });
    const explanation = await (await api(`/pages/${doc}/${page}/explain?${params}`)).json();
    state.explanation = explanation;
    state.token = null;
    await loaded;
    renderExplanation();
  } catch (error) {
    $("#explain-note").textContent = `No similarity map: ${error.message}`;
  }
}

function renderExplanation() {
  const ex = state.explanation;
  const note = ex.kind === "heatmap"
    ? `Channel ${ex.channel} (${ex.model}): each query token's similarity to the page's ${ex.grid[0]}×${ex.grid[1]} patches; exact MaxSim ${ex.score.toFixed(3)}.`
    : `Channel ${ex.channel} (${ex.model}): the page words each query token matched best (boxes from the ${ex.words_from === "ocr" ? "OCR" : "text layer"}); exact MaxSim ${ex.score.toFixed(3)}.`;
  $("#explain-note").textContent = note + " Choose a token to see its match alone.";
  const tokens = $("#tokens");
  tokens.replaceChildren();
  tokens.append(el("button", { type: "button", "aria-pressed": String(state.token === null),
    onclick: () => { state.token = null; renderExplanation(); } }, "all tokens"));
  ex.maps.forEach((m, i) => {
    if (m.special) return;  // padding and markers the processor added, not words asked
    tokens.append(el("button", { type: "button", "aria-pressed": String(state.token === i),
      title: `score ${m.score.toFixed(3)}`,
      onclick: () => { state.token = i; renderExplanation(); } }, m.token.trim() || m.token));
  });
  const matches = $("#matches");
  matches.replaceChildren();
  ex.maps.forEach((m, i) => {
    if (m.special || (state.token !== null && state.token !== i)) return;
    let where;
    if (ex.kind === "boxes") {
      where = m.box === null ? `“${m.match}” (not located on the page)` : `“${ex.boxes[m.box].word}”`;
    } else {
      where = `patch row ${m.best[0] + 1}, column ${m.best[1] + 1}`;
    }
    matches.append(el("li", {}, el("strong", {}, m.token.trim() || m.token), ` → ${where} · ${m.score.toFixed(3)}`));
  });
  drawOverlay();
}

function shownMaps(ex) {
  return ex.maps.filter((m, i) => (state.token === null ? !m.special : state.token === i));
}

function drawOverlay() {
  const ex = state.explanation;
  const img = $("#page-img");
  const canvas = $("#overlay");
  canvas.width = img.naturalWidth || 850;
  canvas.height = img.naturalHeight || 1100;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  let drawn = 0;
  const maps = shownMaps(ex);
  if (ex.kind === "heatmap" && maps.length) {
    const [rows, cols] = ex.grid;
    const cell = (r, c) => Math.max(...maps.map((m) => m.similarity[r][c]));
    let lo = Infinity, hi = -Infinity;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      const v = cell(r, c); lo = Math.min(lo, v); hi = Math.max(hi, v);
    }
    const w = canvas.width / cols, h = canvas.height / rows;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      const t = hi > lo ? (cell(r, c) - lo) / (hi - lo) : 0;
      if (t < 0.5) continue;
      ctx.fillStyle = `rgba(230, 60, 0, ${(0.6 * (t - 0.5) * 2).toFixed(3)})`;
      ctx.fillRect(c * w, r * h, w, h);
      drawn++;
    }
  } else if (ex.kind === "boxes") {
    const wanted = new Set(maps.map((m) => m.box).filter((b) => b !== null));
    ctx.lineWidth = Math.max(2, canvas.width / 400);
    ex.boxes.forEach((b, i) => {
      if (!wanted.has(i)) return;
      const x = b.x0 * canvas.width, y = b.y0 * canvas.height;
      const w = (b.x1 - b.x0) * canvas.width, h = (b.y1 - b.y0) * canvas.height;
      ctx.fillStyle = "rgba(255, 200, 0, 0.40)";
      ctx.fillRect(x, y, w, h);
      ctx.strokeStyle = "rgba(180, 70, 0, 0.95)";
      ctx.strokeRect(x - 2, y - 2, w + 4, h + 4);
      drawn++;
    });
  }
  canvas.dataset.drawn = String(drawn);
  $("#page-caption").textContent = `${drawn} ${ex.kind === "heatmap" ? "patches" : "words"} highlighted.`;
}

// -- indexing jobs --------------------------------------------------------------------
async function startJob(event) {
  event.preventDefault();
  const paths = $("#job-paths").value.split("\n").map((p) => p.trim()).filter(Boolean);
  try {
    await api("/index", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ paths }) });
    status("Indexing job started.");
  } catch (error) {
    status(error.message, true);
  }
  refreshJobs();
}

async function refreshJobs() {
  let jobs = [];
  try { jobs = (await (await api("/jobs")).json()).jobs; } catch (error) { status(error.message, true); return; }
  const list = $("#job-list");
  list.replaceChildren();
  for (const job of jobs) {
    const bar = el("progress", { max: String(Math.max(job.files_total, 1)), value: String(job.files_done),
      "aria-label": `job ${job.id} files done` });
    const line = `job ${job.id} · ${job.state} · ${job.files_done}/${job.files_total} files · ` +
      `${job.pages} pages · ${job.pages_per_second.toFixed(2)} pages/s`;
    const item = el("li", {}, el("div", {}, line), bar);
    if (job.current) item.append(el("div", { class: "muted" }, `now: ${job.current}`));
    if (job.error) item.append(el("div", { class: "error" }, job.error));
    if (job.skipped.length) {
      const skipped = el("ul", {});
      for (const s of job.skipped) skipped.append(el("li", {}, `${s.path}: ${s.cause}`));
      item.append(el("details", {}, el("summary", {}, `${job.skipped.length} skipped`), skipped));
    }
    if (job.state === "running" || job.state === "queued") {
      item.append(el("button", { type: "button", class: "secondary",
        onclick: async () => { await api(`/jobs/${job.id}`, { method: "DELETE" }); refreshJobs(); } },
        "Cancel"));
    }
    list.append(item);
  }
  const running = jobs.some((j) => j.state === "running" || j.state === "queued");
  clearTimeout(state.jobTimer);
  if (running) state.jobTimer = setTimeout(refreshJobs, 1000);
  else loadInfo().catch(() => {});
}

// -- views and keyboard ---------------------------------------------------------------
function showView(id) {
  state.view = id;
  for (const v of ["pages-view", "docs-view", "jobs-view", "page-view"]) $(`#${v}`).hidden = v !== id;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.getAttribute("aria-controls") === id;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on || (id === "page-view" && tab.id === "tab-pages") ? 0 : -1;
  }
  if (id === "docs-view") loadDocuments();
  if (id === "jobs-view") refreshJobs();
}

function setupTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => showView(tab.getAttribute("aria-controls")));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      next.focus();
      showView(next.getAttribute("aria-controls"));
    });
  });
}

function backToResults() {
  showView("pages-view");
  if (state.returnFocus && document.contains(state.returnFocus)) state.returnFocus.focus();
}

document.addEventListener("DOMContentLoaded", () => {
  setupTabs();
  $("#search-form").addEventListener("submit", search);
  $("#job-form").addEventListener("submit", startJob);
  $("#back").addEventListener("click", backToResults);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.view === "page-view") backToResults();
    if (event.key === "/" && document.activeElement.tagName !== "INPUT"
        && document.activeElement.tagName !== "TEXTAREA") { event.preventDefault(); $("#q").focus(); }
  });
  window.addEventListener("resize", () => { if (state.explanation && state.view === "page-view") drawOverlay(); });
  loadInfo().catch((error) => status(error.message, true));
  $("#q").focus();
});
