// gearwatch console: polls the agent's JSON API; the token (if any) lives in localStorage.
"use strict";
const $ = (id) => document.getElementById(id);
const LABELS = { real_fault: "Real fault", false_alarm: "False alarm",
                 planned_maintenance: "Planned maintenance", unknown: "Unknown" };
let token = localStorage.getItem("gearwatch-token") || "";
let currentEvent = null;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function when(ns) {
  if (ns === null || ns === undefined) return "";
  return new Date(Number(ns) / 1e6).toISOString().replace("T", " ").slice(0, 19);
}
function flash(msg, ok) {
  const f = $("flash");
  f.textContent = msg; f.className = ok ? "ok" : "err"; f.hidden = false;
  clearTimeout(flash.t); flash.t = setTimeout(() => { f.hidden = true; }, 8000);
}
async function api(path, opts = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { ...opts, headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function eventRow(e) {
  const top = (e.top_sensors || []).map((t) => `${esc(t.sensor)} ${Math.round(t.share * 100)}%`).join(", ");
  return `<a class="event" href="#/event/${esc(e.id)}" data-event="${esc(e.id)}">
    <span class="sev ${esc(e.severity)}">${esc(e.severity)}</span>
    <strong>${esc(e.asset)}</strong>
    <span>${e.end_ns ? "closed" : "open"} since ${when(e.start_ns)}</span>
    <span>peak ${Number(e.peak_score).toFixed(1)}</span>
    <span>${top}</span>
    ${e.label ? `<span class="label">${esc(LABELS[e.label] || e.label)}</span>` : ""}
  </a>`;
}

async function refreshHome() {
  const [assets, open, recent] = await Promise.all([
    api("/api/assets"), api("/api/events?state=open"), api("/api/events?state=all&limit=20")]);
  $("assets").innerHTML = assets.map((a) => `
    <div class="card s-${esc(a.state)}" data-asset="${esc(a.id)}">
      <div class="name">${esc(a.id)}</div>
      <div class="score">${a.score === null ? "–" : a.score.toFixed(1)}</div>
      <div class="meta">${esc(a.state)} · threshold <span class="thr">${a.open_threshold.toFixed(2)}</span>
        ${a.threshold_offset > 0 ? `(+${a.threshold_offset.toFixed(2)} from feedback)` : ""}</div>
      <div class="meta">${esc(a.asset_class)} · rule ${esc(a.rule)}</div>
    </div>`).join("");
  $("open-events").innerHTML = open.length ? open.map(eventRow).join("") :
    '<p class="empty">No open events.</p>';
  $("recent-events").innerHTML = recent.length ? recent.map(eventRow).join("") :
    '<p class="empty">No events yet.</p>';
}

async function refreshEvent(id, plot) {
  const e = await api("/api/events/" + encodeURIComponent(id));
  currentEvent = e;
  $("ev-id").textContent = e.id.slice(0, 8);
  const top = (e.top_sensors || []).map((t) => `${esc(t.sensor)} ${Math.round(t.share * 100)}%`).join(", ");
  const facts = [["Asset", esc(e.asset)], ["State", e.end_ns ? "closed" : "open"],
    ["Severity", esc(e.severity)], ["Start (UTC)", when(e.start_ns)], ["End (UTC)", when(e.end_ns)],
    ["Peak score", Number(e.peak_score).toFixed(2)], ["Top sensors", top],
    ["Model", esc(e.model_version)], ["Re-opened", e.reopened],
    ["Label", `<span id="ev-label">${esc(LABELS[e.label] || e.label || "none")}</span>`]];
  $("ev-facts").innerHTML = facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
  $("ev-labels").innerHTML = (e.labels || []).map((l) =>
    `<div>${when(l.ts_ns)} · ${esc(l.who)}: <strong>${esc(LABELS[l.label] || l.label)}</strong>
      ${l.fault_code ? "· " + esc(l.fault_code) : ""} ${l.note ? "· " + esc(l.note) : ""}</div>`).join("");
  if (plot) $("ev-plot").src = `/api/events/${encodeURIComponent(id)}/plot.png?t=${Date.now()}`;
}

async function refreshAudit() {
  const rows = await api("/api/audit");
  $("audit").innerHTML = rows.map((r) => `<tr class="audit-row" data-action="${esc(r.action)}">
    <td>${r.seq}</td><td>${when(r.ts_ns)}</td><td>${esc(r.who)}</td><td>${esc(r.action)}</td>
    <td>${esc(r.subject)}</td><td><code>${esc(JSON.stringify(r.detail))}</code></td></tr>`).join("");
}
async function refreshModels() {
  const rows = await api("/api/models");
  $("models").innerHTML = rows.map((m) => `<tr><td>${esc(m.asset_class)}</td><td>${esc(m.kind)}</td>
    <td>${esc(m.detector || m.device)}</td><td>${esc(m.version)}</td><td>${m.assets}</td>
    <td><code>${esc(JSON.stringify(m.metrics))}</code></td>
    <td>${m.kind === "lstm_ae" && m.previous ? `<button class="btn" data-rollback="${esc(m.asset_class)}"
      title="back to ${esc(m.previous)}">Roll back</button>` : ""}</td></tr>`).join("");
}
async function refreshWindows() {
  const rows = await api("/api/maintenance");
  $("windows").innerHTML = rows.length ? rows.map((w) => `<div class="event">
    <strong>${esc(w.assets.join(", "))}</strong>
    <span>${w.start_ns ? when(w.start_ns) + " → " + when(w.end_ns) :
      esc(w.weekly.days.join(",")) + " " + esc(w.weekly.start) + "–" + esc(w.weekly.end)}</span>
    <span>${esc(w.reason)} (${esc(w.created_by)})</span>
    ${w.id !== null ? `<button class="btn" data-remove="${w.id}">Remove</button>` : ""}</div>`).join("")
    : '<p class="empty">No maintenance windows.</p>';
}

function route() {
  const h = location.hash || "#/";
  const m = h.match(/^#\/event\/(.+)$/);
  const view = m ? "event" : (h.slice(2) || "home");
  for (const v of ["home", "event", "audit", "models", "maintenance"]) $("view-" + v).hidden = v !== view;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === h));
  return { view, id: m ? decodeURIComponent(m[1]) : null };
}
async function refresh(plot) {
  const r = route();
  try {
    if (r.view === "home") await refreshHome();
    else if (r.view === "event") await refreshEvent(r.id, plot);
    else if (r.view === "audit") await refreshAudit();
    else if (r.view === "models") await refreshModels();
    else if (r.view === "maintenance") await refreshWindows();
  } catch (err) { flash(err.message, false); }
}

async function setWho() {
  $("logout-btn").hidden = !token; $("login-btn").hidden = !!token; $("token").hidden = !!token;
  if (!token) { $("who").textContent = "read-only"; return; }
  try { $("who").textContent = "logged in as " + (await api("/api/whoami")).name; }
  catch (err) { $("who").textContent = "read-only"; flash("Login failed: " + err.message, false);
                token = ""; localStorage.removeItem("gearwatch-token"); setWho(); }
}

document.addEventListener("click", async (ev) => {
  const t = ev.target.closest("button");
  if (!t) return;
  if (t.dataset.label && currentEvent) {
    const body = { label: t.dataset.label, note: $("note").value || null,
                   fault_code: $("fault-code").value || null };
    try {
      const out = await api(`/api/events/${encodeURIComponent(currentEvent.id)}/label`,
                            { method: "POST", body: JSON.stringify(body) });
      const c = out.threshold_change;
      flash(`Labelled ${LABELS[body.label]}` + (c ? ` · threshold of ${c.asset} ${c.from.toFixed(2)} → ${c.to.toFixed(2)}` : ""), true);
      $("note").value = ""; $("fault-code").value = "";
      await refreshEvent(currentEvent.id, false);
    } catch (err) { flash("Label refused: " + err.message, false); }
  } else if (t.dataset.rollback) {
    try {
      const r = await api("/api/models/" + encodeURIComponent(t.dataset.rollback) + "/rollback",
                          { method: "POST", body: "{}" });
      flash(`${r.asset_class}: model ${r.version} installed`, true); await refreshModels();
    } catch (err) { flash("Rollback refused: " + err.message, false); }
  } else if (t.dataset.remove) {
    try { await api("/api/maintenance/" + t.dataset.remove, { method: "DELETE" }); await refreshWindows(); }
    catch (err) { flash(err.message, false); }
  }
});
$("mw-add").onclick = async () => {
  const body = { assets: $("mw-assets").value.split(",").map((s) => s.trim()).filter(Boolean),
                 start: $("mw-start").value ? $("mw-start").value + ":00Z" : null,
                 end: $("mw-end").value ? $("mw-end").value + ":00Z" : null,
                 reason: $("mw-reason").value || "planned maintenance" };
  try { await api("/api/maintenance", { method: "POST", body: JSON.stringify(body) });
        flash("Window added", true); await refreshWindows(); }
  catch (err) { flash(err.message, false); }
};
$("login-btn").onclick = async () => {
  token = $("token").value.trim(); $("token").value = "";
  if (token) localStorage.setItem("gearwatch-token", token);
  await setWho();
};
$("logout-btn").onclick = () => { token = ""; localStorage.removeItem("gearwatch-token"); setWho(); };
window.addEventListener("hashchange", () => refresh(true));

api("/api/status").then((s) => { $("site").textContent = "· " + s.site; }).catch(() => {});
setWho();
refresh(true);
let ticks = 0;
setInterval(() => { ticks += 1; refresh(ticks % 5 === 0); }, 2000);
