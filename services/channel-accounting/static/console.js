// The operators' console: log in, then one page at a time (the URL's
// #hash): the overview, the release surge, the waitlists' 加号 requests and
// the audit trail, each polling its own JSON document.
// Plain DOM and <canvas>; no framework, no build step, nothing from a CDN.
"use strict";

const REFRESH_MS = 10000;
// The surge moves in seconds: poll it faster than the day's overview.
const SURGE_REFRESH_MS = 2000;
const PAGES = ["overview", "surge", "capacity", "precise", "family-doctor", "audit", "appeals", "policy", "draws", "satisfaction", "dead-letters"];
// The signed-in operator's role (and hospital), from /v1/operators/me.
let role = null;
let ownHospital = null;
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

// A refused request: the problem's text, and the field it names.
class Refused extends Error {
  constructor(problem, status) {
    super((problem.field ? problem.field + ": " : "") + (problem.detail || problem.title || status) + (problem.line ? " (line " + problem.line + ")" : ""));
    this.field = problem.field || null;
  }
}

async function fetchAuthed(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) { logout(); throw new Error("session ended; log in again"); }
  if (!res.ok) throw new Refused((await res.json().catch(() => null)) || {}, res.statusText);
  return res;
}

async function api(path, options = {}) {
  return (await fetchAuthed(path, options)).json();
}

// Show a refusal beside its form, and mark the input the server named.
function refusedIn(form, errorId, e) {
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  $(errorId).textContent = e ? e.message : "";
  if (e && e.field) {
    const input = form.querySelector('[name="' + CSS.escape(e.field) + '"]');
    if (input) input.setAttribute("aria-invalid", "true");
  }
}

// The form's non-empty fields as query parameters.
function formParams(form) {
  const params = new URLSearchParams();
  form.querySelectorAll("input[name], select[name]").forEach((el) => {
    if (el.closest("[hidden]")) return;
    const v = el.value.trim();
    if (v) params.set(el.name, v);
  });
  return params;
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
  document.querySelectorAll("section[data-page]").forEach((el) => { el.hidden = true; });
  $("pages").hidden = true; $("who").hidden = true; $("login-view").hidden = false;
}

async function show() {
  $("login-view").hidden = true; $("who").hidden = false; $("pages").hidden = false;
  if (!$("date").value) $("date").value = beijingToday();
  try {
    const me = await api("/v1/operators/me");
    $("operator").textContent = me.login + " (" + me.role + (me.hospital_id ? " · " + me.hospital_id : "") + ")";
    // A hospital operator has one hospital: no hospital filters to fill.
    role = me.role;
    ownHospital = me.hospital_id || null;
    document.querySelectorAll(".city-only").forEach((el) => { el.hidden = me.role !== "city"; });
  } catch (e) {
    $("operator").textContent = e.message;
  }
  showPage();
}

// The page the URL names (#surge ...), polled at its own pace.
function showPage() {
  const page = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "overview";
  document.querySelectorAll("section[data-page]").forEach((el) => { el.hidden = el.dataset.page !== page; });
  document.querySelectorAll("#pages a").forEach((a) => a.classList.toggle("current", a.dataset.page === page));
  clearInterval(timer);
  const load = { overview: refresh, surge: loadSurge, capacity: loadCapacity, precise: loadPrecise, "family-doctor": loadFamilyDoctor, audit: loadAudit, appeals: loadAppeals, policy: loadPolicyHospitals, draws: loadDraws, satisfaction: loadSatisfaction, "dead-letters": loadDeadLetters }[page];
  load();
  if (page === "overview") timer = setInterval(refresh, REFRESH_MS);
  if (page === "surge") timer = setInterval(loadSurge, SURGE_REFRESH_MS);
  if (page === "capacity") timer = setInterval(loadCapacity, REFRESH_MS);
  if (page === "family-doctor") timer = setInterval(loadFamilyDoctor, REFRESH_MS);
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

// ---- Surge: the release instant, second by second ----

// A Beijing datetime-local value (no zone) as an RFC 3339 instant.
function beijingInstant(local) {
  if (!local) return "";
  return (local.length === 16 ? local + ":00" : local) + "+08:00";
}

async function loadSurge() {
  const form = $("surge-form");
  const params = formParams(form);
  if (params.has("until")) params.set("until", beijingInstant(params.get("until")));
  try {
    const s = await api("/v1/console/surge?" + params);
    refusedIn(form, "surge-error", null);
    renderSurge(s);
    // A past window refreshes too: its attempts arrive after their minute.
    $("surge-updated").textContent = "updated " + new Date().toLocaleTimeString("zh-CN", { hour12: false }) +
      " · refreshes every " + SURGE_REFRESH_MS / 1000 + " s";
  } catch (e) {
    refusedIn(form, "surge-error", e);
  }
}

function renderSurge(s) {
  const t = s.totals;
  const at = (iso) => new Date(iso).toLocaleTimeString("zh-CN", { hour12: false, timeZone: "Asia/Shanghai" });
  $("surge-window").textContent = "(" + at(s.from) + " – " + at(s.until) + " Beijing" + (s.hospital ? " · " + s.hospital : "") + ")";
  $("surge-attempts").textContent = num(t.attempts);
  $("surge-sold-out").textContent = num(t.sold_out);
  $("surge-bookings").textContent = num(t.bookings);
  $("surge-peak").textContent = num(Math.max(0, ...s.seconds.map((p) => p.bookings)));
  $("surge-note").textContent = "Seats taken arrive with their bookings; attempts arrive once the hospital closes the minute, " +
    "so those after " + at(s.attempts_complete_until) + " may still grow. " + s.hospitals.length + " hospitals, busiest first.";
  drawSurge(s.seconds);
  const max = Math.max(1, ...s.hospitals.map((h) => h.attempts));
  $("surge-table").tBodies[0].replaceChildren(...s.hospitals.map((h) => {
    const tr = row([h.hospital_id, num(h.attempts), num(h.sold_out), num(h.bookings), num(h.peak_bookings_per_second), ""], [1, 2, 3, 4]);
    // A bar beside the number, so thirty hospitals compare at a glance.
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round((60 * h.attempts) / max) + "px";
    tr.cells[1].prepend(bar);
    tr.cells[5].textContent = h.channels.map((c) => c.channel + " " + num(c.attempts) + " · " + num(c.bookings)).join("  ");
    tr.cells[5].className = "channels";
    return tr;
  }));
}

function drawSurge(points) {
  const [c, ctx] = canvasContext("surge-chart");
  const pad = { l: 40, r: 56, t: 10, b: 24 };
  const w = c.width - pad.l - pad.r, h = c.height - pad.t - pad.b;
  const max = Math.max(1, ...points.map((p) => p.bookings));
  const maxAttempts = Math.max(1, ...points.map((p) => p.attempts));
  const step = w / Math.max(1, points.length);
  ctx.strokeStyle = "#d9dee4";
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + h - (h * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + w, y); ctx.stroke();
    ctx.fillStyle = "#0a7d5a"; ctx.fillText(String(Math.round((max * i) / 4)), 4, y + 4);
    ctx.fillStyle = "#d97706"; ctx.fillText(String(Math.round((maxAttempts * i) / 4)), pad.l + w + 4, y + 4);
  }
  ctx.fillStyle = "#0a7d5a";
  points.forEach((p, i) => {
    const bh = (p.bookings / max) * h;
    ctx.fillRect(pad.l + i * step + (step > 3 ? 1 : 0), pad.t + h - bh, Math.max(1, step - (step > 3 ? 2 : 0)), bh);
  });
  ctx.strokeStyle = "#d97706"; ctx.lineWidth = 1.5; ctx.beginPath();
  points.forEach((p, i) => {
    const x = pad.l + i * step + step / 2, y = pad.t + h - (p.attempts / maxAttempts) * h;
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke(); ctx.lineWidth = 1;
  ctx.fillStyle = "#6b7785";
  const labels = Math.min(points.length, 10);
  for (let k = 0; k < labels; k++) {
    const i = Math.floor((k * (points.length - 1)) / Math.max(1, labels - 1));
    ctx.fillText(points[i].second, Math.min(pad.l + i * step, c.width - 50), c.height - 6);
  }
}

// ---- 家庭医生签约 and 转诊 ----

async function loadFamilyDoctor() {
  const form = $("fd-form");
  try {
    const v = await api("/v1/console/family-doctor?" + formParams(form));
    refusedIn(form, "fd-error", null);
    $("fd-active").textContent = "(" + num(v.signings_active) + " signed now)";
    const dash = (x) => (x === null || x === undefined ? "–" : x);
    $("fd-teams").tBodies[0].replaceChildren(...v.teams.map((t) =>
      row([t.hospital, t.team_name ? t.team_name + " · " + t.team_id : t.team_id, num(t.active), dash(t.capacity),
        dash(t.capacity_used_percent)], [2, 3, 4])));
    $("fd-referrals").tBodies[0].replaceChildren(...v.referrals.map((r) =>
      row([r.issuing_hospital, r.target_hospital, num(r.issued), num(r.used), num(r.expired), num(r.open)], [2, 3, 4, 5])));
  } catch (e) {
    refusedIn(form, "fd-error", e);
  }
}

// ---- 加号 requests ----

async function loadCapacity() {
  const form = $("capacity-form");
  try {
    const r = await api("/v1/console/capacity-requests?" + formParams(form));
    refusedIn(form, "capacity-error", null);
    const when = (iso) => (iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false, timeZone: "Asia/Shanghai" }) : "–");
    $("capacity-count").textContent = "(" + r.requests.length + " " + r.status + ")";
    $("capacity-table").tBodies[0].replaceChildren(...r.requests.map((q) => {
      // The hospital's own ids (what its HIS answers 加号 with), else ours.
      const h = q.schedule || {};
      const sched = h.external_id ? [h.external_id, h.doctor_external_id, h.visit_date, h.session].filter(Boolean).join(" · ") : q.schedule_id;
      const tr = row([q.hospital_id, sched, num(q.waiting), q.waiting_now === null ? "–" : num(q.waiting_now), when(q.requested_at),
        when(q.answered_at), q.answered_by || "–", q.added_seats === null ? "–" : "+" + q.added_seats, ""], [2, 3, 7]);
      if (!q.answered_at) {
        tr.className = "open";
        const b = document.createElement("button");
        b.type = "button"; b.className = "jiahao"; b.textContent = "加号";
        b.addEventListener("click", () => openJiahao(q));
        tr.cells[8].appendChild(b);
      }
      return tr;
    }));
  } catch (e) {
    refusedIn(form, "capacity-error", e);
  }
}

// The request being answered with 加号.
let answering = null;

function openJiahao(q) {
  answering = q;
  const form = $("jiahao-form");
  form.hidden = false;
  refusedIn(form, "jiahao-error", null);
  $("jiahao-result").textContent = "";
  $("jiahao-title").textContent = q.hospital_id + " · schedule " + ((q.schedule || {}).external_id || q.schedule_id) + " · " + q.waiting + " waiting";
  $("jiahao-date").value = (q.schedule || {}).visit_date || "";
  $("jiahao-segment").replaceChildren();
  $("jiahao-capacity").value = "";
  if ($("jiahao-date").value) loadSegments();
}

// The schedule's segments with their capacity, from the hospital through
// the gateway's relay; the request's own schedule first.
async function loadSegments() {
  const form = $("jiahao-form");
  if (!answering) return;
  try {
    const day = await api("/v1/console/hospitals/" + encodeURIComponent(answering.hospital_id) +
      "/schedules?date=" + encodeURIComponent($("jiahao-date").value));
    refusedIn(form, "jiahao-error", null);
    const options = [];
    for (const s of day.schedules || []) {
      if (s.schedule_id !== answering.schedule_id) continue;
      for (const slot of s.slots) {
        const o = document.createElement("option");
        o.value = slot.slot_id.slice(slot.slot_id.indexOf("-") + 1);
        o.dataset.capacity = slot.capacity;
        o.textContent = slot.starts_at.slice(11, 16) + " · " + s.department + " " + s.doctor + " · capacity " + slot.capacity + ", " + slot.remaining + " left";
        options.push(o);
      }
    }
    $("jiahao-segment").replaceChildren(...options);
    if (!options.length) $("jiahao-error").textContent = "date: no segment of this schedule on that date";
    else $("jiahao-capacity").value = Number(options[0].dataset.capacity) + 2;
  } catch (e) {
    refusedIn(form, "jiahao-error", e);
  }
}

async function submitJiahao(event) {
  event.preventDefault();
  const form = $("jiahao-form");
  if (!answering) return;
  const segment = $("jiahao-segment").value || "-";
  const raw = $("jiahao-capacity").value.trim();
  try {
    const r = await api("/v1/console/hospitals/" + encodeURIComponent(answering.hospital_id) + "/segments/" +
      encodeURIComponent(segment) + "/capacity", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      // Sent as typed: the server names a bad number, not the page.
      body: JSON.stringify({ capacity: raw === "" ? null : Number.isNaN(Number(raw)) ? raw : Number(raw) }),
    });
    refusedIn(form, "jiahao-error", null);
    $("jiahao-result").textContent = "capacity now " + r.capacity + "; " + r.promoted_from_waitlist + " waiting patients got a seat";
    loadCapacity();
  } catch (e) {
    refusedIn(form, "jiahao-error", e);
  }
}

// ---- Bars and appeals ----

async function loadAppeals() {
  const form = $("appeals-form");
  try {
    const r = await api("/v1/console/appeals?" + formParams(form));
    refusedIn(form, "appeals-error", null);
    const when = (iso) => (iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false, timeZone: "Asia/Shanghai" }) : "–");
    $("appeals-count").textContent = "(" + r.appeals.length + ")";
    $("appeals-table").tBodies[0].replaceChildren(...r.appeals.map((a) => {
      const tr = row([when(a.created_at), a.hospital_id, a.booking_id, a.reason, a.status + (a.automatic ? " (automatic)" : ""),
        a.decided_by || "–", a.decision_reason || "–", ""]);
      tr.cells[7].className = "city-only";
      tr.cells[7].hidden = role !== "city";
      if (a.status === "pending" && role === "city") {
        const reason = document.createElement("input");
        reason.name = "reason"; reason.placeholder = "reason"; reason.size = 16;
        const waive = document.createElement("button");
        waive.type = "button"; waive.textContent = "Waive";
        const refuse = document.createElement("button");
        refuse.type = "button"; refuse.textContent = "Refuse"; refuse.className = "secondary";
        waive.addEventListener("click", () => decideAppeal(a.appeal_id, "waive", reason));
        refuse.addEventListener("click", () => decideAppeal(a.appeal_id, "refuse", reason));
        tr.cells[7].append(reason, " ", waive, " ", refuse);
      }
      return tr;
    }));
  } catch (e) {
    refusedIn(form, "appeals-error", e);
  }
}

async function decideAppeal(id, decision, reasonInput) {
  reasonInput.removeAttribute("aria-invalid");
  try {
    await api("/v1/console/appeals/" + encodeURIComponent(id) + "/decision", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ decision, reason: reasonInput.value }),
    });
    $("appeals-error").textContent = "";
    $("appeals-result").textContent = (decision === "waive" ? "waived " : "refused ") + id;
    loadAppeals();
  } catch (e) {
    $("appeals-error").textContent = e.message;
    if (e.field === "reason") reasonInput.setAttribute("aria-invalid", "true");
  }
}

// ---- Hospitals and their booking policy ----

const POLICY_POOLS = ["wechat", "kiosk", "phone114", "window", "app", "referral", "clinic", "signed"];
const POLICY_TIMES = ["release_time", "cancel_time", "pool_merge_time"];
// Sent as chosen (a string), not as a number.
const POLICY_CHOICES = ["release_mode"];
const POLICY_NUMBERS = ["window_days", "cancel_days_before", "hold_minutes", "checkin_opens_minutes_before",
  "no_show_grace_minutes", "pool_merge_days_before", "max_per_person_per_day",
  "max_per_person_per_department_per_day", "waitlist_capacity_request_threshold", "lottery_window_seconds"];
let policyHospital = null;

// A city operator's hospitals are those the ledger knows; a hospital
// operator has their own.
async function loadPolicyHospitals() {
  let ids = [];
  if (role === "city") {
    try {
      const o = await api("/v1/console/overview?" + new URLSearchParams({ date: beijingToday() }));
      ids = (o.hospitals || []).map((h) => h.hospital_id).sort();
    } catch (e) {
      $("policy-error").textContent = e.message;
    }
  } else if (ownHospital) {
    ids = [ownHospital];
  }
  $("policy-hospitals").replaceChildren(...ids.map((id) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button"; b.textContent = id; b.dataset.hospital = id;
    b.classList.toggle("current", id === policyHospital);
    b.addEventListener("click", () => loadPolicy(id));
    li.appendChild(b);
    return li;
  }));
  if (!policyHospital && ids.length) loadPolicy(ids[0]);
}

function showPolicy(p) {
  const policy = p.policy;
  for (const k of POLICY_TIMES.concat(POLICY_NUMBERS, POLICY_CHOICES)) $("policy-" + k).value = policy[k];
  for (const pool of POLICY_POOLS) $("policy-pool_shares." + pool).value = (policy.pool_shares || {})[pool] || 0;
  commonShare();
  $("policy-updated").textContent = "version " + p.version + " · changed " +
    new Date(p.updated_at).toLocaleString("zh-CN", { hour12: false, timeZone: "Asia/Shanghai" }) + " by " + p.updated_by;
}

function commonShare() {
  const sum = POLICY_POOLS.reduce((n, pool) => n + (Number($("policy-pool_shares." + pool).value) || 0), 0);
  $("policy-common").textContent = "common: " + (100 - sum) + "%";
}

async function loadPolicy(hospital) {
  policyHospital = hospital;
  document.querySelectorAll("#policy-hospitals button").forEach((b) => b.classList.toggle("current", b.dataset.hospital === hospital));
  const form = $("policy-form");
  $("policy-title").textContent = "(" + hospital + ")";
  $("policy-result").textContent = "";
  try {
    const p = await api("/v1/console/hospitals/" + encodeURIComponent(hospital) + "/policy");
    refusedIn(form, "policy-error", null);
    form.hidden = false;
    showPolicy(p);
  } catch (e) {
    form.hidden = true;
    $("policy-error").textContent = e.message;
  }
}

// Numbers are sent as typed: the hospital names a bad one, not the page.
function typed(raw) {
  const v = raw.trim();
  if (v === "") return null;
  return Number.isNaN(Number(v)) ? v : Number(v);
}

async function submitPolicy(event) {
  event.preventDefault();
  const form = $("policy-form");
  if (!policyHospital) return;
  const body = { pool_shares: {} };
  for (const k of POLICY_TIMES.concat(POLICY_CHOICES)) body[k] = $("policy-" + k).value;
  for (const k of POLICY_NUMBERS) body[k] = typed($("policy-" + k).value);
  for (const pool of POLICY_POOLS) {
    const v = typed($("policy-pool_shares." + pool).value);
    if (v !== 0 && v !== null) body.pool_shares[pool] = v;
  }
  $("policy-result").textContent = "";
  try {
    const r = await api("/v1/console/hospitals/" + encodeURIComponent(policyHospital) + "/policy", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    refusedIn(form, "policy-error", null);
    showPolicy(r);
    $("policy-result").textContent = "saved: version " + r.version + "; " + r.schedules_affected + " unreleased schedules take it";
  } catch (e) {
    refusedIn(form, "policy-error", e);
  }
}

// ---- Lottery draws ----

async function loadDraws() {
  const form = $("draws-form");
  try {
    const r = await api("/v1/console/draws?" + formParams(form));
    refusedIn(form, "draws-error", null);
    const when = (iso) => new Date(iso).toLocaleString("zh-CN", { hour12: false, timeZone: "Asia/Shanghai" });
    $("draws-count").textContent = "(" + r.draws.length + ")";
    $("draws-table").tBodies[0].replaceChildren(...r.draws.map((d) => {
      const tr = row([d.hospital_id, d.schedule_id, num(d.entrants), num(d.seats), num(d.winners), when(d.drawn_at),
        d.seed.slice(0, 16) + "…", ""], [2, 3, 4]);
      tr.cells[6].title = d.seed;
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "Record";
      b.addEventListener("click", () => openDrawRecord(d));
      tr.cells[7].appendChild(b);
      return tr;
    }));
  } catch (e) {
    refusedIn(form, "draws-error", e);
  }
}

async function openDrawRecord(d) {
  const panel = $("draw-record");
  panel.hidden = false;
  $("draw-record-title").textContent = "(" + d.hospital_id + " · " + d.schedule_id + ")";
  $("draw-reproduced").textContent = "";
  $("draw-record-json").textContent = "";
  try {
    const rec = await api(d.record);
    const ok = rec.reproduction && rec.reproduction.reproduced;
    $("draw-reproduced").textContent = ok
      ? "Reproduced: the seed gives the stored order, and the outcomes follow it."
      : "NOT reproduced: " + JSON.stringify(rec.reproduction);
    $("draw-reproduced").className = ok ? "ok" : "error";
    $("draw-record-json").textContent = JSON.stringify(rec, null, 2);
  } catch (e) {
    $("draw-reproduced").textContent = e.message;
    $("draw-reproduced").className = "error";
  }
}

// ---- Notification dead letters ----

async function loadDeadLetters() {
  try {
    const d = await api("/v1/console/dead-letters");
    $("dead-error").textContent = "";
    $("dead-count").textContent = "(" + d.dead_letters.length + ")";
    $("dead-table").tBodies[0].replaceChildren(...d.dead_letters.map((l) => {
      const tr = row([l.id, l.app_id, l.event_type, num(l.attempts), l.last_error || "–", l.body.length > 120 ? l.body.slice(0, 120) + "…" : l.body, ""], [3]);
      tr.cells[5].className = "channels";
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "Replay";
      b.addEventListener("click", () => replayDead(l.id));
      tr.cells[6].appendChild(b);
      return tr;
    }));
  } catch (e) {
    $("dead-error").textContent = e.message;
  }
}

async function replayDead(id) {
  try {
    await api("/v1/console/dead-letters/" + encodeURIComponent(id) + "/replay", { method: "POST" });
    $("dead-result").textContent = "replayed " + id;
    loadDeadLetters();
  } catch (e) {
    $("dead-error").textContent = e.message;
  }
}

// ---- Audit trail ----

async function loadAudit() {
  const form = $("audit-form");
  try {
    const a = await api("/v1/console/audit?" + formParams(form));
    refusedIn(form, "audit-error", null);
    $("audit-count").textContent = "(" + a.entries.length + (a.truncated ? "+, narrow the query or export CSV" : "") +
      " from " + a.from + " to " + a.to + (a.slot ? " · provenance of " + a.slot : "") + ")";
    $("audit-table").tBodies[0].replaceChildren(...a.entries.map((e) => row([
      new Date(e.occurred_at).toLocaleString("zh-CN", { hour12: false, timeZone: "Asia/Shanghai" }),
      e.hospital_id || "–", e.kind, e.actor, e.slot_id || e.schedule_id || e.person_id || "–", e.summary,
    ])));
  } catch (e) {
    refusedIn(form, "audit-error", e);
  }
}

// An export needs the session's bearer token, so it is fetched and handed
// to the browser as a file rather than linked.
// A form's report as a CSV download (`path`, with the form's fields).
async function exportCsv(formId, errorId, path, fallback) {
  const form = $(formId);
  const params = formParams(form);
  params.set("format", "csv");
  try {
    const res = await fetchAuthed(path + "?" + params);
    refusedIn(form, errorId, null);
    const name = (/filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "") || [])[1] || fallback;
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await res.blob());
    a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
  } catch (e) {
    refusedIn(form, errorId, e);
  }
}

// ---- Satisfaction (满意度) ----

function score(v) { return v === null || v === undefined ? "–" : v.toFixed(2); }
function share(v) { return v === null || v === undefined ? "–" : v.toFixed(2) + " %"; }

async function loadSatisfaction() {
  const form = $("satisfaction-form");
  try {
    const s = await api("/v1/console/satisfaction?" + formParams(form));
    refusedIn(form, "satisfaction-error", null);
    $("satisfaction-range").textContent = "(" + s.from + " to " + s.to + (s.hospital ? " · " + s.hospital : "") +
      " · questions v" + s.questions_version + ")";
    const t = s.totals;
    $("satisfaction-tiles").replaceChildren(...[
      ["Surveys sent", t.sent], ["Answered", t.answered], ["Response rate", share(t.response_rate_percent)],
      ["Overall", score(t.mean_overall)], ["Wait time", score(t.mean_wait_time)],
      ["Doctor's explanation", score(t.mean_explanation)], ["Would recommend", share(t.recommend_percent)],
    ].map(([label, value]) => {
      const tile = document.createElement("div");
      tile.className = "tile";
      const l = document.createElement("span"); l.className = "label"; l.textContent = label;
      const v = document.createElement("span"); v.className = "value"; v.textContent = value;
      tile.append(l, v);
      return tile;
    }));
    $("satisfaction-table").tBodies[0].replaceChildren(...s.rows.map((r) => row([
      r.week || r.hospital_id || "–", r.department || "–", r.doctor || "–", r.sent, r.answered,
      share(r.response_rate_percent), score(r.mean_overall), score(r.mean_wait_time), score(r.mean_explanation),
      share(r.recommend_percent),
    ], [3, 4, 5, 6, 7, 8, 9])));
    $("satisfaction-trend").tBodies[0].replaceChildren(...s.trend.map((r) => row([
      r.week, r.sent, r.answered, share(r.response_rate_percent), score(r.mean_overall), share(r.recommend_percent),
    ], [1, 2, 3, 4, 5])));
  } catch (e) {
    refusedIn(form, "satisfaction-error", e);
  }
}

const exportAudit = () => exportCsv("audit-form", "audit-error", "/v1/console/audit", "audit.csv");

// ---- 精准预约 ----

async function loadPrecise() {
  const form = $("precise-form");
  if (!$("precise-from").value) $("precise-from").value = beijingToday();
  try {
    const r = await api("/v1/console/precise?" + formParams(form));
    refusedIn(form, "precise-error", null);
    const secs = (v) => (v === null || v === undefined ? "–" : v.toFixed(1));
    $("precise-table").tBodies[0].replaceChildren(...r.rows.map((p) => row([p.hospital_id, p.doctor_id, num(p.submitted),
      num(p.matched), num(p.auto_matched), num(p.rejected), num(p.seated), secs(p.median_seconds_to_seat),
      secs(p.p90_seconds_to_seat)], [2, 3, 4, 5, 6, 7, 8])));
  } catch (e) {
    refusedIn(form, "precise-error", e);
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
  $("surge-form").addEventListener("submit", (e) => { e.preventDefault(); loadSurge(); });
  $("capacity-form").addEventListener("submit", (e) => { e.preventDefault(); loadCapacity(); });
  $("fd-form").addEventListener("submit", (e) => { e.preventDefault(); loadFamilyDoctor(); });
  $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); loadAudit(); });
  $("audit-csv").addEventListener("click", exportAudit);
  $("satisfaction-form").addEventListener("submit", (e) => { e.preventDefault(); loadSatisfaction(); });
  $("satisfaction-csv").addEventListener("click", () => exportCsv("satisfaction-form", "satisfaction-error", "/v1/console/satisfaction", "satisfaction.csv"));
  $("precise-form").addEventListener("submit", (e) => { e.preventDefault(); loadPrecise(); });
  $("precise-csv").addEventListener("click", () => exportCsv("precise-form", "precise-error", "/v1/console/precise", "precise.csv"));
  $("jiahao-form").addEventListener("submit", submitJiahao);
  $("jiahao-load").addEventListener("click", loadSegments);
  $("jiahao-cancel").addEventListener("click", () => { $("jiahao-form").hidden = true; answering = null; });
  $("dead-reload").addEventListener("click", loadDeadLetters);
  $("policy-form").addEventListener("submit", submitPolicy);
  $("policy-open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const h = $("policy-hospital-input").value.trim();
    if (h) loadPolicy(h);
  });
  $("policy-form").addEventListener("input", commonShare);
  $("policy-reload").addEventListener("click", () => { if (policyHospital) loadPolicy(policyHospital); });
  $("appeals-form").addEventListener("submit", (e) => { e.preventDefault(); loadAppeals(); });
  $("draws-form").addEventListener("submit", (e) => { e.preventDefault(); loadDraws(); });
  window.addEventListener("hashchange", () => { if (token()) showPage(); });
  if (token()) show();
});
