// skinedge's page: pairing, live view, capture with a visit ID, review, export, health. No external URL, no
// framework: the board serves this file and its JSON API (/api/v1/, README.md "The page").
"use strict";
const $ = (id) => document.getElementById(id);
const state = {csrf: null, messages: {}, liveFps: 10, seq: -1, frames: 0, tab: "live", live: false, visit: ""};

function t(msg, values) {
  let text = state.messages[msg] || msg;
  for (const [k, v] of Object.entries(values || {})) text = text.split(`{${k}}`).join(String(v));
  return text;
}

function translate() {
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}

async function api(path, options = {}) {
  const opts = {credentials: "same-origin", ...options, headers: {...(options.headers || {})}};
  if (opts.method && opts.method !== "GET") {
    opts.headers["Content-Type"] = "application/json";
    if (state.csrf) opts.headers["X-CSRF-Token"] = state.csrf;
  }
  const r = await fetch(path, opts);
  if (r.status === 401) showPair();
  return r;
}

async function errorOf(r) {
  try { return (await r.json()).error || r.statusText; } catch (e) { return r.statusText; }
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
const pct = (p) => `${Math.round(p * 100)}%`;
// a capture's headline: its class, or the image check that held the class back on the board's screen
const headline = (c) => (c.gate && c.gate !== "pass" ? `${t("Image checks")}: ${t(c.gate)}` : `${c.label} ${pct(c.confidence)}`);

// ---- session and pairing ----

async function start() {
  const r = await fetch("/api/v1/session", {credentials: "same-origin"});
  const s = await r.json();
  state.messages = s.messages || {};
  state.liveFps = s.live_fps || 10;
  document.documentElement.lang = s.language || "en";
  translate();
  if (s.paired) { state.csrf = s.csrf; showApp(); } else { showPair(); }
}

function showPair() {
  state.live = false;
  for (const id of ["live", "review", "health"]) $(id).hidden = true;
  $("tabs").hidden = true;
  $("pair").hidden = false;
  $("pair-code").focus();
}

async function pair(ev) {
  ev.preventDefault();
  $("pair-error").textContent = "";
  const r = await fetch("/api/v1/pair", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({code: $("pair-code").value})});
  if (!r.ok) { $("pair-error").textContent = t(await errorOf(r)); return; }
  state.csrf = (await r.json()).csrf;
  $("pair-code").value = "";
  showApp();
}

function showApp() {
  $("pair").hidden = true;
  $("tabs").hidden = false;
  showTab(state.tab);
}

function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("on", b.dataset.tab === tab);
  for (const id of ["live", "review", "health"]) $(id).hidden = id !== tab;
  if (tab === "live") { if (!state.live) liveLoop(); refreshVisitCaptures(); } else { state.live = false; }
  if (tab === "review") loadCaptures();
  if (tab === "health") loadHealth();
}

// ---- live view ----

async function liveLoop() {
  state.live = true;
  while (state.live) {
    const t0 = performance.now();
    let r;
    try { r = await api(`/api/v1/latest?after=${state.seq}`); } catch (e) { await sleep(1000); continue; }
    if (r.status === 401) return;
    if (r.status === 200) {
      const res = await r.json();
      state.seq = res.seq;
      showResult(res);
      if (await showFrame($("live-img"), res.seq)) {
        $("live-img").dataset.seq = String(res.seq);
        state.frames += 1;
        $("live-frames").textContent = String(state.frames);
      }
    } else if (r.status !== 204) {
      await sleep(1000);
    }
    const wait = 1000 / state.liveFps - (performance.now() - t0);
    if (wait > 0) await sleep(wait);
  }
}

// The newest frame as a blob: decoded off screen, then swapped in, so the picture never flickers or blanks.
async function showFrame(img, seq) {
  const r = await api(`/api/v1/live.jpg?seq=${seq}`);
  if (r.status !== 200) return false;
  const url = URL.createObjectURL(await r.blob());
  const next = new Image();
  next.src = url;
  try { await next.decode(); } catch (e) { URL.revokeObjectURL(url); return false; }
  const old = img.src;
  img.src = url;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  return true;
}

function showResult(res) {
  const gate = $("result-gate");
  if (res.message) {
    $("result-label").textContent = "";
    $("result-conf").textContent = "";
    gate.textContent = t(res.message);
    gate.className = "gate " + (res.gate === "checking" ? "checking" : res.gate === "not recognised" ? "ood" : "retake");
  } else {
    $("result-label").textContent = res.uncertain ? t("UNCERTAIN") : res.label;
    $("result-conf").textContent = pct(res.confidence);
    $("result").className = "result " + (res.uncertain ? "uncertain" : "sure");
    gate.textContent = "";
    gate.className = "gate";
  }
  const top = $("result-top");  // as on the board's screen: no classes while a gate holds them back
  top.replaceChildren(...(res.message ? [] : res.top.map((x) => el("li", "", `${x.label} ${pct(x.p)}`))));
  $("live-fps").textContent = res.fps ? t("FPS {fps}", {fps: res.fps.toFixed(1)}) : "";
  boardVisit(res.visit || "");
}

// The board's current visit (a card read, the command line, another device): it fills the visit field when it
// changes to a new one, never clears what the health worker typed.
function boardVisit(visit) {
  if (visit !== state.visit) {
    state.visit = visit;
    if (visit && document.activeElement !== $("visit-input")) {
      $("visit-input").value = visit;
      refreshVisitCaptures();
    }
  }
  $("board-visit").textContent = visit ? t("Visit {visit}", {visit}) : "";
  $("capture-visit").textContent = $("visit-input").value.trim();
}

async function setVisit(ev) {
  ev.preventDefault();
  const r = await api("/api/v1/visit", {method: "POST", body: JSON.stringify({visit: $("visit-input").value})});
  $("capture-msg").textContent = r.ok ? "" : t(await errorOf(r));
  if (r.ok) { boardVisit((await r.json()).visit || ""); refreshVisitCaptures(); }
}

async function capture() {
  const button = $("capture");
  button.disabled = true;
  $("capture-msg").textContent = "…";
  try {
    const typed = $("visit-input").value.trim();
    const r = await api("/api/v1/capture", {method: "POST", body: JSON.stringify({visit: typed || null})});
    if (!r.ok) { $("capture-msg").textContent = t(await errorOf(r)); $("capture-msg").className = "msg error"; return; }
    const c = await r.json();
    $("capture-msg").className = "msg ok";
    $("capture-msg").textContent = t("Kept: {label} {confidence}", {label: c.label, confidence: pct(c.confidence)})
      + (c.visit ? ` · ${t("Visit {visit}", {visit: c.visit})}` : "")
      + (c.duplicate_of ? ` · ${t("Duplicate of an earlier capture")}` : "");
    refreshVisitCaptures();
  } finally {
    button.disabled = false;
  }
}

// Each list keeps only the answer to its latest request: an earlier, slower answer (the whole list, asked for when
// the tab opened) must not replace a filtered one that came back first.
const latest = {visit: 0, review: 0};

async function refreshVisitCaptures() {
  const box = $("visit-captures");
  const visit = $("visit-input").value.trim();
  const asked = ++latest.visit;
  if (!visit) { box.replaceChildren(el("p", "small", t("No visit set"))); return; }
  const r = await api(`/api/v1/captures?visit=${encodeURIComponent(visit)}&limit=50`);
  const data = r.ok ? await r.json() : null;
  if (data && asked === latest.visit) box.replaceChildren(...data.captures.map(card));
}

// ---- review ----

function filterQuery() {
  const q = new URLSearchParams();
  const visit = $("f-visit").value.trim();
  if (visit) q.set("visit", visit);
  if ($("f-since").value) q.set("since", new Date($("f-since").value + "T00:00").toISOString());
  if ($("f-until").value) {
    const end = new Date($("f-until").value + "T00:00");
    end.setDate(end.getDate() + 1);
    q.set("until", end.toISOString());
  }
  return q;
}

async function loadCaptures(ev) {
  if (ev) ev.preventDefault();
  $("detail").hidden = true;
  $("captures").hidden = false;
  const q = filterQuery();
  $("export").href = "/api/v1/export?" + q.toString();
  q.set("limit", "200");
  const asked = ++latest.review;
  const r = await api("/api/v1/captures?" + q.toString());
  const data = r.ok ? await r.json() : null;
  if (asked !== latest.review) return;
  if (!data) { $("review-count").textContent = t(await errorOf(r)); return; }
  $("review-count").textContent = t("{n} capture(s)", {n: data.total});
  $("captures").replaceChildren(...data.captures.map(card));
}

function card(c) {
  const box = el("button", "card");
  box.dataset.uuid = c.uuid;
  const img = el("img");
  img.src = c.overlay;
  img.alt = c.label;
  img.loading = "lazy";
  box.append(img, el("div", c.gate && c.gate !== "pass" ? "card-label held" : "card-label", headline(c)),
    el("div", "small", `${c.created_local.replace("T", " ")}${c.visit ? " · " + c.visit : ""}`),
    el("div", "small", `${c.label} ${pct(c.confidence)}${c.duplicate_of ? " · " + t("duplicate") : ""}`));
  box.addEventListener("click", () => showDetail(c.uuid));
  return box;
}

async function showDetail(uuid) {
  showTabQuiet("review");
  const r = await api(`/api/v1/captures/${uuid}`);
  if (!r.ok) return;
  const c = await r.json();
  $("captures").hidden = true;
  $("detail").hidden = false;
  $("detail").dataset.uuid = uuid;
  $("detail-title").textContent = headline(c);
  $("detail-frame").src = c.frame;
  $("detail-overlay").src = c.overlay;
  const rows = [["Time", c.created_local], ["Visit", c.visit || "-"], ["Image checks", c.gate || "-"],
    ["Model", `${c.model.name || "-"} ${c.model.version || ""}`], ["Signature", t(c.signature || "-")],
    ["Signing key", c.model.signature || "-"], ["Software", c.model.software || "-"], ["Bundle hash", c.bundle_hash],
    ["Device", c.device_id], ["Duplicate of", c.duplicate_of || "-"], ["Files intact", c.intact ? t("yes") : c.damage]];
  for (const [k, v] of Object.entries(c.scores || {})) if (k !== "gate") rows.push([k, v === null ? "-" : String(v)]);
  table($("detail-table"), rows.map(([k, v]) => [t(k), v]));
  table($("detail-probs"), Object.entries(c.probs).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, pct(v)]));
}

function showTabQuiet(tab) {
  state.tab = tab;
  state.live = tab === "live" && state.live;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("on", b.dataset.tab === tab);
  for (const id of ["live", "review", "health"]) $(id).hidden = id !== tab;
}

function table(tbl, rows) {
  tbl.replaceChildren(...rows.map(([k, v]) => {
    const tr = el("tr");
    tr.append(el("th", "", k), el("td", "", v));
    return tr;
  }));
}

// ---- health ----

async function loadHealth() {
  const r = await api("/api/v1/health");
  if (!r.ok) return;
  const h = await r.json();
  const gb = (b) => (b === null ? "-" : `${(b / 1e9).toFixed(1)} GB`);
  table($("health-table"), [
    [t("State"), t(h.state)], [t("Model"), h.model ? `${h.model.model} ${h.model.model_version}` : "-"],
    [t("Signing key"), h.model ? h.model.signature : "-"], [t("Backend"), h.backend || "-"],
    [t("Self-test"), h.ready || "-"], [t("Frame rate"), h.fps === null ? "-" : `${h.fps} FPS`],
    [t("Temperature"), h.temperature_c === null ? "-" : `${h.temperature_c} °C`],
    [t("Free disk"), gb(h.free_disk_bytes)], [t("Captures kept"), String(h.kept)],
    [t("Waiting to be sent"), h.unsent === null ? t("not configured") : String(h.unsent)],
    [t("Visit"), h.visit ? `${h.visit.id} (${t(h.visit.source)})` : "-"]]);
}

async function logout() {
  await api("/api/v1/logout", {method: "POST", body: "{}"});
  state.csrf = null;
  showPair();
}

document.addEventListener("DOMContentLoaded", () => {
  $("pair-form").addEventListener("submit", pair);
  $("visit-form").addEventListener("submit", setVisit);
  $("visit-input").addEventListener("input", () => { $("capture-visit").textContent = $("visit-input").value.trim(); });
  $("capture").addEventListener("click", capture);
  $("filter").addEventListener("submit", loadCaptures);
  $("detail-close").addEventListener("click", () => loadCaptures());
  $("logout").addEventListener("click", logout);
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  start();
});
