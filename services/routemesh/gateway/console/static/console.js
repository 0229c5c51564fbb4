// routemesh console: polls the gateway's /console/api every 2 s while the tab is visible and draws it.
// Every string from the mesh (models, routes, tenants, reasons) goes into the page as text, never as HTML.
import { $, badge, clear, clock, el, ms, num, paintSwatches, pct, stamp, td, usd } from "./dom.js";
import { lineChart } from "./chart.js";

var POLL_MS = 2000;
var SLOW_MS = 30000;
var KEY_ITEM = "routemesh.console.key";
var state = { policyVersion: null, policyAt: 0, ledgerAt: 0, selected: null, timer: null };

// --- the API --------------------------------------------------------------------------------------------------
function Refused(status, message) { this.status = status; this.message = message; }

function api(path) {
  var headers = { "Accept": "application/json" };
  var key = sessionStorage.getItem(KEY_ITEM);
  if (key) { headers["Authorization"] = "Bearer " + key; }
  return fetch("/console/api/" + path, { headers: headers, cache: "no-store", credentials: "omit" })
    .then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) {
          var message = body && body.error ? body.error.message : response.status + " " + response.statusText;
          throw new Refused(response.status, message);
        }
        return body;
      });
    });
}

// --- sign-in ------------------------------------------------------------------------------------------------
function showLogin(message) {
  stop();
  $("console").hidden = true;
  $("login-panel").hidden = false;
  $("login-why").textContent = message || "";
  $("sign-out").hidden = true;
  setLive(false, "signed out");
  $("key").focus();
}

function signIn(event) {
  event.preventDefault();
  var key = $("key").value.trim();
  if (!key) { return; }
  sessionStorage.setItem(KEY_ITEM, key);
  $("key").value = "";
  start();
}

function signOut() {
  sessionStorage.removeItem(KEY_ITEM);
  showLogin("Signed out.");
}

function start() {
  api("session").then(function (session) {
    $("login-panel").hidden = true;
    $("login-error").textContent = "";
    $("console").hidden = false;
    $("sign-out").hidden = session.open;
    state.policyVersion = null;
    state.ledgerAt = 0;
    tick();
  }, function (error) {
    if (error.status === 401) {
      var hadKey = !!sessionStorage.getItem(KEY_ITEM);
      sessionStorage.removeItem(KEY_ITEM);
      showLogin(error.message);
      $("login-error").textContent = hadKey ? "That credential was not accepted." : "";
    } else {
      setLive(false, "unreachable");
      state.timer = setTimeout(start, POLL_MS);
    }
  });
}

function stop() { if (state.timer) { clearTimeout(state.timer); state.timer = null; } }

function setLive(ok, text) {
  var live = $("live");
  live.textContent = text;
  live.className = "pill " + (ok ? "live" : "down");
}

function problem(message) {
  var node = $("problem");
  node.hidden = !message;
  node.textContent = message || "";
}

// --- polling ------------------------------------------------------------------------------------------------
function tick() {
  stop();
  if (document.hidden) { return; }  // nobody looks: the mesh stays quiet until the tab shows again
  var now = Date.now();
  var jobs = [api("overview").then(drawOverview), api("decisions?limit=100").then(drawDecisions),
              api("alerts").then(drawAlerts)];
  if (now - state.ledgerAt > SLOW_MS) {
    state.ledgerAt = now;
    jobs.push(api("ledger").then(drawLedger, function (error) { drawLedgerError(error); }));
  }
  Promise.all(jobs).then(function () {
    problem("");
    setLive(true, "live");
    $("updated").textContent = "updated " + clock(Date.now());
  }, function (error) {
    if (error instanceof Refused && error.status === 401) {
      sessionStorage.removeItem(KEY_ITEM);
      showLogin(error.message);
      return;
    }
    setLive(false, "trouble");
    problem(error.message || String(error));
  }).then(function () {
    if (!$("console").hidden) { state.timer = setTimeout(tick, POLL_MS); }
  });
}

document.addEventListener("visibilitychange", function () {
  if (!document.hidden && !$("console").hidden) { tick(); }
});

// --- overview: models, charts, routes -----------------------------------------------------------------------
function drawOverview(data) {
  var policy = data.policy;
  $("policy-version").textContent = policy ? "policy v" + policy.version : "no policy yet";
  var policyKey = policy ? policy.version + ":" + policy.digest : null;
  if (policyKey !== state.policyVersion || Date.now() - state.policyAt > SLOW_MS) {
    state.policyVersion = policyKey;
    state.policyAt = Date.now();
    api("policy").then(drawPolicy, function (error) { drawPolicyError(error); });
  }
  drawModels(data);
  drawRoutes(data);
  var series = data.history.models;
  var names = Object.keys(series).sort();
  lineChart($("chart-rpm"), data.history.t, names.map(function (n) {
    return { name: n, values: series[n].requests_per_minute };
  }), num);
  lineChart($("chart-ttft"), data.history.t, names.map(function (n) {
    return { name: n, values: series[n].ttft_p90_ms };
  }), function (v) { return v > 0 ? ms(v) : "0"; });
  var timeline = data.route_timeline;
  var times = [];
  var routes = Object.keys(timeline.routes);
  var count = routes.length ? timeline.routes[routes[0]].length : 0;
  for (var i = 0; i < count; i++) { times.push(timeline.start_ms + (i + 1) * timeline.bucket_s * 1000); }
  lineChart($("chart-routes"), times, routes.map(function (r) {
    return { name: r, values: timeline.routes[r] };
  }), num);
}

function drawModels(data) {
  var body = clear($("models").tBodies[0]);
  data.models.forEach(function (m) {
    var row = el("tr", { "data-model": m.model, cls: m.samples || m.in_flight ? "" : "idle" },
      el("td", {}, el("span", { cls: "swatch", "data-color": m.model }), m.model),
      td(m.provider || "–"), td(num(m.requests_per_minute), "num"), td(num(m.in_flight), "num"),
      td(ms(m.ttft_p50_ms), "num"), td(ms(m.ttft_p90_ms), "num"), td(m.samples ? pct(m.error_rate) : "–", "num"),
      el("td", {}, badge(m.circuit), m.stale ? el("span", { cls: "muted", text: " stale" }) : null),
      td(usd(m.spend_per_minute_usd), "num"), td(usd(m.spend_total_usd), "num"));
    body.appendChild(row);
  });
  paintSwatches(body);
  $("models-note").textContent = "window " + data.window_seconds + " s · " + data.models.length + " models";
}

function drawRoutes(data) {
  var body = clear($("routes").tBodies[0]);
  if (!data.routes.length) {
    body.appendChild(el("tr", {}, el("td", { colspan: "7", cls: "empty", text: "no requests yet" })));
  }
  data.routes.forEach(function (r) {
    var models = Object.keys(r.models).map(function (m) { return m + " " + r.models[m]; }).join(", ");
    body.appendChild(el("tr", { "data-route": r.route },
      td(r.route), td(num(r.requests), "num"), td(usd(r.spend_usd), "num"), td(ms(r.ttft_p50_ms), "num"),
      td(ms(r.ttft_p90_ms), "num"), td(pct(r.error_rate), "num"), td(models, "wrap")));
  });
  $("routes-note").textContent = "over the newest " + data.recent_requests + " requests";
}

// --- recent decisions and Explain ---------------------------------------------------------------------------
function drawDecisions(data) {
  var body = clear($("decisions").tBodies[0]);
  if (!data.decisions.length) {
    body.appendChild(el("tr", {}, el("td", { colspan: "7", cls: "empty", text: "no requests yet" })));
  }
  data.decisions.forEach(function (d) {
    var row = el("tr", { "data-decision": d.decision_id, cls: d.decision_id === state.selected ? "selected" : "" },
      td(clock(d.at_ms)), td(d.route), td(d.model || "–"), el("td", {}, badge(d.status)),
      td(ms(d.ttft_ms), "num"), td(usd(d.cost_usd), "num"), td(d.tenant || "–"));
    row.addEventListener("click", function () { select(d.decision_id); });
    body.appendChild(row);
  });
}

function select(id) {
  state.selected = id;
  var rows = $("decisions").tBodies[0].rows;
  for (var i = 0; i < rows.length; i++) {
    rows[i].className = rows[i].getAttribute("data-decision") === id ? "selected" : "";
  }
  $("explain-id").textContent = id;
  var body = clear($("explain-body"));
  body.appendChild(el("p", { cls: "muted", text: "loading…" }));
  api("decisions/" + encodeURIComponent(id)).then(drawExplain, function (error) {
    clear(body).appendChild(el("p", { cls: "error", text: error.message }));
  });
}

function kv(pairs) {
  var list = el("dl", { cls: "kv" });
  pairs.forEach(function (p) {
    if (p[1] === "" || p[1] === null || p[1] === undefined) { return; }
    list.appendChild(el("dt", { text: p[0] }));
    list.appendChild(el("dd", {}, p[1]));
  });
  return list;
}

function drawExplain(e) {
  var d = e.decision, f = d.features;
  var body = clear($("explain-body"));
  body.appendChild(kv([
    ["chosen", d.model + (d.provider ? " (" + d.provider + ")" : "") + " by " + d.strategy],
    ["served by", e.model || "none"], ["status", badge(e.status)],
    ["route", e.route + (d.rule ? " · rule " + d.rule : "")], ["tenant", e.tenant],
    ["fallbacks", d.fallbacks.join(", ")], ["policy", "v" + d.policy_version],
    ["TTFT · duration · cost", ms(e.ttft_ms) + " · " + ms(e.duration_ms) + " · " + usd(e.cost_usd)],
    ["degraded", d.degraded.join(", ")], ["trace", d.trace_id]]));
  body.appendChild(el("div", { cls: "reason", "data-testid": "reason" }, el("strong", { text: "Why: " }),
    d.reason || "no reason given"));
  var predicted = Object.keys(f.predicted_success).map(function (m) {
    return m + " " + f.predicted_success[m].toFixed(2);
  }).join(", ");
  body.appendChild(kv([
    ["task", f.task + " (" + (f.task_confidence * 100).toFixed(0) + "%)"],
    ["complexity", f.complexity.toFixed(2)], ["tokens · language", f.input_tokens + " · " + f.language],
    ["code", f.has_code ? "yes" : "no"], ["signals", f.signals.join(", ")], ["features from", f.source],
    ["predicted quality", predicted]]));
  var table = el("table", { cls: "grid", id: "candidates" },
    el("thead", {}, el("tr", {}, el("th", { text: "rank" }), el("th", { text: "model" }),
      el("th", { cls: "num", text: "score" }), el("th", { cls: "num", text: "est. cost" }),
      el("th", { text: "factors / why not" }))));
  var rows = el("tbody");
  d.candidates.forEach(function (c) {
    var notes = c.rejection_reason || Object.keys(c.factors).map(function (k) {
      return k + "=" + Number(c.factors[k]).toPrecision(3);
    }).join(", ");
    rows.appendChild(el("tr", { cls: c.chosen ? "chosen" : (c.eligible ? "" : "rejected"), "data-candidate": c.model },
      td(c.eligible ? String(c.rank) : "–"), td(c.model + (c.chosen ? " ✓" : "")),
      td(c.score.toFixed(3), "num"), td(usd(c.estimated_cost_usd), "num"), td(notes, "wrap")));
  });
  table.appendChild(rows);
  body.appendChild(el("h3", { text: "Candidates" }));
  body.appendChild(table);
  if (e.final.attempts.length) {
    body.appendChild(el("h3", { text: "Attempts" }));
    var list = el("ol");
    e.final.attempts.forEach(function (a) {
      list.appendChild(el("li", { text: a.model + ": " + a.outcome + (a.http_status ? " " + a.http_status : "") +
        (a.error ? " (" + a.error + ")" : "") + ", TTFT " + ms(a.ttft_ms) + ", " + ms(a.duration_ms) }));
    });
    body.appendChild(list);
  }
}

// --- alerts -------------------------------------------------------------------------------------------------
function drawAlerts(data) {
  var box = clear($("alerts"));
  $("alerts-note").textContent = data.firing.length + " firing";
  if (!data.firing.length && !data.resolved.length) {
    box.appendChild(el("p", { cls: "empty", text: "no alerts" }));
  }
  data.firing.concat(data.resolved).forEach(function (a) {
    var since = a.state === "firing" ? "since " + clock(a.started_at_ms) : "resolved " + clock(a.resolved_at_ms);
    box.appendChild(el("div", { cls: "alert " + (a.state === "firing" ? a.severity : "resolved") },
      el("div", {}, badge(a.state === "firing" ? a.severity || "firing" : "resolved"), " ",
        el("strong", { text: a.rule }), " ", el("span", { cls: "muted", text: a.subject + " · " + since })),
      el("div", { text: a.summary })));
  });
}

// --- policy -------------------------------------------------------------------------------------------------
function drawPolicy(data) {
  var box = clear($("policy"));
  var c = data.current;
  $("policy-digest").textContent = c.digest.slice(0, 16);
  box.appendChild(kv([["version", "v" + c.version + " from " + c.source], ["applied", stamp(c.created_at_ms)]]));
  if (data.changes.length) {
    var log = el("table", { cls: "grid" }, el("thead", {}, el("tr", {}, el("th", { text: "when" }),
      el("th", { text: "who" }), el("th", { text: "what" }), el("th", { text: "change" }))));
    var rows = el("tbody");
    data.changes.slice(0, 5).forEach(function (ch) {
      rows.appendChild(el("tr", {}, td(clock(ch.at_ms)), td(ch.actor), td(ch.action + " v" + ch.version),
        td(ch.summary, "wrap")));
    });
    log.appendChild(rows);
    box.appendChild(log);
  }
  if (!data.diff) {
    box.appendChild(el("p", { cls: "muted", text: data.note }));
    return;
  }
  box.appendChild(el("h3", { text: "Diff v" + data.diff.from_version + " → v" + data.diff.to_version + " (+" +
    data.diff.added + " −" + data.diff.removed + ")" }));
  var diff = el("div", { cls: "diff", id: "policy-diff" });
  data.diff.lines.forEach(function (line) {
    var cls = line.op === "+" ? "add" : line.op === "-" ? "del" : line.op === "@" ? "hunk" : "";
    diff.appendChild(el("div", { cls: cls, text: (line.op === "@" ? "" : line.op) + line.text }));
  });
  box.appendChild(diff);
}

function drawPolicyError(error) {
  clear($("policy")).appendChild(el("p", { cls: "error", text: error.message || String(error) }));
}

// --- ledger savings -----------------------------------------------------------------------------------------
function drawLedger(data) {
  var box = clear($("ledger"));
  if (!data.configured) {
    $("ledger-note").textContent = "";
    box.appendChild(el("p", { cls: "empty", text: data.message }));
    return;
  }
  var r = data.report, t = r.total;
  $("ledger-note").textContent = "since " + r.since;
  box.appendChild(el("div", { cls: "stats" },
    el("div", {}, el("span", { text: "requests" }), el("b", { cls: "big", text: num(t.requests) })),
    el("div", {}, el("span", { text: "spend" }), el("b", { cls: "big", text: usd(t.cost_usd) })),
    el("div", {}, el("span", { text: "saved vs strongest" }), el("b", { cls: "big", text: pct(t.saved_vs_strongest) })),
    el("div", {}, el("span", { text: "saved vs first" }), el("b", { cls: "big", text: pct(t.saved_vs_first) }))));
  var table = el("table", { cls: "grid", id: "ledger-routes" }, el("thead", {}, el("tr", {},
    el("th", { text: "route" }), el("th", { cls: "num", text: "requests" }), el("th", { cls: "num", text: "spend" }),
    el("th", { cls: "num", text: "all strongest" }), el("th", { cls: "num", text: "saved" }),
    el("th", { cls: "num", text: "errors" }))));
  var rows = el("tbody");
  Object.keys(r.route).forEach(function (name) {
    var g = r.route[name];
    rows.appendChild(el("tr", {}, td(name), td(num(g.requests), "num"), td(usd(g.cost_usd), "num"),
      td(usd(g.all_strongest_usd), "num"), td(pct(g.saved_vs_strongest), "num"), td(pct(g.error_rate), "num")));
  });
  table.appendChild(rows);
  box.appendChild(table);
}

function drawLedgerError(error) {
  state.ledgerAt = Date.now() - SLOW_MS + POLL_MS * 5;  // try again in ten seconds
  clear($("ledger")).appendChild(el("p", { cls: "error", text: error.message || String(error) }));
}

document.addEventListener("DOMContentLoaded", function () {
  $("login").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  start();
});
