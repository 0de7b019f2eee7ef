// tandem's dashboard: reads serve's API (/api/v1) every two seconds and
// acts through it with serve.token. No framework, nothing fetched from
// elsewhere.
"use strict";

const API = "/api/v1";
const REFRESH_MS = 2000;
const PLAN_TYPES = ["switchover", "failover", "failback", "drill-start", "drill-stop"];
const NEEDS_TOKEN = "serve shows nothing without its token (serve.protect_reads): type serve.token in the token field, top right.";

const ui = {
  groups: [],
  group: null, // the protection group shown
  data: null, // {overview, executions, rpo} of the last good refresh
  lastGood: null, // when serve last answered
  failing: null, // the error of the refreshes since then
  selected: null, // execution id shown with its steps
  prechecks: null, // {type, result | error, at}
  precheckType: "switchover", // the plan whose prechecks the person picked
  open: new Set(), // details elements the person opened
  epoch: null, // the lease epoch last shown (a move is said)
};

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const enc = encodeURIComponent;

function token() {
  return $("token").value.trim();
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (token()) h.Authorization = "Bearer " + token();
  return h;
}

async function call(method, path, body) {
  const r = await fetch(API + path, { method, headers: headers(), cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body) });
  const out = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(out.error || `${r.status} ${r.statusText}`);
    e.status = r.status;
    throw e;
  }
  return out;
}

// say adds a message under the header, newest first: errors stay until
// dismissed, the rest go after a minute; five at most.
function say(kind, text) {
  const b = $("banner");
  const m = document.createElement("div");
  m.className = "msg " + kind;
  m.innerHTML = `<span>${esc(new Date().toLocaleTimeString())} ${esc(text)}</span> <button type="button">dismiss</button>`;
  m.querySelector("button").onclick = () => m.remove();
  b.prepend(m);
  while (b.children.length > 5) b.lastChild.remove();
  if (kind === "info") setTimeout(() => m.remove(), 60000);
}

// act posts a change; a refused one is said with the server's words.
async function act(what, path, body) {
  try {
    const out = await call("POST", path, body);
    say("info", what + ": " + (out.execution ? `execution ${out.execution} ` : "") + "accepted");
    await refresh();
    return out;
  } catch (e) {
    say("error", `${what} refused (${e.status || "no answer"}): ${e.message}`);
    return null;
  }
}

function ago(t) {
  if (!t) return "-";
  const s = (Date.now() - new Date(t).getTime()) / 1000;
  if (s < 0) return "in " + dur(-s);
  return dur(s) + " ago";
}

function dur(s) {
  if (s === undefined || s === null) return "-";
  if (s < 1) return s.toFixed(2) + "s";
  if (s < 120) return s.toFixed(1) + "s";
  if (s < 7200) return Math.floor(s / 60) + "m" + Math.floor(s % 60) + "s";
  return (s / 3600).toFixed(1) + "h";
}

// amount is a lag in its unit: seconds as a duration, else "512 bytes".
function amount(v, unit) {
  return unit ? `${Math.round(v)} ${unit}` : dur(v);
}

function clock(t) {
  return t ? new Date(t).toLocaleTimeString() : "-";
}

// state of an execution as a person reads it: a running record nobody runs
// was interrupted.
function runState(x) {
  return x.state === "running" && !x.runner ? "interrupted" : x.state;
}

function unfinished(x) {
  return !x.ended && x.state !== "succeeded";
}

async function loadGroups() {
  try {
    ui.groups = await call("GET", "/protection-groups");
  } catch (e) {
    $("main").innerHTML = e.status === 401 ? `<p class="bad" id="needs-token">${esc(NEEDS_TOKEN)}</p>` : `<p class="bad">serve's API does not answer: ${esc(e.message)}</p>`;
    setTimeout(loadGroups, REFRESH_MS);
    return;
  }
  pickGroup();
  window.addEventListener("hashchange", () => {
    pickGroup();
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
}

function pickGroup() {
  const want = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  const g = ui.groups.find((g) => g.name === want) || ui.groups[0];
  if (ui.group !== (g && g.name)) {
    ui.group = g && g.name;
    ui.data = null;
    ui.selected = null;
    ui.prechecks = null;
    ui.epoch = null;
  }
  $("groups").innerHTML = ui.groups.map((g) => `<a href="#/${enc(g.name)}" class="${g.name === ui.group ? "current" : ""}">${esc(g.name)}</a>`).join("");
  document.title = "tandem: " + (ui.group || "no protection group");
}

let refreshing = false;
async function refresh() {
  if (!ui.group || refreshing) return;
  refreshing = true;
  const pg = "/protection-groups/" + enc(ui.group);
  try {
    const [overview, executions, rpo] = await Promise.all([call("GET", pg + "/overview"), call("GET", pg + "/executions"), call("GET", pg + "/rpo")]);
    ui.data = { overview, executions, rpo };
    ui.lastGood = new Date();
    ui.failing = null;
    noticeMove(overview);
  } catch (e) {
    if (e.status === 401) ui.failing = NEEDS_TOKEN;
    else if (e.status) ui.failing = `serve answers ${e.status}: ${e.message}`;
    else ui.failing = `serve does not answer (${e.message})`;
  } finally {
    refreshing = false;
  }
  render();
}

// noticeMove says when the lease changed hands while the page was open.
function noticeMove(o) {
  const l = o.role && o.role.lease;
  if (!l) return;
  if (ui.epoch !== null && l.epoch !== ui.epoch) {
    say("info", `The lease of ${o.protection_group} moved: ${l.holder || "nobody"} holds it now (epoch ${l.epoch}).`);
  }
  ui.epoch = l.epoch;
}

function render() {
  const c = $("conn");
  if (ui.failing === NEEDS_TOKEN) {
    c.className = "bad";
    c.textContent = NEEDS_TOKEN;
  } else if (ui.failing) {
    c.className = "bad";
    c.textContent = `${ui.failing}, since ${clock(ui.lastGood)}: showing what it said last, trying again`;
  } else {
    c.className = "muted";
    c.textContent = "updated " + clock(ui.lastGood);
  }
  if (!ui.data) {
    if (ui.failing) $("main").innerHTML = `<p class="bad">Nothing read yet: ${esc(ui.failing)}</p>`;
    return;
  }
  keepOpen();
  const { overview, executions, rpo } = ui.data;
  const runs = executions.executions || [];
  if (!ui.selected && runs.length) ui.selected = (runs.find(unfinished) || runs[0]).id;
  $("main").innerHTML = [
    cards(overview, runs),
    membersPart(overview, rpo),
    partsPart(overview),
    plansPart(overview),
    executionsPart(runs, executions.unreadable),
    executionPart(runs.find((x) => x.id === ui.selected)),
  ].join("");
  for (const d of document.querySelectorAll("details[data-key]")) {
    if (ui.open.has(d.dataset.key)) d.open = true;
  }
  wire();
}

// keepOpen remembers which outputs the person opened across refreshes.
function keepOpen() {
  for (const d of document.querySelectorAll("details[data-key]")) {
    if (d.open) ui.open.add(d.dataset.key);
    else ui.open.delete(d.dataset.key);
  }
}

function cards(o, runs) {
  const role = o.role || {};
  const l = role.lease;
  let lease;
  if (l) {
    const st = role.lease_state || "held";
    lease = `<div class="big" id="holder">${esc(l.holder || "nobody")}</div>
      <div>epoch <b id="epoch">${esc(l.epoch)}</b> · <span class="${esc(st)}">${esc(st)}</span>, ${l.holder ? "expires " + ago(l.expires) : "released"}</div>
      <div class="muted">standby ${esc(l.standby || "none (failback reinstates one)")} · renewed ${ago(l.renewed)}</div>`;
  } else if (role.error) {
    lease = `<div class="big bad">unknown</div>`;
  } else {
    lease = `<div class="big" id="holder">${esc(o.primary)}</div><div class="muted">never taken: the configured primary</div>`;
  }
  const witness = role.error ? `<div class="bad" id="witness">witness: does not answer: ${esc(role.error)}</div>` : `<div class="ok" id="witness">witness: answers</div>`;
  const health = role.health === "ok" && !o.members.some((m) => m.attention) && !o.parts.some((p) => p.attention);
  let unfinishedRun = "";
  if (role.unfinished_execution) unfinishedRun = `<div class="warn">unfinished run: ${esc(role.unfinished_execution)}</div>`;
  const drill = runs.find((x) => x.type.startsWith("drill") && x.state === "succeeded");
  let drillCard = `<div class="muted">no drill has succeeded yet</div>`;
  if (drill) {
    const target = o.rto_seconds;
    const met = target ? (drill.rto_seconds <= target ? `<span class="ok">met</span>` : `<span class="bad">missed</span>`) : "";
    drillCard = `<div class="big" id="drill-rto">${dur(drill.rto_seconds)}</div>
      <div>${esc(drill.type)} ${ago(drill.decided)}${target ? ` · target ${dur(target)}: ${met}` : " · no rto set"}</div>
      <div class="muted">${esc(drill.id)}</div>`;
  }
  return `<section class="cards">
    <div class="card" id="lease"><h3>Lease holder (primary)</h3>${lease}${witness}</div>
    <div class="card" id="health"><h3>Health</h3><div class="big ${health ? "ok" : "bad"}">${health ? "ok" : "needs a person"}</div>
      <div>${esc(role.health || "-")}</div>${unfinishedRun}</div>
    <div class="card" id="last-drill"><h3>Last drill</h3>${drillCard}</div>
  </section>`;
}

// spark draws a member's lag history with its target as a dashed line.
function spark(m) {
  const pts = m.history || [];
  if (!pts.length) return "";
  const W = 160, H = 28;
  const top = Math.max(m.target || 0, ...pts.map((p) => p.lag), 1);
  const t0 = new Date(pts[0].at).getTime(), t1 = Math.max(new Date(pts[pts.length - 1].at).getTime(), t0 + 1);
  const x = (p) => (((new Date(p.at).getTime() - t0) / (t1 - t0)) * (W - 4) + 2).toFixed(1);
  const y = (v) => (H - 2 - (v / top) * (H - 4)).toFixed(1);
  let path = "", pen = false;
  for (const p of pts) {
    if (!p.known) {
      pen = false;
      continue;
    }
    path += `${pen ? "L" : "M"}${x(p)},${y(p.lag)} `;
    pen = true;
  }
  const target = m.target ? `<line x1="0" x2="${W}" y1="${y(m.target)}" y2="${y(m.target)}" stroke="#cf222e" stroke-dasharray="3,3"/>` : "";
  return `<svg class="spark" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="lag of ${esc(m.member)} over the last ${pts.length} samples">
    <rect width="${W}" height="${H}" fill="#f6f8fa"/>${target}<path d="${path}" fill="none" stroke="#0969da" stroke-width="1.5"/></svg>`;
}

function membersPart(o, rpo) {
  const lag = {};
  for (const m of rpo.members || []) lag[m.member] = m;
  const rows = o.members.map((m) => {
    const r = lag[m.noun + " " + m.member];
    let now = `<td class="muted">-</td><td class="muted">-</td><td></td>`;
    if (r) {
      const within = !r.known ? `<span class="bad">unknown</span>` : r.target ? (r.lag <= r.target ? `<span class="ok">within</span>` : `<span class="bad">beyond</span>`) : "";
      now = `<td>${r.known ? amount(r.lag, r.unit) : "unknown"} ${within}</td><td>${r.target ? amount(r.target, r.unit) : "-"}</td><td>${spark(r)}</td>`;
    }
    const [first, ...rest] = m.lines || [];
    return `<tr data-member="${esc(m.noun + " " + m.member)}"><td>${esc(m.noun)} <b>${esc(m.member)}</b></td>
      <td class="state ${m.attention ? "attention" : "ok"}">${esc(m.health)}</td>${now}
      <td><ul class="lines"><li>${esc(first || "")}</li>${rest.map((l) => `<li>${esc(l)}</li>`).join("")}</ul></td></tr>`;
  });
  const sampled = rpo.sampled ? `lag sampled every ${dur(rpo.every_seconds)}, last ${ago(rpo.sampled)}` : "no lag sample yet";
  return `<h2>Members: RPO now against its target</h2>
    <p class="muted">Lag: how long the oldest change not yet in the standby has waited (what a failover now would lose); for databases the WAL bytes the standby has not replayed, for streams the events the standby region lacks. ${esc(sampled)}.</p>
    <table id="members"><tr><th>member</th><th>health</th><th>lag now</th><th>RPO target</th><th>history</th><th>status</th></tr>
    ${rows.join("") || `<tr><td colspan="6" class="muted">no members</td></tr>`}</table>`;
}

function partsPart(o) {
  if (!o.parts.length) return "";
  return `<section class="cards">${o.parts
    .map((p) => `<div class="card"><h3 class="${p.attention ? "attention" : ""}">${esc(p.title)}</h3><ul class="lines">${p.lines.map((l) => `<li>${esc(l)}</li>`).join("")}</ul></div>`)
    .join("")}</section>`;
}

function plansPart(o) {
  const buttons = PLAN_TYPES.map((t) => `<button type="button" data-plan="${t}" class="${t === "failover" ? "danger" : ""}">Run ${t}…</button>`).join("");
  let checks = `<p class="muted">Prechecks change nothing; run them to see whether a plan could run now.</p>`;
  const pc = ui.prechecks;
  if (pc && pc.running) checks = `<p class="muted">running the prechecks of ${esc(pc.type)}…</p>`;
  else if (pc && pc.error) checks = `<p class="bad">prechecks of ${esc(pc.type)}: ${esc(pc.error)}</p>`;
  else if (pc) {
    const r = pc.result;
    checks = `<p id="precheck-result">prechecks of <b>${esc(r.plan)}</b> ${esc(r.from)} → ${esc(r.to)}, ${clock(pc.at)}:
      <span class="state ${r.ok ? "ok" : "bad"}">${r.ok ? "pass" : "fail"}</span></p>
      <table id="prechecks"><tr><th>check</th><th>region</th><th>result</th><th>what it found</th></tr>${r.checks
        .map((c) => {
          const mark = c.ok ? `<span class="ok">ok</span>` : c.warning ? `<span class="warn">warning</span>` : `<span class="bad">fail</span>`;
          return `<tr><td>${esc(c.id)}</td><td>${esc(c.region)}</td><td class="state">${mark}</td><td><pre>${esc([c.output, c.error].filter(Boolean).join("\n"))}</pre></td></tr>`;
        })
        .join("")}</table>`;
  }
  return `<h2>Plans</h2>
    <div class="actions">${buttons}</div>
    <div class="actions" style="margin-top:.6em">prechecks of <select id="precheck-type">${PLAN_TYPES.map((t) => `<option${ui.precheckType === t ? " selected" : ""}>${t}</option>`).join("")}</select>
      <button type="button" id="run-prechecks">Run prechecks</button>
      <a href="${API}/protection-groups/${enc(o.protection_group)}/history" target="_blank" rel="noopener">History of drills and failovers</a></div>
    ${checks}`;
}

function executionsPart(runs, unreadable) {
  const rows = runs.slice(0, 15).map((x) => {
    const st = runState(x);
    return `<tr data-execution="${esc(x.id)}" class="${x.id === ui.selected ? "selected" : ""}"><td>${clock(x.decided)} <span class="muted">${new Date(x.decided).toLocaleDateString()}</span></td>
      <td>${esc(x.type)}</td><td>${esc(x.from)} → ${esc(x.to)}</td><td class="state ${esc(st)}">${esc(st)}</td><td>${x.rto_seconds ? dur(x.rto_seconds) : "-"}</td>
      <td>${x.trigger ? "tandem (automatic)" : "a person"}</td><td><button type="button" data-show="${esc(x.id)}">show</button></td></tr>`;
  });
  const bad = (unreadable || []).map((u) => `<p class="bad">${esc(u)}</p>`).join("");
  return `<h2>Executions</h2>${bad}<table id="executions"><tr><th>decided</th><th>plan</th><th>from → to</th><th>state</th><th>RTO</th><th>started by</th><th></th></tr>
    ${rows.join("") || `<tr><td colspan="7" class="muted">no plan has run yet</td></tr>`}</table>`;
}

function executionPart(x) {
  if (!x) return "";
  const st = runState(x);
  const id = esc(x.id);
  const acts = [];
  if (unfinished(x)) acts.push(`<button type="button" class="danger" data-act="cancel">Cancel</button>`);
  if (st === "interrupted" || (x.ended && x.state === "canceled")) acts.push(`<button type="button" data-act="resume">Resume</button>`);
  if (x.state === "failed") acts.push(`<button type="button" data-act="retry">Retry failed steps</button>`);
  const steps = [];
  for (const g of x.groups) {
    for (const s of g.steps) {
      const b = [];
      if (s.state === "waiting-for-approval") b.push(`<button type="button" class="primary" data-act="approve" data-step="${esc(s.id)}">Approve</button>`);
      if (s.state === "failed" || s.state === "timed-out") b.push(`<button type="button" data-act="retry" data-step="${esc(s.id)}">Retry</button>`);
      if (["failed", "timed-out", "waiting-for-approval"].includes(s.state)) b.push(`<button type="button" data-act="skip" data-step="${esc(s.id)}">Skip</button>`);
      const took = s.started ? dur(((s.ended ? new Date(s.ended) : new Date()) - new Date(s.started)) / 1000) : "";
      const out = s.log || s.error ? `<details data-key="${id}/${esc(s.id)}"><summary>output</summary><pre>${esc(s.log || "")}${s.error ? "error: " + esc(s.error) : ""}</pre></details>` : "";
      steps.push(`<tr data-step="${esc(s.id)}"><td>${esc(g.name)}</td><td>${esc(s.title)}<br><span class="muted">${esc(s.id)}</span>${out}</td><td>${esc(s.region)}</td>
        <td class="state ${esc(s.state)}">${esc(s.state)}</td><td>${took}</td><td class="actions">${b.join("")}</td></tr>`);
    }
  }
  const rpo = (x.rpo || []).map((m) => `${esc(m.member)}: ${m.known ? amount(m.lag, m.unit) : "unknown"}`).join(" · ");
  return `<h2 id="execution-title">${esc(x.type)} ${id}: <span class="state ${esc(st)}">${esc(st)}</span></h2>
    <p>${esc(x.from)} → ${esc(x.to)} · decided ${clock(x.decided)} · ${x.rto_seconds ? "RTO <b>" + dur(x.rto_seconds) + "</b>" : x.ended ? "ended " + clock(x.ended) : "running for " + dur((Date.now() - new Date(x.decided)) / 1000)}
      ${x.error ? `<br><span class="bad">${esc(x.error)}</span>` : ""}${rpo ? `<br><span class="muted">lag at the decision: ${rpo}</span>` : ""}</p>
    <div class="actions" id="execution-actions" data-execution="${id}">${acts.join("")}
      <a href="${API}/protection-groups/${enc(x.protection_group)}/executions/${enc(x.id)}/report" target="_blank" rel="noopener">Report</a></div>
    <table id="steps"><tr><th>group</th><th>step</th><th>region</th><th>state</th><th>took</th><th></th></tr>${steps.join("")}</table>`;
}

function wire() {
  const pg = "/protection-groups/" + enc(ui.group);
  for (const b of document.querySelectorAll("button[data-show]")) b.onclick = () => ((ui.selected = b.dataset.show), render());
  for (const b of document.querySelectorAll("button[data-plan]")) b.onclick = () => confirmPlan(b.dataset.plan);
  for (const b of document.querySelectorAll("button[data-act]")) {
    b.onclick = async () => {
      const id = ui.selected;
      const step = b.dataset.step;
      const body = step ? { step } : undefined;
      if (b.dataset.act === "cancel" && !(await ask(`<p>Cancel ${esc(id)}? A running step is interrupted; what ran stays done.</p>`, "Cancel the run", true))) return;
      if (b.dataset.act === "approve") {
        // Who approves goes into the execution record and its report.
        const html = `<p>Approve <b>${esc(step)}</b> of ${esc(id)}?</p>
          <label>Your name, for the record <input id="approver" autocomplete="name" required value="${esc(sessionStorage.getItem("tandem-approver") || "")}"></label>`;
        if (!(await ask(html, "Approve", false))) return;
        body.by = $("approver").value.trim();
        sessionStorage.setItem("tandem-approver", body.by);
      }
      b.disabled = true;
      await act(`${b.dataset.act} ${step || id}`, `${pg}/executions/${enc(id)}/${b.dataset.act}`, body);
    };
  }
  const pick = $("precheck-type");
  if (pick) pick.onchange = () => (ui.precheckType = pick.value);
  const run = $("run-prechecks");
  if (run)
    run.onclick = async () => {
      const type = ui.precheckType;
      ui.prechecks = { type, running: true };
      render();
      try {
        ui.prechecks = { type, result: await call("GET", `${pg}/plans/${enc(type)}/prechecks`), at: new Date() };
      } catch (e) {
        ui.prechecks = { type, error: e.message };
      }
      render();
    };
}

// ask shows a question in the page's dialog and answers whether the
// person pressed yes.
function ask(html, yes, danger) {
  const d = $("confirm");
  d.innerHTML = `<form method="dialog">${html}<div class="actions"><button value="yes" class="${danger ? "danger" : "primary"}" id="confirm-yes">${esc(yes)}</button><button value="no" id="confirm-no">No</button></div></form>`;
  return new Promise((resolve) => {
    d.onclose = () => resolve(d.returnValue === "yes");
    d.returnValue = "";
    d.showModal();
  });
}

// confirmPlan shows what a plan would do and runs it once confirmed.
async function confirmPlan(type) {
  const pg = "/protection-groups/" + enc(ui.group);
  let p;
  try {
    p = await call("GET", `${pg}/plans/${enc(type)}`);
  } catch (e) {
    say("error", `${type} cannot run now: ${e.message}`);
    return;
  }
  const n = (p.groups || []).reduce((n, g) => n + (g.steps || []).length, 0);
  const html = `<h3>Run ${esc(type)} of ${esc(ui.group)}?</h3>
    <p><b>${esc(p.from)}</b> → <b>${esc(p.to)}</b>: ${n} steps (${esc((p.groups || []).map((g) => g.name).join(", "))}).</p>
    ${type === "failover" ? `<p class="bad">A failover does not wait for ${esc(p.from)}: what it has not copied yet is lost.</p>` : ""}`;
  if (!(await ask(html, "Run " + type, type === "failover"))) return;
  const out = await act(`run ${type}`, `${pg}/plans/${enc(type)}/run`);
  if (out && out.execution) {
    ui.selected = out.execution;
    render();
  }
}

$("token").value = sessionStorage.getItem("tandem-token") || "";
$("token").addEventListener("input", () => sessionStorage.setItem("tandem-token", token()));
loadGroups();
