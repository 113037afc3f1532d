// The companion web page: plain JavaScript, no dependencies (it must work offline).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { models: [], history: [], me: null, busy: false };

// ----------------------------------------------------------------------------- HTTP

function headers(json) {
  const h = {};
  const key = localStorage.getItem("companion-key") || "";
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(method, path, body) {
  const r = await fetch(path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((data && data.error && data.error.message) || r.statusText);
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function status(id, text, bad) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("bad", !!bad);
}

function current() {
  return state.models.find((m) => m.id === $("#model").value) || { id: $("#model").value, category: "personality" };
}

// ----------------------------------------------------------------------------- chat

function addMessage(role, text) {
  const body = el("div", { class: "text" }, text);
  const node = el("div", { class: "msg " + role }, body);
  $("#messages").append(node);
  $("#messages").scrollTop = $("#messages").scrollHeight;
  return node;
}

async function* sse(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) if (line.startsWith("data: ")) yield line.slice(6);
    }
  }
}

// Emotion and scenario for card-mode requests (only user/assistant turns), as `extra_body` would send them.
function companionOptions(messages) {
  if ($("#steer").hidden || messages.some((m) => m.role === "system")) return {};
  const companion = {};
  if ($("#emotion-choice").value) companion.emotion = $("#emotion-choice").value;
  if ($("#context-choice").value) companion.context = $("#context-choice").value;
  return Object.keys(companion).length ? { companion } : {};
}

async function loadPersonality() {
  const m = current();
  const box = $("#steer");
  box.hidden = true;
  if (!m || m.category !== "personality") return;
  try {
    const info = await api("GET", "/api/personalities/" + encodeURIComponent(m.id));
    const first = (text) => el("option", { value: "" }, text);
    $("#emotion-choice").replaceChildren(first("follows the conversation"), ...info.labels.map((l) => el("option", { value: l }, l)));
    $("#context-choice").replaceChildren(first("none"), ...Object.entries(info.contexts).map(([k, d]) => el("option", { value: k, title: d }, k)));
    box.hidden = false;
  } catch (e) {
    box.hidden = true; // a plain model, or no read access: chat works without the choices
  }
}

async function streamAnswer(messages, node) {
  const textNode = node.querySelector(".text");
  const r = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(true),
    body: JSON.stringify({ model: current().id, messages, stream: true, ...companionOptions(messages) }),
  });
  if (!r.ok) {
    const data = await r.json().catch(() => null);
    throw new Error((data && data.error && data.error.message) || r.statusText);
  }
  let text = "";
  let extra = {};
  let pieces = 0;
  for await (const data of sse(r)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    for (const choice of chunk.choices || []) {
      if (choice.delta && choice.delta.content) {
        text += choice.delta.content;
        textNode.textContent = text;
        node.dataset.pieces = String(++pieces);
        $("#messages").scrollTop = $("#messages").scrollHeight;
      }
      if (choice.companion) extra = choice.companion;
    }
  }
  return { text: text.trim(), ...extra };
}

function decorate(node, answer, turn) {
  node.dataset.responseId = answer.response_id || "";
  node.querySelector(".meta")?.remove();
  const emotion = answer.emotion || answer.detected_emotion;
  if (emotion) $("#emotion").textContent = emotion;
  const rate = (value, button) => async () => {
    try {
      await api("POST", "/api/feedback", { response_id: answer.response_id, rating: value });
      node.dataset.rated = String(value);
      node.querySelectorAll(".rate").forEach((b) => b.classList.remove("chosen"));
      button.classList.add("chosen");
    } catch (e) { node.querySelector(".meta .note").textContent = e.message; }
  };
  const up = el("button", { class: "rate up", title: "Good answer" }, "▲ good");
  const down = el("button", { class: "rate down", title: "Bad answer" }, "▼ bad");
  up.addEventListener("click", rate(1, up));
  down.addEventListener("click", rate(-1, down));
  const again = el("button", { class: "regenerate", title: "Another answer", onclick: () => regenerate(node, answer, turn) }, "↻ again");
  const meta = el("div", { class: "meta" }, emotion ? el("span", { class: "emo" }, emotion) : "", up, down, again, el("span", { class: "note" }));
  if (!answer.response_id) { up.disabled = down.disabled = true; }
  node.append(meta);
}

async function ask(messages, node, turn) {
  state.busy = true;
  $("#send").disabled = true;
  try {
    const answer = await streamAnswer(messages, node);
    node.querySelector(".text").textContent = answer.text;
    state.history[turn] = { role: "assistant", content: answer.text };
    decorate(node, answer, turn);
  } catch (e) {
    node.classList.add("error");
    node.querySelector(".text").textContent = "error: " + e.message;
  } finally {
    state.busy = false;
    $("#send").disabled = false;
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("#input").value.trim();
  if (!text || state.busy) return;
  $("#input").value = "";
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  const messages = state.history.slice();
  const turn = state.history.length;
  state.history.push({ role: "assistant", content: "" });
  await ask(messages, addMessage("assistant", ""), turn);
}

async function regenerate(node, answer, turn) {
  if (state.busy) return;
  state.busy = true;  // the feedback is recorded before the new answer starts
  if (answer.response_id) await api("POST", "/api/feedback", { response_id: answer.response_id, regenerate: true }).catch(() => {});
  state.busy = false;
  node.classList.remove("error");
  node.querySelector(".meta")?.remove();
  node.querySelector(".text").textContent = "";
  await ask(state.history.slice(0, turn), node, turn);
}

// ----------------------------------------------------------------------------- preferences, memory

async function loadPrefs() {
  try {
    const data = await api("GET", "/api/me/preferences");
    $("#prefs").value = JSON.stringify(data.preferences, null, 2);
    $("#learned").textContent = JSON.stringify(data.learned, null, 2);
    status("#prefs-status", "");
  } catch (e) { status("#prefs-status", e.message, true); }
}

async function savePrefs() {
  try {
    const prefs = JSON.parse($("#prefs").value || "{}");
    const data = await api("PUT", "/api/me/preferences", { preferences: prefs });
    $("#prefs").value = JSON.stringify(data.preferences, null, 2);
    status("#prefs-status", "saved");
  } catch (e) { status("#prefs-status", e.message, true); }
}

async function loadMemory() {
  try {
    const data = await api("GET", "/api/me/memory");
    const list = $("#memory-list");
    list.replaceChildren();
    for (const f of data.facts) {
      const edit = async () => {
        const text = prompt("Change what is remembered:", f.text);
        if (text === null) return;
        try { await api("PUT", "/api/me/memory/" + f.id, { text, kind: f.kind }); loadMemory(); } catch (e) { status("#memory-status", e.message, true); }
      };
      const forget = async () => {
        try { await api("DELETE", "/api/me/memory/" + f.id); loadMemory(); } catch (e) { status("#memory-status", e.message, true); }
      };
      list.append(el("li", {}, el("span", { class: "kind" }, f.kind), f.text + " ",
        el("button", { onclick: edit }, "edit"), " ", el("button", { onclick: forget }, "forget")));
    }
    if (!data.facts.length) list.append(el("li", {}, "Nothing remembered yet."));
  } catch (e) { status("#memory-status", e.message, true); }
}

async function addMemory(event) {
  event.preventDefault();
  const text = $("#memory-text").value.trim();
  if (!text) return;
  try {
    await api("POST", "/api/me/memory", { text, kind: $("#memory-kind").value });
    $("#memory-text").value = "";
    status("#memory-status", "remembered");
    loadMemory();
  } catch (e) { status("#memory-status", e.message, true); }
}

// ----------------------------------------------------------------------------- versions

async function loadVersions() {
  const m = current();
  $("#versions-model").textContent = m.category + "/" + m.id + (state.me && state.me.admin ? " (you are an admin: you can roll back)" : "");
  try {
    const data = await api("GET", `/api/models/${m.category}/${encodeURIComponent(m.id)}/versions`);
    const body = $("#versions tbody");
    body.replaceChildren();
    for (const v of data.versions) {
      const cell = el("td", {});
      if (state.me && state.me.admin && !(v.aliases || []).includes("current")) {
        cell.append(el("button", { onclick: () => rollback(m, v.version) }, "roll back to this"));
      }
      body.append(el("tr", {}, el("td", {}, v.version), el("td", {}, v.created_at || v.created || ""),
        el("td", {}, (v.aliases || []).join(", ")), el("td", {}, v.notes || v.version_notes || ""), cell));
    }
    if (!data.versions.length) body.append(el("tr", {}, el("td", { colspan: "5" }, "No saved versions (the model runs from its configured folder).")));
    const hist = $("#alias-history");
    hist.replaceChildren(...data.history.map((h) => el("li", {}, `${h.at}: ${h.alias} ${h.from_version || "—"} → ${h.to_version} by ${h.actor}${h.reason ? " (" + h.reason + ")" : ""}`)));
    status("#versions-status", "");
  } catch (e) { status("#versions-status", e.message, true); }
}

async function rollback(m, version) {
  if (!confirm(`Move ${m.id}'s current alias to ${version}?`)) return;
  try {
    await api("POST", `/api/models/${m.category}/${encodeURIComponent(m.id)}/rollback`, { version });
    status("#versions-status", "rolled back to " + version);
    loadVersions();
  } catch (e) { status("#versions-status", e.message, true); }
}

// ----------------------------------------------------------------------------- monitor charts

function chart(canvas, series, options) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = { l: 44, r: 10, t: 10, b: 22 };
  ctx.clearRect(0, 0, W, H);
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const max = options.max || Math.max(1, ...values) * 1.1;
  const n = series[0] ? series[0].values.length : 0;
  const x = (i) => pad.l + (n <= 1 ? 0 : (i * (W - pad.l - pad.r)) / (n - 1));
  const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
  ctx.strokeStyle = "#ccc"; ctx.fillStyle = "#777"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, y(v)); ctx.lineTo(W - pad.r, y(v)); ctx.stroke();
    ctx.fillText(v >= 100 ? v.toFixed(0) : v.toFixed(1), 4, y(v) + 4);
  }
  if (options.labels && n) {
    ctx.fillText(options.labels[0], pad.l, H - 6);
    const last = options.labels[n - 1];
    ctx.fillText(last, W - pad.r - ctx.measureText(last).width, H - 6);
  }
  if (!values.length) { ctx.fillText("no data in this period", W / 2 - 50, H / 2); return; }
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.lineWidth = 2;
    if (s.bars) {
      const w = Math.max(2, (W - pad.l - pad.r) / Math.max(1, n) - 2);
      s.values.forEach((v, i) => { if (v) ctx.fillRect(x(i) - w / 2, y(v), w, H - pad.b - y(v)); });
      continue;
    }
    ctx.beginPath();
    let open = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { open = false; return; }
      if (open) ctx.lineTo(x(i), y(v)); else { ctx.moveTo(x(i), y(v)); open = true; }
      ctx.fillRect(x(i) - 2, y(v) - 2, 4, 4);
    });
    ctx.stroke();
  }
}

async function loadMonitor() {
  const m = current();
  try {
    const data = await api("GET", `/api/monitor/${m.category}/${encodeURIComponent(m.id)}?period=${$("#period").value}`);
    const f = data.metrics;
    const fmt = (v, unit) => (v === null || v === undefined ? "—" : (Math.round(v * 10) / 10) + unit);
    const box = (label, value) => el("div", {}, el("b", {}, value), label);
    $("#figures").replaceChildren(
      box("requests", String(f.requests ?? data.series.reduce((a, b) => a + b.requests, 0))),
      box("mean response time", fmt(f.avg_response_time, " ms")),
      box("time to first token", fmt(f.avg_time_to_first_token ?? f.time_to_first_token, " ms")),
      box("user satisfaction", fmt(f.user_satisfaction, " %")),
      box("accuracy", fmt(f.accuracy, " %")),
    );
    const labels = data.series.map((b) => b.start.slice(5, 16).replace("T", " "));
    chart($("#chart-requests"), [{ values: data.series.map((b) => b.requests), color: "#6b4fbb", bars: true }], { labels });
    chart($("#chart-latency"), [
      { values: data.series.map((b) => b.avg_response_time), color: "#2a7ab8" },
      { values: data.series.map((b) => b.p95_response_time), color: "#d08a1a" },
    ], { labels });
    chart($("#chart-satisfaction"), [{ values: data.series.map((b) => b.user_satisfaction), color: "#2f9a5a" }], { labels, max: 100 });
    $("#figures").dataset.satisfaction = String(f.user_satisfaction);
  } catch (e) { $("#figures").replaceChildren(el("div", { class: "status bad" }, e.message)); }
}

// ----------------------------------------------------------------------------- start

const loaders = { prefs: loadPrefs, memory: loadMemory, versions: loadVersions, monitor: loadMonitor };

function showTab(name) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === "tab-" + name));
  if (loaders[name]) loaders[name]();
}

async function start() {
  $("#key").value = localStorage.getItem("companion-key") || "";
  $("#key").addEventListener("change", () => { localStorage.setItem("companion-key", $("#key").value.trim()); start(); });
  try {
    state.me = await api("GET", "/api/me");
    $("#who").textContent = state.me.user + (state.me.admin ? " (admin)" : "");
    const models = (await api("GET", "/v1/models")).data;
    models.sort((a, b) => (a.category === "personality" ? 0 : 1) - (b.category === "personality" ? 0 : 1));
    state.models = models;
    const select = $("#model");
    const chosen = select.value || new URLSearchParams(location.search).get("model");
    select.replaceChildren(...models.map((m) => el("option", { value: m.id }, m.category === "personality" ? m.id : m.id + " (base)")));
    if (chosen && models.some((m) => m.id === chosen)) select.value = chosen;
    await loadPersonality();
    document.body.dataset.ready = "1";
  } catch (e) {
    $("#who").textContent = e.message;
  }
}

document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
$("#composer").addEventListener("submit", send);
$("#input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) send(e); });
$("#reset").addEventListener("click", () => { state.history = []; $("#messages").replaceChildren(); $("#emotion").textContent = "—"; });
$("#model").addEventListener("change", () => { state.history = []; $("#messages").replaceChildren(); loadPersonality(); const a = document.querySelector(".tab.active").dataset.tab; if (loaders[a]) loaders[a](); });
$("#prefs-save").addEventListener("click", savePrefs);
$("#memory-add").addEventListener("submit", addMemory);
$("#monitor-refresh").addEventListener("click", loadMonitor);
$("#period").addEventListener("change", loadMonitor);
start();
