/* The station's pages: plain JS, no build step. Every state-changing request carries the
   session's CSRF token; live updates come over the pen's WebSocket. */
"use strict";
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const $ = (sel, root) => (root || document).querySelector(sel);

function toast(text, bad) {
  const box = $("#toast");
  box.textContent = text;
  box.classList.toggle("bad", !!bad);
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.textContent = ""; }, 8000);
}

async function api(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
  if (!response.ok) {
    const error = new Error(data.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

let penSocket = null;  /* the pen's feed; the stop button sends on it first */
const stopListeners = [];
/* The page shows another pen than the station has under its id (the station restarted, the
   pen reconnected): say so on the page, stop reconnecting; commands are refused (409). */
function showStale(text) {
  let box = $("#stale");
  if (!box) {
    box = document.createElement("p");
    box.id = "stale"; box.className = "stale"; box.setAttribute("role", "alert");
    const main = $("main") || document.body;
    main.prepend(box);
  }
  box.textContent = `Stale page: ${text}`;
  document.body.dataset.stale = "1";
}
function feed(pid, serial, onEvent) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let closed = false;
  function open() {
    const ws = new WebSocket(`${scheme}://${location.host}/ws/pens/${pid}?serial=${encodeURIComponent(serial)}`);
    ws.onopen = () => { penSocket = ws; };
    ws.onmessage = (m) => {
      const e = JSON.parse(m.data);
      if (e.type === "stale") { closed = true; showStale(e.error); }
      if (e.type === "stopped" || e.type === "stop_refused" || e.type === "stale") stopListeners.forEach((f) => f(e));
      onEvent(e);
    };
    ws.onclose = (ev) => {
      if (penSocket === ws) penSocket = null;
      if (ev.code === 4409) closed = true;
      if (!closed) setTimeout(open, 1000);
    };
  }
  open();
  window.addEventListener("beforeunload", () => { closed = true; });
}

function initial() {
  const node = $("#initial");
  return node ? JSON.parse(node.textContent) : null;
}

/* --- stop: on every pen page -------------------------------------------------------------
   On the pen's open WebSocket first (no new connection to wait for), else a POST; either way
   the server sends the urgent stop at once. */
function wireStop() {
  const button = $("#stop");
  if (!button) return;
  const out = $("#stop-result");
  let pending = false;
  function show(r, via) {
    pending = false;
    out.dataset.via = via;
    const parts = [`stopped: pen ${r.state}`];
    if (r.retract_ms !== null) parts.push(`needles home ${r.retract_ms} ms after the stop (pen clock)`);
    parts.push(`acknowledged in ${r.acknowledged_ms} ms`);
    if (r.aborted_calibration) parts.push("calibration aborted");
    if (r.error) parts.push(`error: ${r.error}`);
    out.textContent = parts.join("; ");
    out.dataset.state = r.state;
    out.dataset.retractMs = r.retract_ms === null ? "" : r.retract_ms;
  }
  function stale(text) {
    pending = false;
    showStale(text);
    out.textContent = `NOT stopped — stale page: ${text}. Use the pen's own button if it runs.`;
    out.dataset.state = "stale";
  }
  async function post() {
    try { show(await api(`/api/pens/${button.dataset.pid}/stop`, {serial: button.dataset.serial}), "post"); }
    catch (e) {
      if (e.status === 409) { stale(e.message); return; }
      pending = false; out.textContent = `stop failed: ${e.message} — use the pen's own button`;
    }
  }
  stopListeners.push((e) => {
    if (e.type === "stopped" && pending) show(e, "feed");
    else if (e.type === "stale" && pending) stale(e.error);
    else if (e.type === "stop_refused" && pending) post();
  });
  button.addEventListener("click", () => {
    out.textContent = "stopping…";
    delete out.dataset.state;
    pending = true;
    if (penSocket && penSocket.readyState === WebSocket.OPEN) {
      penSocket.send(JSON.stringify({type: "stop", csrf: CSRF, serial: button.dataset.serial}));
      setTimeout(() => { if (pending) post(); }, 1500);  /* no answer on the feed: POST too */
    } else post();
  });
}

/* --- pens ---------------------------------------------------------------------------------- */
function pensPage() {
  const form = $("#connect-form");
  if (form) form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = $("#connect");
    button.disabled = true;
    toast("connecting…");
    try {
      const r = await api("/api/pens", {url: $("#pen-url").value});
      location.href = `/pens/${r.pid}`;
    } catch (e) { toast(e.message, true); button.disabled = false; }
  });
  document.querySelectorAll("button.disconnect").forEach((b) => b.addEventListener("click", async () => {
    try { await api(`/api/pens/${b.dataset.pid}/disconnect`, {serial: b.dataset.serial}); location.reload(); }
    catch (e) { toast(e.message, true); }
  }));
}

/* --- live pen view ------------------------------------------------------------------------- */
function penPage() {
  const pen = initial();
  const trace = [];
  const set = (id, v) => { const n = $(id); if (n) n.textContent = v; };
  function sample(s) {
    set("#v-state", s.state); $("#v-state").className = `state state-${s.state}`;
    set("#v-depth", s.depth_mm.toFixed(3)); set("#v-rate", s.rate_sps.toFixed(1));
    set("#v-strokes", s.strokes); set("#v-temp", s.temperature_c.toFixed(1));
    set("#v-battery", s.battery_v.toFixed(2));
    trace.push([s.t_ms, s.depth_mm]);
    while (trace.length && trace[0][0] < s.t_ms - 20000) trace.shift();
    window.tracePlot($("#depth-trace"), trace, 20000, 3);
  }
  function event(text) {
    const li = document.createElement("li");
    li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    $("#events").prepend(li);
  }
  if (pen.live) sample(pen.live);
  const clear = $("#clear-fault");
  if (clear) clear.addEventListener("click", async () => {
    try {
      const r = await api(`/api/pens/${pen.pid}/clear-fault`, {serial: pen.serial});
      toast(`fault cleared: pen ${r.state}`);
      event(`fault cleared: pen ${r.state}`);
    } catch (e) { toast(e.message, true); }
  });
  feed(pen.pid, pen.serial, (e) => {
    if (e.type === "telemetry") sample(e);
    else if (e.type === "snapshot" && e.pen.live) sample(e.pen.live);
    else if (e.type === "fault") { set("#v-fault", e.fault); event(`fault ${e.fault}`); }
    else if (e.type === "link") { set("#v-link", e.link); event(`link ${e.link}: ${e.detail}`); }
    else if (e.type === "run_report") event(`run ${e.run_id} ${e.outcome} after ${e.strokes} strokes`);
    else if (e.type === "event") event(`event ${e.code}`);
    else if (e.type === "stopped") event(`stopped: pen ${e.state}`);
    else if (e.type === "stale") event(`stale page: ${e.error}`);
    else if (e.type === "progress") event(e.text);
  });
}

/* --- calibration --------------------------------------------------------------------------- */
function calibratePage() {
  const pen = initial();
  let points = [];
  let promptId = null;
  const depthSet = [0, 2.5], rateSet = [60, 160];
  function draw() {
    window.errorPlot($("#plot-depth"), points.filter(p => p.quantity === "depth"),
      {xLabel: "set depth (mm)", yLabel: "error (mm)", setRange: depthSet, emptySpread: 0.1});
    window.errorPlot($("#plot-rate"), points.filter(p => p.quantity === "rate"),
      {xLabel: "set rate (strokes/s)", yLabel: "error (%)", setRange: rateSet, emptySpread: 2});
    const body = $("#points tbody");
    body.textContent = "";
    for (const p of points) {
      const tr = document.createElement("tr");
      const u = p.expanded === null ? "" : ` ± ${p.expanded.toFixed(p.decimals)}`;
      for (const text of [p.quantity, p.stage.replace("_", "-"), `${p.set} ${p.units}`,
        `${p.error >= 0 ? "+" : ""}${p.error.toFixed(p.decimals)}${u} ${p.error_units}`, `±${p.tolerance} ${p.error_units}`]) {
        const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
      }
      const td = document.createElement("td"), span = document.createElement("span");
      span.className = `outcome outcome-${p.verdict}`; span.textContent = p.verdict.replace("_", " ");
      td.appendChild(span); tr.appendChild(td); body.appendChild(tr);
    }
    $("#plot-depth").dataset.points = points.filter(p => p.quantity === "depth").length;
    $("#plot-rate").dataset.points = points.filter(p => p.quantity === "rate").length;
  }
  function log(text) {
    const li = document.createElement("li"); li.textContent = text; $("#cal-log").appendChild(li);
    li.scrollIntoView({block: "nearest"});
  }
  let shown = {id: null, rev: -1};
  function job(j) {
    if (!j) return;
    if (j.id === shown.id && j.rev < shown.rev) return;  /* an older snapshot, overtaken */
    shown = {id: j.id, rev: j.rev};
    $("#cal-job").textContent = j.id;
    const active = ["starting", "running"].includes(j.state);
    const form = $("#cal-form");
    if (form) form.querySelectorAll("fieldset input, select, #scpi-url, #readings, #technician, #cal-start")
      .forEach((n) => { n.disabled = active; });
    /* only the quantities this procedure measures get a plot */
    $("#plot-depth").closest("figure").hidden = j.procedure === "rate";
    $("#plot-rate").closest("figure").hidden = j.procedure === "depth";
    $("#cal-state").textContent = j.state;
    $("#cal-phase").textContent = j.phase || "—";
    points = j.points.slice();
    draw();
    const box = $("#prompt-box");
    if (j.prompt) {
      const fresh = promptId !== j.prompt.id;
      promptId = j.prompt.id;
      $("#prompt-question").textContent = j.prompt.question;
      box.hidden = false;
      box.dataset.promptId = j.prompt.id;
      if (fresh) {
        $("#prompt-answer").value = "";
        if (live) $("#prompt-answer").focus();  /* a question arriving now takes the focus */
      }
    } else { box.hidden = true; promptId = null; delete box.dataset.promptId; }
    if (!["starting", "running"].includes(j.state)) {
      const result = $("#cal-result");
      result.textContent = `${j.state}: ${j.outcome || ""} — ${j.reason || ""}. `;
      result.dataset.outcome = j.outcome || "";
      result.dataset.record = j.record_id || "";
      if (j.record_id) {
        const a = document.createElement("a");
        a.href = `/records/${j.record_id}`; a.id = "record-link";
        a.textContent = `Open record ${j.certificate || j.record_id.slice(0, 8)}`;
        result.appendChild(a);
      }
    } else { $("#cal-result").textContent = ""; }
  }
  let live = false;  /* the page's first render leaves the focus where the user is */
  if (pen.calibration) { job(pen.calibration); pen.calibration.messages.forEach(log); } else draw();
  live = true;
  feed(pen.pid, pen.serial, (e) => {
    if (e.type === "calibration") job(e.job);
    else if (e.type === "snapshot" && e.pen.calibration) job(e.pen.calibration);
    else if (e.type === "point") { points.push(e.point); draw(); }
    else if (e.type === "progress") { log(e.text); $("#cal-phase").textContent = e.phase; }
    else if (e.type === "telemetry") { $("#v-state").textContent = e.state; }
    else if (e.type === "stopped") log(`stopped: pen ${e.state}`);
  });
  const form = $("#cal-form");
  if (form) form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let gauge = $("#gauge").value;
    if (gauge === "scpi") gauge = $("#scpi-url").value;
    const tech = $("#technician");
    try {
      $("#cal-log").textContent = "";
      const r = await api(`/api/pens/${pen.pid}/calibration`, {
        procedure: form.querySelector('input[name="procedure"]:checked').value,
        gauge: gauge, readings: $("#readings").value, technician: tech ? tech.value : "",
        serial: pen.serial,
      });
      job(r.job);
    } catch (e) { toast(e.message, true); }
  });
  const abort = $("#cal-abort");
  if (abort) abort.addEventListener("click", async () => {
    try { await api(`/api/pens/${pen.pid}/calibration/abort`, {serial: pen.serial}); toast("aborting: the pen is made safe"); }
    catch (e) { toast(e.message, true); }
  });
  $("#prompt-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = promptId;
    if (id === null) return;
    try { await api(`/api/pens/${pen.pid}/calibration/answer`, {id: id, answer: $("#prompt-answer").value, serial: pen.serial}); }
    catch (e) { toast(e.message, true); }
  });
}

/* --- records, login ------------------------------------------------------------------------ */
function recordPage() {
  const sign = $("#sign");
  if (!sign) return;
  sign.addEventListener("click", async () => {
    if (!$("#reviewed").checked) { toast("tick that you have reviewed the results first", true); return; }
    try {
      const r = await api(`/api/records/${sign.dataset.record}/sign`);
      $("#signed").textContent = `by ${r.reviewer} (${r.signatory}) at ${r.signed_at}`;
      sign.disabled = true;
      toast("signed");
    } catch (e) { toast(e.message, true); }
  });
}

function loginPage() {
  const form = $("#login-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("/login", {user: $("#login-user").value, password: $("#login-password").value});
      const next = form.dataset.next || "";  /* a path of this station only: no open redirect */
      location.href = next.startsWith("/") && !next.startsWith("//") && !next.includes("\\") ? next : "/pens";
    } catch (e) { $("#login-error").textContent = e.message; }
  });
}

function fleetPage() {
  const table = $("#fleet tbody");
  if (!table) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/fleet`);
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.type === "error") { $("#fleet-status").textContent = e.error; return; }
    const views = e.type === "snapshot" ? e.pens : e.type === "pen" ? [e.pen] : [];
    for (const p of views) {
      const key = `${p.site}/${p.serial}`;
      let tr = table.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
      if (!tr) { tr = document.createElement("tr"); tr.dataset.key = key; table.appendChild(tr); }
      tr.textContent = "";
      const cells = [p.site, p.serial, p.online ? "online" : `offline${p.reason ? " " + p.reason : ""}`,
        p.state, p.fault, p.cartridge, p.last_fault, p.calibration_due, p.run];
      cells.forEach((v, i) => { const td = document.createElement(i === 1 ? "th" : "td"); if (i === 1) td.scope = "row"; td.textContent = v || "—"; tr.appendChild(td); });
    }
    if (e.type === "pen") $("#fleet-status").textContent = "live";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const logout = $("#logout");
  if (logout) logout.addEventListener("click", async () => { await api("/logout"); location.href = "/login"; });
  wireStop();
  const pages = {pens: pensPage, pen: penPage, calibrate: calibratePage, record: recordPage, login: loginPage, fleet: fleetPage};
  const init = pages[document.body.dataset.page];
  if (init) init();
});
