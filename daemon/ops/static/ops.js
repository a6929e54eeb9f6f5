// gepa-stream ops page: polls /ui/api/state and renders it; no framework, no build.
// Every value from the daemon is inserted as text (never as HTML).
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(250, Number(params.get("refresh")) || 2000);
const PAGE = 50;
const ui = { state: null, selected: decodeURIComponent((location.hash.match(/prompt=([^&]+)/) || [])[1] || ""),
  decisionsShown: PAGE, decisionsTotal: -1, diff: { name: null, a: null, b: null, versions: null, key: null },
  prompts: { q: "", state: "", offset: 0, limit: 100 } };

// -- helpers -------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}
const score = (x) => (x === null || x === undefined ? "—" : Number(x).toFixed(2));
const signed = (x) => (x === null || x === undefined ? "—" : (x >= 0 ? "+" : "") + Number(x).toFixed(2));
const pct = (x) => (x === null || x === undefined ? "—" : (x >= 0 ? "+" : "") + (100 * x).toFixed(0) + "%");
const share = (x) => (x === null || x === undefined ? "—" : +(100 * x).toFixed(1) + "%");
function span(s) {
  if (s === null || s === undefined) return "—";
  if (s < 90) return Math.round(s) + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return (s / 3600).toFixed(1) + "h";
  return (s / 86400).toFixed(1) + "d";
}
const ago = (t) => (t ? span(Date.now() / 1000 - t) + " ago" : "—");
const when = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
function bar(fraction, testid) {
  const fill = el("span");
  fill.style.width = Math.round(100 * Math.max(0, Math.min(1, fraction || 0))) + "%"; // CSSOM: allowed by the page's CSP
  return el("div", { class: "bar", "data-testid": testid }, fill);
}
const pill = (text, kind) => el("span", { class: "pill " + (kind || text) }, text.replace("_", " "));

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

// -- the prompts table ---------------------------------------------------------------------
function liveCell(p) {
  if (!p.live.length) return el("td", {}, "—");
  return el("td", { "data-testid": "live" }, p.live.map((l) => el("div", {},
    p.live.length > 1 ? el("span", { class: "small" }, l.name + " ") : null,
    el("span", { class: "name", "data-testid": "live-version" }, l.version ? "v" + l.version : "none"),
    " ", el("span", { class: "small" }, "score " + score(l.score)),
    l.awaiting.length ? el("div", {}, pill("awaiting approval", "awaiting_approval"), " ", l.awaiting.map((v) => "v" + v).join(", ")) : null,
    l.canary ? el("div", { "data-testid": "live-canary" }, pill("canary"), " v" + l.canary + " at " + share(l.canary_share),
      p.rollout && p.rollout.state === "canary" && p.rollout.canary_version === l.canary ? el("span", { class: "small" }, ` · stage ${p.rollout.stage + 1}/${p.rollout.stages.length}`) : null) : null,
    l.error ? el("div", { class: "small error" }, l.error) : null)));
}

function windowCell(p) {
  const w = p.window;
  if (!w) return el("td", { class: "small" }, ui.state.windows_here ? "no events yet" : "kept by the ingest role");
  return el("td", { "data-testid": "window" },
    el("div", {}, el("span", { "data-testid": "window-n" }, w.n_examples), " / " + w.max_examples + " examples"),
    bar(w.n_examples / w.max_examples, "window-bar"),
    el("div", { class: "small" }, `new ${w.n_new} · rolling ${score(w.rolling_score)} · oldest ${span(w.oldest_example_age_s)}`),
    el("div", { class: "small" }, `join buffer: ${w.waiting_traces} traces, ${w.waiting_ratings} ratings`));
}

function triggerCell(p) {
  const t = p.window && p.window.next_trigger;
  if (!t) return el("td", { class: "small" }, "—");
  const first = t.rules[0];
  return el("td", { "data-testid": "trigger" }, pill(t.status.replace("_", " "), t.status), el("div", { class: "small" }, t.text),
    first && t.status !== "in_flight" ? bar(first.fraction) : null);
}

function jobCell(p) {
  const j = p.job;
  if (!j) return el("td", { class: "small" }, "none yet");
  const live = j.live;
  const rows = [el("div", {}, pill(j.status), " ", el("span", { class: "small" }, j.trigger ? "by " + j.trigger : ""))];
  if (live && j.status !== "completed" && j.status !== "failed") {
    const budget = live.max_metric_calls || (j.budget || {}).max_metric_calls;
    const calls = live.metric_calls;
    rows.push(el("div", { class: "small" }, "stage ", el("b", { "data-testid": "job-stage" }, live.stage), live.detail ? " · " + live.detail : ""));
    if (calls !== null && calls !== undefined) {
      rows.push(el("div", {}, el("span", { "data-testid": "job-calls" }, calls), ` of ${budget} metric calls · best `, el("span", { "data-testid": "job-best" }, score(live.best_score))));
      rows.push(bar(calls / budget, "job-bar"));
    }
    const elapsed = live.started_at ? Date.now() / 1000 - live.started_at : null;
    rows.push(el("div", { class: "small" }, `elapsed ${span(elapsed)} of ${span(live.max_wall_time_s || (j.budget || {}).max_wall_time_s)}`));
  } else if (j.status === "completed" || j.status === "failed") {
    rows.push(el("div", { class: "small" }, `${j.metric_calls ?? "—"} metric calls · held-out ${score(j.baseline_score)} → ${score(j.candidate_score)}` + (j.version ? ` · v${j.version}` : "")));
  } else if (j.status === "requested" || j.status === "started") {
    rows.push(el("div", { class: "small" }, `${j.n_examples ?? "—"} examples · budget ${(j.budget || {}).max_metric_calls ?? "—"} calls / ${span((j.budget || {}).max_wall_time_s)}` + (ui.state.jobs_here ? "" : " · progress on the optimizer's page")));
  }
  if (j.error) rows.push(el("div", { class: "small error" }, j.error));
  const usage = usageLine(j);
  if (usage) rows.push(el("div", { class: "small", "data-testid": "job-usage" }, usage));
  return el("td", { "data-testid": "job" }, rows);
}
// Model usage, where the job reports it (tokens and estimated USD per role, in `extra.usage`).
function usageLine(j) {
  const extra = j.extra || {};
  const parts = [];
  if (extra.usage) {
    const roles = Object.values(extra.usage.roles || {});
    const tokens = roles.reduce((n, r) => n + (r.prompt_tokens || 0) + (r.completion_tokens || 0), 0);
    parts.push(`${tokens.toLocaleString()} tokens`, "$" + Number(extra.usage.cost_usd || 0).toFixed(4) + (extra.usage.cost_unknown ? " (some prices unknown)" : ""));
  }
  if ((j.budget || {}).max_cost_usd) parts.push("budget $" + Number(j.budget.max_cost_usd).toFixed(2));
  if (extra.stopped_by) parts.push("stopped by " + extra.stopped_by);
  return parts.join(" · ");
}

function decisionSummary(d) {
  return [pill(d.decision), " ", versions(d), d.improvement !== null ? ` · ${pct(d.improvement)}` : "", d.ci_low !== null ? ` · CI [${signed(d.ci_low)}, ${signed(d.ci_high)}]` : "", d.n_eval !== null ? ` · n=${d.n_eval}` : ""];
}
const versions = (d) => (d.from_version ? "v" + d.from_version : "—") + " → " + (d.to_version ? "v" + d.to_version : "—") + (d.traffic_share !== null && d.traffic_share !== undefined ? ` · ${share(d.traffic_share)}` : "");

function renderPrompts() {
  const body = document.querySelector("#prompts tbody");
  const rows = ui.state.prompts.map((p) => el("tr", { "data-prompt": p.name, class: p.name === ui.selected ? "selected" : null, onclick: () => select(p.name) },
    el("td", {}, el("div", { class: "name" }, p.name), el("div", { class: "small" }, `${p.backend} · ${p.mode} promotion`)),
    liveCell(p), windowCell(p), triggerCell(p), jobCell(p),
    el("td", { "data-testid": "last-decision" }, p.last_decision ? [el("div", {}, decisionSummary(p.last_decision)), el("div", { class: "small" }, `${ago(p.last_decision.time)} · ${p.last_decision.reason}`)] : el("span", { class: "small" }, "none yet"))));
  body.replaceChildren(...rows);
}

// the prompts' page: a search, a state filter and a pager over `matched` of `total`
function renderPager() {
  const s = ui.state, p = ui.prompts, shown = s.prompts.length;
  document.getElementById("prompts-range").textContent = shown
    ? `${s.offset + 1}–${s.offset + shown} of ${s.matched}` + (s.matched !== s.total ? ` (${s.total} in all)` : "")
    : `none of ${s.total}`;
  document.getElementById("prompts-prev").disabled = p.offset === 0;
  document.getElementById("prompts-next").disabled = s.offset + shown >= s.matched;
}

function refilter(change) {
  Object.assign(ui.prompts, change);
  clearTimeout(ui.refilterTimer);
  ui.refilterTimer = setTimeout(async () => { ui.state = await getJSON(`/ui/api/state?${new URLSearchParams(ui.prompts)}`); render(); }, 150);
}

document.getElementById("prompt-search").addEventListener("input", (e) => refilter({ q: e.target.value, offset: 0 }));
document.getElementById("prompt-state").addEventListener("change", (e) => refilter({ state: e.target.value, offset: 0 }));
document.getElementById("prompts-prev").addEventListener("click", () => refilter({ offset: Math.max(0, ui.prompts.offset - ui.prompts.limit) }));
document.getElementById("prompts-next").addEventListener("click", () => refilter({ offset: ui.prompts.offset + ui.prompts.limit }));

function renderMeta() {
  const s = ui.state;
  const refused = document.getElementById("policy-error");
  refused.hidden = !(s.policy && s.policy.error);
  refused.textContent = refused.hidden ? "" : `policy file refused ${ago(s.policy.error_at)}, the previous one stays in effect: ${s.policy.error}`;
  document.getElementById("meta").textContent = `role ${s.role} · ${s.total} prompt${s.total === 1 ? "" : "s"} · ` + (s.history_caught_up ? "history loaded" : "loading history…") + ` · updated ${new Date(s.generated_at * 1000).toLocaleTimeString()}`;
}

function renderDeadLetters() {
  const d = ui.state.dead_letters;
  const box = document.getElementById("dead-letters");
  if (!d.total) { box.replaceChildren(el("div", { class: "small" }, "none")); return; }
  box.replaceChildren(
    el("table", { class: "grid", "data-testid": "dead-letter-reasons" }, el("thead", {}, el("tr", {}, el("th", {}, "reason"), el("th", {}, "records"))),
      el("tbody", {}, Object.entries(d.by_reason).map(([reason, n]) => el("tr", {}, el("td", {}, reason), el("td", {}, n))))),
    el("h3", {}, "latest"),
    el("table", { class: "grid" }, el("thead", {}, el("tr", {}, ["time", "reason", "from", "key", "error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.recent.slice(0, 10).map((r) => el("tr", {}, el("td", { class: "small" }, when(r.time)), el("td", {}, r.reason), el("td", { class: "small" }, `${r.source_topic}/${r.partition}@${r.offset}`), el("td", { class: "small" }, r.key || "—"), el("td", { class: "small" }, r.error))))));
}

// -- the selected prompt -------------------------------------------------------------------
function select(name) {
  if (ui.selected !== name) { ui.decisionsShown = PAGE; ui.decisionsTotal = -1; ui.diff = { name: null, a: null, b: null, versions: null, key: null }; }
  ui.selected = name;
  history.replaceState(null, "", "#prompt=" + encodeURIComponent(name));
  document.getElementById("action-message").textContent = "";
  render();
}

function renderDetail() {
  const p = ui.state.prompts.find((x) => x.name === ui.selected);
  const section = document.getElementById("detail");
  section.hidden = !p;
  if (!p) return;
  document.getElementById("detail-title").textContent = p.name;
  renderActions(p);
  renderRollout(p);
  if (p.decisions_total !== ui.decisionsTotal) { ui.decisionsTotal = p.decisions_total; loadDecisions(p.name); loadVersions(p); }
}

async function loadDecisions(name) {
  try {
    const data = await getJSON(`/ui/api/decisions?prompt=${encodeURIComponent(name)}&limit=${ui.decisionsShown}`);
    if (name !== ui.selected) return;
    document.querySelector("#decisions tbody").replaceChildren(...data.decisions.map((d) => el("tr", { "data-decision": d.decision },
      el("td", { class: "small" }, when(d.time)), el("td", {}, pill(d.decision), d.prompt !== name ? el("div", { class: "small" }, d.prompt) : null),
      el("td", {}, versions(d)), el("td", {}, `${score(d.baseline_score)} → ${score(d.candidate_score)}`), el("td", {}, pct(d.improvement)),
      el("td", { "data-testid": "interval" }, d.ci_low !== null ? `[${signed(d.ci_low)}, ${signed(d.ci_high)}]` : "—"), el("td", {}, d.n_eval ?? "—"),
      el("td", { class: "small" }, d.reason, segmentsLine(d), costLine(d)))));
    const more = document.getElementById("more-decisions");
    more.hidden = data.total <= data.decisions.length;
    more.textContent = `show older decisions (${data.decisions.length} of ${data.total})`;
  } catch (error) { document.querySelector("#decisions tbody").replaceChildren(el("tr", {}, el("td", { class: "error", colspan: 8 }, String(error.message)))); }
}

// the gate's per-segment results under a decision: harmed segments first, each with its bound
function segmentsLine(d) {
  if (!d.segments || !d.segments.length) return null;
  const ordered = [...d.segments].sort((a, b) => (b.harmed - a.harmed) || (b.n - a.n));
  return el("div", { "data-testid": "segments" }, "segments: ", ...ordered.map((s, i) => el("span", { class: s.harmed ? "error" : "" },
    `${i ? " · " : ""}${s.segment} ${score(s.baseline_score)} → ${score(s.candidate_score)} (n=${s.n}, bound ${signed(s.upper)})${s.harmed ? " harmed" : ""}`)));
}

// the gate's limits under a decision: both versions' template tokens and cost per call
function costLine(d) {
  const b = d.baseline_cost, c = d.candidate_cost;
  if (!c) return null;
  const figure = (v, f) => (v && v[f] !== null && v[f] !== undefined ? v[f] : null);
  const tokens = (v) => (figure(v, "tokens_per_call") === null ? "—" : figure(v, "tokens_per_call").toFixed(1));
  const usd = (v) => (figure(v, "cost_per_call_usd") === null ? "—" : `$${figure(v, "cost_per_call_usd").toPrecision(3)}${v.cost_unknown ? "?" : ""}`);
  return el("div", { "data-testid": "cost" },
    `template ${b ? b.template_tokens : "—"} → ${c.template_tokens} tokens · per call ${tokens(b)} → ${tokens(c)} tokens, ${usd(b)} → ${usd(c)}`);
}

async function loadVersions(p) {
  const names = p.live.map((l) => l.name);
  const name = names.includes(ui.diff.name) ? ui.diff.name : names[0];
  if (!name) return;
  try {
    const data = await getJSON(`/ui/api/versions?name=${encodeURIComponent(name)}`);
    const numbers = data.versions.map((v) => v.version);
    const last = p.last_decision;
    if (!numbers.includes(ui.diff.a) || !numbers.includes(ui.diff.b) || ui.diff.name !== name) {
      if (last && last.prompt === name && numbers.includes(last.from_version) && numbers.includes(last.to_version)) { ui.diff.a = last.from_version; ui.diff.b = last.to_version; }
      else { ui.diff.b = numbers[0] || null; ui.diff.a = numbers[1] || numbers[0] || null; }
    }
    Object.assign(ui.diff, { name, versions: data.versions, production: data.production, canaryShare: data.canary_share });
    renderDiffControls(names);
    loadDiff();
  } catch (error) { document.getElementById("diff").replaceChildren(el("div", { class: "note error" }, String(error.message))); }
}

function renderDiffControls(names) {
  const label = (v) => `v${v.version}` + (v.version === ui.diff.production ? " (production)" : "") + (v.canary ? ` (canary ${share(ui.diff.canaryShare)})` : "") + (v.awaiting_approval ? " (awaiting approval)" : "") + (v.score !== null ? ` · ${score(v.score)}` : "");
  const choose = (key) => el("select", { "data-testid": "diff-" + key, onchange: (e) => { ui.diff[key] = Number(e.target.value); loadDiff(); } },
    ui.diff.versions.map((v) => el("option", { value: v.version, selected: v.version === ui.diff[key] }, label(v))));
  const nameSelect = names.length > 1 ? el("select", { onchange: (e) => { ui.diff.name = e.target.value; loadVersions(ui.state.prompts.find((x) => x.name === ui.selected)); } },
    names.map((n) => el("option", { value: n, selected: n === ui.diff.name }, n))) : null;
  document.getElementById("diff-controls").replaceChildren(...[nameSelect, "from", choose("a"), "to", choose("b")].filter(Boolean));
}

async function loadDiff() {
  const { name, a, b } = ui.diff;
  const box = document.getElementById("diff");
  if (!name || !a || !b) { box.replaceChildren(el("div", { class: "note" }, "no versions to compare yet")); return; }
  const key = `${name}/${a}/${b}`;
  try {
    const data = await getJSON(`/ui/api/diff?name=${encodeURIComponent(name)}&a=${a}&b=${b}`);
    if (key !== `${ui.diff.name}/${ui.diff.a}/${ui.diff.b}`) return;
    box.replaceChildren(el("div", { class: "note", "data-testid": "diff-title" }, `${name}: v${a} → v${b}` + (data.changed ? "" : " (identical)")),
      ...data.rows.map((r) => r.op === "replace"
        ? el("div", { class: "row replace" }, r.words.map(([op, text]) => (op === "equal" ? text : el(op === "delete" ? "del" : "ins", {}, text))))
        : el("div", { class: "row " + r.op }, r.op === "insert" ? r.new : r.old)));
  } catch (error) { box.replaceChildren(el("div", { class: "note error" }, String(error.message))); }
}

// -- actions and sign-in -------------------------------------------------------------------
const auth = { get token() { return sessionStorage.getItem("gepa-stream-admin-token"); }, get who() { return localStorage.getItem("gepa-stream-operator") || ""; } };

function renderAuth() {
  const box = document.getElementById("auth");
  const actions = ui.state.actions;
  if (!actions.enabled) { box.replaceChildren(el("span", { class: "small", "data-testid": "actions-off" }, actions.why)); return; }
  if (auth.token) {
    box.replaceChildren(el("span", { class: "small" }, "signed in as ", el("b", {}, auth.who || "operator")),
      el("button", { type: "button", onclick: () => { sessionStorage.removeItem("gepa-stream-admin-token"); render(); } }, "sign out"));
    return;
  }
  if (box.querySelector("form")) return; // keep what the operator is typing
  const who = el("input", { name: "who", placeholder: "your name", required: true, value: auth.who, autocomplete: "username" });
  const token = el("input", { name: "token", type: "password", placeholder: "admin token", required: true, autocomplete: "current-password" });
  box.replaceChildren(el("form", { "data-testid": "sign-in", onsubmit: (e) => { e.preventDefault(); localStorage.setItem("gepa-stream-operator", who.value.trim()); sessionStorage.setItem("gepa-stream-admin-token", token.value); box.replaceChildren(); render(); } },
    who, " ", token, " ", el("button", { type: "submit" }, "sign in")));
}

function renderActions(p) {
  const enabled = ui.state.actions.enabled;
  const button = (label, action, version) => el("button", { type: "button", disabled: !enabled, "data-action": action, onclick: () => act(p.name, action, version, label) }, label);
  // One registry prompt: a button per waiting version. Several (one per DSPy predictor): the
  // daemon approves or rejects the latest waiting version of each, together.
  const awaiting = p.live.flatMap((l) => l.awaiting);
  const decide = p.live.length > 1
    ? (awaiting.length ? [button("approve latest (all predictors)", "approve", null), button("reject latest (all predictors)", "reject", null)] : [])
    : awaiting.flatMap((v) => [button(`approve v${v}`, "approve", v), button(`reject v${v}`, "reject", v)]);
  // A running canary (the registry's, or the ingest role's rollout): advance it a stage (after the
  // last: promote) or abort it. The command names the version, so a click after it moved on does nothing.
  const canary = runningCanary(p);
  const next = canary ? canary.stages.find((s) => s > canary.share + 1e-9) : null;
  const rollout = canary ? [button(`advance canary v${canary.version} → ` + (next ? share(next) : "production"), "canary_advance", canary.version),
    button(`abort canary v${canary.version}`, "canary_abort", canary.version)] : [];
  document.getElementById("actions").replaceChildren(
    button("optimize now", "optimize"),
    ...decide,
    ...rollout,
    button("roll back production", "rollback"),
    ...(enabled ? [] : [el("span", { class: "small" }, ui.state.actions.why)]));
}

// -- the staged rollout --------------------------------------------------------------------
// The canary running now: the ingest role's rollout while it watches one; else the registry's
// `canary` alias, unless the rollout of that very version has ended (the registry read lags).
function runningCanary(p) {
  const r = p.rollout;
  const registry = p.live.find((l) => l.canary);
  if (r && r.state === "canary") return { version: r.canary_version, share: r.traffic_share, stages: r.stages };
  if (registry && !(r && r.canary_version === registry.canary)) return { version: registry.canary, share: registry.canary_share, stages: p.rollout_policy.stages };
  return null;
}

function renderRollout(p) {
  const section = document.getElementById("rollout-section");
  const box = document.getElementById("rollout");
  const r = p.rollout, policy = p.rollout_policy, canary = runningCanary(p);
  section.hidden = !r && !canary && !policy.enabled;
  if (section.hidden) return;
  const stagesLine = (stages, current, state) => el("div", { class: "stages small" }, "stages ",
    [...stages, 1].map((s, i) => el("span", { class: i === current && state === "canary" ? "current" : null }, (i ? "→ " : "") + share(s))));
  if (!r) {
    box.replaceChildren(canary
      ? el("div", {}, pill("canary"), ` v${canary.version} at `, el("b", { "data-testid": "rollout-share" }, share(canary.share)), " of traffic (registry) · " +
        (ui.state.windows_here ? "no live ratings compared yet" : "the live comparison is kept by the ingest role's page"))
      : el("div", { class: "small" }, `none running: a candidate that passes the gate starts as the canary at ${share(policy.stages[0])} of traffic`),
      stagesLine(policy.stages, canary ? policy.stages.findIndex((s) => Math.abs(s - canary.share) < 1e-9) : -1, "canary"));
    return;
  }
  const running = r.state === "canary";
  const arms = el("table", { class: "grid", "data-testid": "rollout-arms" },
    el("thead", {}, el("tr", {}, ["arm", "version", "ratings", "this stage", "mean rating"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ["canary", "production"].map((arm) => el("tr", { "data-arm": arm },
      el("td", {}, arm), el("td", {}, "v" + r[arm].version), el("td", { "data-testid": "arm-n" }, r[arm].n), el("td", {}, r[arm].n_stage),
      el("td", { "data-testid": "arm-mean" }, score(r[arm].mean))))));
  const rows = [
    el("div", {}, el("span", { "data-testid": "rollout-state" }, pill({ canary: "canary running", canary_aborted: "canary aborted" }[r.state] || r.state, r.state)), " ",
      `canary v${r.canary_version} against production v${r.production_version} · ${r.mode} mode · started ${ago(r.started_at)}`),
    el("div", {}, running ? ["stage ", el("b", { "data-testid": "rollout-stage" }, `${r.stage + 1}/${r.stages.length}`), " · ", el("b", { "data-testid": "rollout-share" }, share(r.traffic_share)), " of traffic"]
      : ["final share ", el("b", { "data-testid": "rollout-share" }, share(r.traffic_share)), ` · ended at stage ${r.stage + 1}/${r.stages.length}`]),
    bar(r.traffic_share, "rollout-bar"),
    stagesLine(r.stages, r.stage, r.state),
    arms,
    el("div", { "data-testid": "rollout-interval" }, "canary − production ", el("b", {}, signed(r.difference)),
      ` · ${Math.round(100 * r.confidence)}% anytime bounds `, el("b", {}, `[${signed(r.lower)}, ${signed(r.upper)}]`)),
  ];
  if (running) {
    const margin = policy.margin;
    const needed = r.needed_canary || r.needed_production
      ? `votes still needed this stage: canary ${r.needed_canary}, production ${r.needed_production}` : "enough votes this stage on both arms";
    const bound = r.lower_above_margin > 0
      ? `lower bound ${signed(r.lower)} is above -margin ${signed(-margin)} (by ${score(r.lower_above_margin)})`
      : `lower bound ${signed(r.lower)} must rise above -margin ${signed(-margin)} (by ${score(-r.lower_above_margin)})`;
    rows.push(el("div", { "data-testid": "rollout-next" }, el("b", {}, "next: " + (r.next_step === "promote" ? "promote to production" : `advance to ${share(r.stages[r.stage + 1])}`)),
      el("div", { class: "small", "data-testid": "rollout-needed" }, needed),
      el("div", { class: "small" }, bound),
      el("div", { class: "small" }, `time left in this stage ${span(r.stage_time_left_s)} (then aborted if undecided)`),
      r.worse_beyond_doubt ? el("div", {}, pill("worse beyond doubt", "worse"), " upper bound below 0: the rule aborts it") : null,
      r.mode === "manual"
        ? el("div", { "data-testid": "rollout-ready" }, r.ready_to_advance ? pill("ready to advance", "ready") : pill("not ready yet", "inconclusive"), el("span", { class: "small" }, " manual mode: an operator advances or aborts it"))
        : el("div", { class: "small" }, "auto mode: the rule advances or aborts it by itself")));
  } else {
    rows.push(el("div", { class: "small", "data-testid": "rollout-reason" }, `${r.state.replace("_", " ")} ${ago(r.decided_at)} · ${r.reason || ""}`));
  }
  box.replaceChildren(...rows);
}

async function act(prompt, action, version, label) {
  const message = document.getElementById("action-message");
  message.className = ""; message.textContent = `${label}: sending…`;
  const headers = { "Content-Type": "application/json" };
  if (auth.token) headers.Authorization = "Bearer " + auth.token;
  try {
    const response = await fetch("/ui/api/actions", { method: "POST", headers, body: JSON.stringify({ prompt, action, version, requested_by: auth.who || "anonymous" }) });
    const body = await response.json().catch(() => ({}));
    message.className = response.ok ? "ok" : "error";
    message.textContent = response.ok ? body.message : `${label} refused (${response.status}): ${body.error || response.statusText}`;
  } catch (error) { message.className = "error"; message.textContent = `${label} failed: ${error.message}`; }
}

// -- the loop ------------------------------------------------------------------------------
function render() {
  if (!ui.state) return;
  renderMeta(); renderAuth(); renderPrompts(); renderPager(); renderDetail(); renderDeadLetters();
}

async function poll() {
  try {
    const query = new URLSearchParams({ q: ui.prompts.q, state: ui.prompts.state, offset: ui.prompts.offset, limit: ui.prompts.limit });
    ui.state = await getJSON(`/ui/api/state?${query}`);
    render();
  } catch (error) {
    document.getElementById("meta").textContent = "the daemon did not answer: " + error.message;
  }
  setTimeout(poll, REFRESH_MS);
}

document.getElementById("more-decisions").addEventListener("click", () => { ui.decisionsShown += PAGE; loadDecisions(ui.selected); });
poll();
