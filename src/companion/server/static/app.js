// The companion web page: plain JavaScript, no dependencies (it must work offline).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { models: [], chats: [], chat: null, me: null, busy: false, images: [], voices: [] };

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
// The conversation lives on the server (/api/chats): the page renders the stored chat and keeps
// which chat is open per model in localStorage, so a reload finds it again.

function modelRef(m) { return (m.category || "personality") + "/" + m.id; }
function chatKey() { return "companion-chat:" + modelRef(current()); }

function setBusy(busy) {
  state.busy = busy;
  $("#send").disabled = busy;
}

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

// Emotion and scenario for a personality's answer.
function steering() {
  if ($("#steer").hidden) return {};
  const out = {};
  if ($("#emotion-choice").value) out.emotion = $("#emotion-choice").value;
  if ($("#context-choice").value) out.context = $("#context-choice").value;
  return out;
}

async function loadPersonality() {
  const m = current();
  $("#steer").hidden = true;
  $("#character").hidden = true;
  if (!m || m.category !== "personality") return;
  try {
    const info = await api("GET", "/api/personalities/" + encodeURIComponent(m.id));
    const first = (text) => el("option", { value: "" }, text);
    $("#emotion-choice").replaceChildren(first("follows the conversation"), ...info.labels.map((l) => el("option", { value: l }, l)));
    $("#context-choice").replaceChildren(first("none"), ...Object.entries(info.contexts).map(([k, d]) => el("option", { value: k, title: d }, k)));
    $("#steer").hidden = false;
    $("#character-name").textContent = info.character;
    $("#character-description").textContent = (info.description || "").slice(0, 240);
    $("#avatar").src = await avatarUrl(info.avatar);
    $("#character").hidden = false;
  } catch (e) {
    // a plain model, or no read access: chat works without the card
  }
}

async function avatarUrl(path) {
  // fetched with the key (an <img src> cannot send it), shown from a blob URL
  const r = await fetch(path, { headers: headers(false) });
  if (!r.ok) return "";
  return URL.createObjectURL(await r.blob());
}

async function loadChats() {
  const data = await api("GET", "/api/chats?model=" + encodeURIComponent(modelRef(current())));
  state.chats = data.chats;
  const list = $("#chat-list");
  list.replaceChildren(...data.chats.map((c) => el("li", {
    class: c.id === (state.chat && state.chat.id) ? "active" : "", "data-id": c.id, title: c.updated_at,
    onclick: () => openChat(c.id),
  }, c.title, el("small", {}, c.last || ""))));
  if (!data.chats.length) list.append(el("li", { class: "status" }, "No chats yet."));
}

async function openChat(id) {
  state.chat = await api("GET", "/api/chats/" + id);
  localStorage.setItem(chatKey(), id);
  renderChat();
  await loadChats();
}

async function newChat() {
  const body = { model: current().id };
  if ($("#context-choice").value && !$("#steer").hidden) body.context = $("#context-choice").value;
  const chat = await api("POST", "/api/chats", body);
  await openChat(chat.id);
}

// The chat open for this model: the one this browser had open, else the latest, else a new one.
async function restoreChat() {
  state.chat = null;
  await loadChats();
  const remembered = localStorage.getItem(chatKey());
  const pick = state.chats.find((c) => c.id === remembered) || state.chats[0];
  if (pick) await openChat(pick.id); else await newChat();
}

function renderChat() {
  const chat = state.chat;
  const box = $("#messages");
  box.replaceChildren();
  if (!chat) return;
  $("#chat-title").value = chat.title;
  $("#export-json").href = "#";
  $("#export-st").href = "#";
  chat.messages.forEach((m, i) => box.append(renderMessage(m, i === chat.messages.length - 1)));
  box.scrollTop = box.scrollHeight;
  const last = chat.messages[chat.messages.length - 1];
  if (last && last.details && last.details.emotion) $("#emotion").textContent = last.details.emotion;
}

function renderMessage(m, isLast) {
  const node = el("div", { class: "msg " + m.role + (m.details && m.details.greeting ? " greeting" : "") }, el("div", { class: "text" }, m.text));
  node.dataset.position = String(m.position);
  for (const url of (m.details && m.details.images) || []) node.append(el("img", { class: "thumb", src: url, alt: "attached image" }));
  if (m.role !== "assistant") return node;
  const swipe = m.swipes[m.swipe_id] || {};
  node.dataset.responseId = swipe.response_id || "";
  node.dataset.swipe = String(m.swipe_id);
  const meta = el("div", { class: "meta" });
  if (m.swipes.length > 1 || isLast) {
    const go = (step) => () => chooseSwipe(m, (m.swipe_id + step + m.swipes.length) % m.swipes.length);
    const left = el("button", { class: "swipe-left", title: "Previous answer", onclick: go(-1) }, "‹");
    const right = el("button", { class: "swipe-right", title: "Next answer", onclick: go(1) }, "›");
    left.disabled = right.disabled = m.swipes.length < 2;
    meta.append(el("span", { class: "swipes" }, left, el("span", { class: "swipe-count" }, `${m.swipe_id + 1}/${m.swipes.length}`), right));
  }
  if (m.details && m.details.emotion) meta.append(el("span", { class: "emo" }, m.details.emotion));
  if (swipe.response_id) {
    const rate = (value, button) => async () => {
      try {
        await api("POST", "/api/feedback", { response_id: swipe.response_id, rating: value });
        node.dataset.rated = String(value);
        node.querySelectorAll(".rate").forEach((b) => b.classList.remove("chosen"));
        button.classList.add("chosen");
      } catch (e) { node.querySelector(".meta .note").textContent = e.message; }
    };
    const up = el("button", { class: "rate up", title: "Good answer" }, "▲ good");
    const down = el("button", { class: "rate down", title: "Bad answer" }, "▼ bad");
    up.addEventListener("click", rate(1, up));
    down.addEventListener("click", rate(-1, down));
    meta.append(up, down);
  }
  meta.append(el("button", { class: "edit", title: "Edit this answer", onclick: () => editMessage(node, m) }, "✎ edit"));
  if (state.voices.length && state.chat) {
    meta.append(el("button", { class: "speak", title: "Read this answer aloud", onclick: () => speakMessage(node, m) }, "🔊"));
  }
  if (isLast && !(m.details && m.details.greeting)) {
    meta.append(el("button", { class: "regenerate", title: "Another answer (the others stay: swipe back)", onclick: () => reply("regenerate") }, "↻ again"));
    meta.append(el("button", { class: "continue", title: "Continue this answer", onclick: () => reply("continue") }, "→ continue"));
  }
  meta.append(el("span", { class: "note" }));
  node.append(meta);
  return node;
}

async function speakMessage(node, m) {
  const note = node.querySelector(".meta .note");
  note.textContent = "…";
  try {
    const r = await fetch(`/api/chats/${state.chat.id}/messages/${m.position}/speech`, { headers: headers(false) });
    if (!r.ok) {
      const data = await r.json().catch(() => null);
      throw new Error((data && data.error && data.error.message) || r.statusText);
    }
    const audio = new Audio(URL.createObjectURL(await r.blob()));
    node.dataset.spoken = r.headers.get("X-Voice") || "yes";
    note.textContent = "";
    await audio.play().catch(() => {});  // a browser may refuse to play without a gesture: the audio is fetched
  } catch (e) { note.textContent = e.message; }
}

async function chooseSwipe(m, index) {
  if (state.busy) return;
  await api("PUT", `/api/chats/${state.chat.id}/messages/${m.position}`, { swipe_id: index });
  state.chat = await api("GET", "/api/chats/" + state.chat.id);
  renderChat();
}

function editMessage(node, m) {
  if (state.busy || node.querySelector(".edit-box")) return;
  const box = el("textarea", { class: "edit-box" });
  box.value = m.text;
  const save = el("button", { class: "save-edit", onclick: async () => {
    await api("PUT", `/api/chats/${state.chat.id}/messages/${m.position}`, { content: box.value });
    state.chat = await api("GET", "/api/chats/" + state.chat.id);
    renderChat();
  } }, "Save");
  const cancel = el("button", { onclick: () => renderChat() }, "Cancel");
  node.querySelector(".text").replaceWith(box);
  node.querySelector(".meta").replaceChildren(save, cancel);
  box.focus();
}

// Send a message, regenerate or continue: the answer streams into the page, then the stored chat is shown.
async function reply(action, content) {
  if (state.busy || !state.chat) return;
  setBusy(true);
  const chatId = state.chat.id;
  let node;
  const images = action === "send" ? state.images.splice(0) : [];
  $("#attached").textContent = "";
  if (action === "send") {
    const mine = addMessage("user", content);
    for (const url of images) mine.append(el("img", { class: "thumb", src: url, alt: "attached image" }));
    node = addMessage("assistant", "");
  } else {
    const nodes = document.querySelectorAll("#messages .msg.assistant");
    node = nodes[nodes.length - 1];
    node.querySelector(".meta")?.remove();
    if (action === "regenerate") node.querySelector(".text").textContent = "";
  }
  const textNode = node.querySelector(".text");
  const start = action === "continue" ? textNode.textContent : "";
  const body = { stream: true, ...steering() };
  if (content !== undefined) body.content = content;
  if (images.length) body.images = images;
  try {
    const r = await fetch(`/api/chats/${chatId}/${action === "send" ? "messages" : action}`, {
      method: "POST", headers: headers(true), body: JSON.stringify(body),
    });
    if (!r.ok) {
      const data = await r.json().catch(() => null);
      throw new Error((data && data.error && data.error.message) || r.statusText);
    }
    let text = "", pieces = 0, done = null;
    for await (const data of sse(r)) {
      const event = JSON.parse(data);
      if (event.error) throw new Error(event.error.message);
      if (event.delta) {
        text += event.delta;
        textNode.textContent = start + text;
        node.dataset.pieces = String(++pieces);
        $("#messages").scrollTop = $("#messages").scrollHeight;
      }
      if (event.done) done = event;
    }
    const emotion = done && (done.companion.emotion || done.companion.detected_emotion);
    if (emotion) $("#emotion").textContent = emotion;
    state.chat = await api("GET", "/api/chats/" + chatId);
    renderChat();
    const answers = document.querySelectorAll("#messages .msg.assistant");
    answers[answers.length - 1].dataset.pieces = String(pieces);
    loadChats();
  } catch (e) {
    node.classList.add("error");
    textNode.textContent = "error: " + e.message;
  } finally {
    setBusy(false);
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("#input").value.trim();
  if (!text || state.busy) return;
  $("#input").value = "";
  await reply("send", text);
}

async function download(format) {
  const r = await fetch(`/api/chats/${state.chat.id}/export?format=${format}`, { headers: headers(false) });
  if (!r.ok) return status("#import-status", "export failed: " + r.statusText, true);
  const name = (r.headers.get("content-disposition") || "").match(/filename="([^"]+)"/);
  const a = el("a", { href: URL.createObjectURL(await r.blob()), download: name ? name[1] : "chat" });
  document.body.append(a);
  a.click();
  a.remove();
}

async function importCard(file) {
  try {
    const r = await fetch("/api/cards?filename=" + encodeURIComponent(file.name), {
      method: "POST", headers: { ...headers(false), "Content-Type": "application/octet-stream" }, body: file,
    });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error.message);
    status("#import-status", `imported ${data.character} as ${data.model}`);
    await start(data.model);
  } catch (e) { status("#import-status", e.message, true); }
}

async function importChat(file) {
  try {
    const chat = await api("POST", "/api/chats/import", { text: await file.text(), model: modelRef(current()) });
    status("#import-status", `imported “${chat.title}” (${chat.messages.length} messages)`);
    await openChat(chat.id);
  } catch (e) { status("#import-status", e.message, true); }
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

async function start(chosenModel) {
  $("#key").value = localStorage.getItem("companion-key") || "";
  try {
    state.me = await api("GET", "/api/me");
    $("#who").textContent = state.me.user + (state.me.admin ? " (admin)" : "");
    const models = (await api("GET", "/v1/models")).data;
    models.sort((a, b) => (a.category === "personality" ? 0 : 1) - (b.category === "personality" ? 0 : 1));
    state.models = models;
    try { state.voices = (await api("GET", "/api/voices")).voices; } catch (e) { state.voices = []; }
    const select = $("#model");
    const chosen = chosenModel || select.value || new URLSearchParams(location.search).get("model") || localStorage.getItem("companion-model");
    select.replaceChildren(...models.map((m) => el("option", { value: m.id }, m.category === "personality" ? m.id : m.id + " (base)")));
    if (chosen && models.some((m) => m.id === chosen)) select.value = chosen;
    localStorage.setItem("companion-model", select.value);
    await loadPersonality();
    await restoreChat();
    document.body.dataset.ready = "1";
  } catch (e) {
    $("#who").textContent = e.message;
  }
}

async function modelChanged() {
  localStorage.setItem("companion-model", $("#model").value);
  $("#emotion").textContent = "—";
  await loadPersonality();
  await restoreChat();
  const a = document.querySelector(".tab.active").dataset.tab;
  if (loaders[a]) loaders[a]();
}

document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
$("#key").addEventListener("change", () => { localStorage.setItem("companion-key", $("#key").value.trim()); start(); });
$("#composer").addEventListener("submit", send);
$("#input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) send(e); });
$("#new-chat").addEventListener("click", () => newChat().catch((e) => status("#import-status", e.message, true)));
$("#chat-title").addEventListener("change", async () => {
  const title = $("#chat-title").value.trim();
  if (title && state.chat) { state.chat = await api("PATCH", "/api/chats/" + state.chat.id, { title }); loadChats(); }
});
$("#delete-chat").addEventListener("click", async () => {
  if (!state.chat || !confirm(`Delete “${state.chat.title}”?`)) return;
  await api("DELETE", "/api/chats/" + state.chat.id);
  localStorage.removeItem(chatKey());
  await restoreChat();
});
$("#export-json").addEventListener("click", (e) => { e.preventDefault(); download("json"); });
$("#export-st").addEventListener("click", (e) => { e.preventDefault(); download("sillytavern"); });
$("#card-file").addEventListener("change", (e) => { if (e.target.files[0]) importCard(e.target.files[0]); e.target.value = ""; });
$("#chat-file").addEventListener("change", (e) => { if (e.target.files[0]) importChat(e.target.files[0]); e.target.value = ""; });
$("#image-file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => { state.images.push(reader.result); $("#attached").textContent = `${state.images.length} image(s) attached`; };
  reader.readAsDataURL(file);
});
let dragDepth = 0;
document.addEventListener("dragenter", (e) => { if (e.dataTransfer.types.includes("Files")) { dragDepth++; $("#drop").hidden = false; } });
document.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; $("#drop").hidden = true; } });
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  $("#drop").hidden = true;
  const file = e.dataTransfer.files[0];
  if (!file) return;
  if (/\.(jsonl)$/i.test(file.name)) importChat(file); else importCard(file);
});
$("#model").addEventListener("change", modelChanged);
$("#prefs-save").addEventListener("click", savePrefs);
$("#memory-add").addEventListener("submit", addMemory);
$("#monitor-refresh").addEventListener("click", loadMonitor);
$("#period").addEventListener("change", loadMonitor);
start();
