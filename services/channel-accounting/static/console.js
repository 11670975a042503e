// The operators' console: log in, then poll /v1/console/overview and draw.
// Plain DOM and <canvas>; no framework, no build step, nothing from a CDN.
"use strict";

const REFRESH_MS = 10000;
const TOKEN_KEY = "jyt-accounting-token";
const CHANNEL_COLOURS = {
  wechat: "#1aad19", kiosk: "#1f6feb", phone114: "#d97706", window: "#6b7785",
  app: "#8250df", referral: "#bf3989", clinic: "#0a7d5a",
};
const $ = (id) => document.getElementById(id);
let timer = null;
let sortKey = "bookings";
let sortDesc = true;
let last = null;

function beijingToday() {
  // Beijing is UTC+8 all year.
  return new Date(Date.now() + 8 * 3600 * 1000).toISOString().slice(0, 10);
}
const yuan = (fen) => "¥" + (fen / 100).toLocaleString("zh-CN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const num = (n) => Number(n).toLocaleString("zh-CN");

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) { logout(); throw new Error("session ended; log in again"); }
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const p = body || {};
    throw new Error((p.detail || p.title || res.statusText) + (p.line ? " (line " + p.line + ")" : ""));
  }
  return body;
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const res = await fetch("/v1/operators/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ login: $("login").value, password: $("password").value }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) { $("login-error").textContent = body.detail || "Login failed"; return; }
  sessionStorage.setItem(TOKEN_KEY, body.token);
  $("password").value = "";
  show();
}

function logout() {
  const t = token();
  sessionStorage.removeItem(TOKEN_KEY);
  if (t) fetch("/v1/operators/session", { method: "DELETE", headers: { Authorization: "Bearer " + t } }).catch(() => {});
  clearInterval(timer);
  $("dashboard").hidden = true; $("who").hidden = true; $("login-view").hidden = false;
}

function show() {
  $("login-view").hidden = true; $("dashboard").hidden = false; $("who").hidden = false;
  if (!$("date").value) $("date").value = beijingToday();
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  const params = new URLSearchParams({ date: $("date").value || beijingToday() });
  const hospital = $("hospital").value.trim();
  if (hospital) params.set("hospital", hospital);
  try {
    const o = await api("/v1/console/overview?" + params);
    last = o;
    render(o);
    $("load-error").textContent = "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString("zh-CN", { hour12: false }) + " · refreshes every " + REFRESH_MS / 1000 + " s";
  } catch (e) {
    $("load-error").textContent = e.message;
  }
}

function render(o) {
  $("operator").textContent = o.operator + " (" + o.role + (o.hospital && o.role === "hospital" ? " · " + o.hospital : "") + ")";
  $("hospital-filter").hidden = o.role !== "city";
  $("reconciliation").hidden = o.reconciliation === null;
  const t = o.totals;
  $("total-bookings").textContent = num(t.bookings);
  $("total-attempts").textContent = num(t.attempts);
  $("total-sold-out").textContent = num(t.sold_out);
  $("total-cancellations").textContent = num(t.cancellations);
  $("total-promotions").textContent = num(t.promotions);
  $("total-no-show-rate").textContent = t.no_show_rate_percent.toFixed(2) + " %";
  $("total-waitlist").textContent = num(t.waitlist_depth);
  $("total-money").textContent = yuan(t.fees_fen) + " / " + yuan(t.refunds_fen);
  drawMinutes(o.minutes);
  drawSplit(o.split);
  const ref = $("reference-table").tBodies[0];
  ref.replaceChildren(...o.reference_split.map((g) => row([g.group, g.channels.join(", "), g.share_percent.toFixed(2) + " %", g.reference_percent.toFixed(2) + " %"])));
  renderHospitals();
  $("fill-note").textContent = o.fill_rate_note;
  if (o.reconciliation) renderStatements(o.reconciliation);
}

function row(cells, numeric = []) {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    td.textContent = c;
    if (numeric.includes(i)) td.className = "num";
    tr.appendChild(td);
  });
  return tr;
}

function renderHospitals() {
  const list = last.hospitals.slice().sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return (sortDesc ? -c : c) || a.hospital_id.localeCompare(b.hospital_id);
  });
  $("hospital-count").textContent = "(" + list.length + ", sorted by " + sortKey.replace(/_/g, " ") + ")";
  $("hospitals").tBodies[0].replaceChildren(...list.map((h) => row([
    h.hospital_id, num(h.bookings), num(h.attempts), num(h.sold_out), num(h.cancellations), num(h.check_ins),
    num(h.no_shows), h.no_show_rate_percent.toFixed(2), num(h.waitlist_depth), (h.fees_fen / 100).toFixed(2),
  ], [1, 2, 3, 4, 5, 6, 7, 8, 9])));
}

function renderStatements(statements) {
  const box = $("statements");
  if (!statements.length) {
    const p = document.createElement("p"); p.className = "muted";
    p.textContent = "No statement imported for this date.";
    box.replaceChildren(p); return;
  }
  box.replaceChildren(...statements.map((s) => {
    const div = document.createElement("div"); div.className = "statement";
    const h = document.createElement("div");
    const n = s.mismatches.length;
    const status = document.createElement("span");
    status.className = n ? "bad" : "ok";
    status.textContent = n ? n + " mismatch" + (n > 1 ? "es" : "") : "reconciled";
    h.append(s.channel + ": " + s.lines + " lines, " + s.matched + " matched — ", status,
      " (imported by " + s.imported_by + " at " + new Date(s.imported_at).toLocaleTimeString("zh-CN", { hour12: false }) + ")");
    div.appendChild(h);
    if (n) {
      const table = document.createElement("table"); table.className = "compact mismatches";
      const head = row(["Kind", "Line", "Channel txn", "Order", "Channel ¥", "Platform ¥", "Channel status", "Platform status"]);
      const thead = document.createElement("thead"); thead.appendChild(head);
      const money = (f) => (f === null || f === undefined ? "–" : (f / 100).toFixed(2));
      const body = document.createElement("tbody");
      body.replaceChildren(...s.mismatches.map((m) => row([m.kind, m.line ?? "–", m.channel_transaction_id ?? "–",
        m.platform_order_id ?? "–", money(m.channel_amount_fen), money(m.platform_amount_fen),
        m.channel_status ?? "–", m.platform_status ?? "–"], [1, 4, 5])));
      table.append(thead, body);
      div.appendChild(table);
    }
    return div;
  }));
}

function canvasContext(id) {
  const canvas = $(id);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  return [canvas, ctx];
}

// Every minute from the first to the last with traffic, gaps as zero, so
// the x axis is time.
function continuous(points) {
  const at = (m) => Number(m.slice(0, 2)) * 60 + Number(m.slice(3, 5));
  const byMinute = new Map(points.map((p) => [at(p.minute), p]));
  const first = at(points[0].minute), lastMinute = at(points[points.length - 1].minute);
  const out = [];
  for (let m = first; m <= lastMinute; m++) {
    const label = String(Math.floor(m / 60)).padStart(2, "0") + ":" + String(m % 60).padStart(2, "0");
    out.push(byMinute.get(m) || { minute: label, bookings: 0, attempts: 0 });
  }
  return out;
}

function drawMinutes(raw) {
  const [c, ctx] = canvasContext("minutes-chart");
  const pad = { l: 40, r: 48, t: 10, b: 24 };
  const w = c.width - pad.l - pad.r, h = c.height - pad.t - pad.b;
  if (!raw.length) { ctx.fillStyle = "#6b7785"; ctx.fillText("No bookings yet on this date.", pad.l, pad.t + 20); return; }
  const points = continuous(raw);
  // Bookings on the left axis; attempts (often 100× more at release time)
  // on their own axis on the right, so both stay readable.
  const max = Math.max(1, ...points.map((p) => p.bookings));
  const maxAttempts = Math.max(1, ...points.map((p) => p.attempts));
  const step = w / points.length;
  ctx.strokeStyle = "#d9dee4";
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + h - (h * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + w, y); ctx.stroke();
    ctx.fillStyle = "#0a7d5a"; ctx.fillText(String(Math.round((max * i) / 4)), 4, y + 4);
    if (points.some((p) => p.attempts > 0)) {
      ctx.fillStyle = "#d97706"; ctx.fillText(String(Math.round((maxAttempts * i) / 4)), pad.l + w + 4, y + 4);
    }
  }
  ctx.fillStyle = "#0a7d5a";
  points.forEach((p, i) => {
    const bh = (p.bookings / max) * h;
    ctx.fillRect(pad.l + i * step + (step > 3 ? 1 : 0), pad.t + h - bh, Math.max(1, step - (step > 3 ? 2 : 0)), bh);
  });
  if (points.some((p) => p.attempts > 0)) {
    ctx.strokeStyle = "#d97706"; ctx.lineWidth = 1.5; ctx.beginPath();
    points.forEach((p, i) => {
      const x = pad.l + i * step + step / 2, y = pad.t + h - (p.attempts / maxAttempts) * h;
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke(); ctx.lineWidth = 1;
  }
  ctx.fillStyle = "#6b7785";
  const labels = Math.min(points.length, 8);
  for (let k = 0; k < labels; k++) {
    const i = Math.floor((k * (points.length - 1)) / Math.max(1, labels - 1));
    ctx.fillText(points[i].minute, Math.min(pad.l + i * step, c.width - 34), c.height - 6);
  }
}

function drawSplit(split) {
  const [c, ctx] = canvasContext("split-chart");
  if (!split.length) { ctx.fillStyle = "#6b7785"; ctx.fillText("No bookings yet on this date.", 10, 20); return; }
  const barH = Math.min(26, (c.height - 10) / split.length - 4);
  const max = Math.max(...split.map((s) => s.share_percent), 1);
  split.forEach((s, i) => {
    const y = 5 + i * (barH + 4);
    ctx.fillStyle = "#1d2733"; ctx.fillText(s.channel, 4, y + barH / 2 + 4);
    ctx.fillStyle = CHANNEL_COLOURS[s.channel] || "#999";
    const w = ((c.width - 170) * s.share_percent) / max;
    ctx.fillRect(70, y, w, barH);
    ctx.fillStyle = "#1d2733";
    ctx.fillText(s.share_percent.toFixed(2) + " % (" + num(s.bookings) + ")", 74 + w, y + barH / 2 + 4);
  });
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) { $("upload-result").textContent = "choose a file first"; return; }
  const params = new URLSearchParams({ channel: $("upload-channel").value, date: $("date").value || beijingToday() });
  try {
    const r = await api("/v1/reconciliation/statements?" + params, { method: "POST", headers: { "Content-Type": "text/csv" }, body: file });
    $("upload-result").textContent = r.lines + " lines, " + r.mismatches.length + " mismatches";
    refresh();
  } catch (e) {
    $("upload-result").textContent = "refused: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("upload-form").addEventListener("submit", upload);
  $("date").addEventListener("change", refresh);
  $("hospital").addEventListener("change", refresh);
  $("today").addEventListener("click", () => { $("date").value = beijingToday(); refresh(); });
  document.querySelectorAll("#hospitals th").forEach((th) => th.addEventListener("click", () => {
    const key = th.dataset.key;
    sortDesc = key === sortKey ? !sortDesc : key !== "hospital_id";
    sortKey = key;
    if (last) renderHospitals();
  }));
  if (token()) show();
});
