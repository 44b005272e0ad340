// anomalyd's page: incidents, the series behind them, and why. Plain
// JavaScript over the JSON endpoints the footer lists; plots are SVG.
"use strict";

const REFRESH_MS = 10000;
const main = document.getElementById("main");
const errors = document.getElementById("errors");
let timer = null;

function showError(msg) {
  const p = document.createElement("p");
  p.textContent = msg;
  errors.replaceChildren(p);
}
window.addEventListener("error", (e) => showError("page error: " + e.message));
window.addEventListener("unhandledrejection", (e) => showError(String(e.reason)));

// el builds an element: el("td", {class: "x"}, child, "text", …).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => null);
  if (!r.ok || !body || body.status !== "success") {
    throw new Error(path.split("?")[0] + ": " + ((body && body.error) || r.status + " " + r.statusText));
  }
  errors.replaceChildren();
  return body.data;
}

// --- formatting ---

function fmtNum(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}

// rateTitle explains the unit of a verdict whose values are per-second
// rates (per_second): what anomalyd analyses of a counter, and of a gauge
// that only grows.
const rateTitle = "per second: anomalyd analyses this series as its rate of change (a counter, or a gauge that only grows)";

// valueCell and bandCell show a verdict's value and its expected value and
// band, "/s" marking per-second rates.
function valueCell(r) {
  return el("td", { class: "num value", title: r.per_second ? rateTitle : null }, fmtNum(r.value) + (r.per_second ? "/s" : ""));
}

function bandCell(r) {
  return el("td", { class: "num", title: r.per_second ? rateTitle : null },
    `${fmtNum(r.expected)} [${fmtNum(r.lower)}, ${fmtNum(r.upper)}]` + (r.per_second ? "/s" : ""));
}

function fmtDur(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return s + "s";
  const m = Math.round(s / 60);
  if (m < 120) return m + "m";
  const h = Math.floor(m / 60);
  return h + "h" + (m % 60 ? String(m % 60).padStart(2, "0") + "m" : "");
}

function fmtTime(t) {
  const d = new Date(t);
  return d.toLocaleString(undefined, { hour12: false });
}

function ago(t) {
  return fmtDur(Date.now() - new Date(t).getTime()) + " ago";
}

// labelText prints a label set as Prometheus does: name{a="b", …}.
function labelText(labels, skip) {
  const name = labels.__name__ || "";
  const parts = Object.keys(labels).filter((k) => k !== "__name__" && !(skip && k in skip)).sort()
    .map((k) => k + "=" + JSON.stringify(labels[k]));
  return name + (parts.length || !name ? "{" + parts.join(", ") + "}" : "");
}

// selector returns the exact selector of a label set, for match[].
function selector(labels) {
  const q = (k) => (/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(k) ? k : JSON.stringify(k));
  return "{" + Object.keys(labels).sort().map((k) => q(k) + "=" + JSON.stringify(labels[k])).join(", ") + "}";
}

// seriesLink links to a series' page: its name, then its other labels
// (less those in skip) in small print.
function seriesLink(labels, skip) {
  const rest = Object.assign({}, labels);
  delete rest.__name__;
  for (const k in skip || {}) delete rest[k];
  return el("a", { class: "series", href: "#/series/" + encodeURIComponent(selector(labels)) },
    el("span", { class: "name" }, labels.__name__ || "{}"), el("span", { class: "labels" }, labelText(rest)));
}

function scoreCell(score) {
  const cls = score >= 2 ? "bad" : score >= 1 ? "warn" : "ok";
  return el("td", { class: "num score " + cls }, fmtNum(score));
}

// --- plots ---

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// plot draws points [t, value, expected, lower, upper, score] as an SVG:
// the band grey, the expected value dashed, the value as a line, samples
// scoring 1 or more as red dots.
function plot(points, w, h, opts) {
  opts = opts || {};
  const s = svg("svg", { class: "plot", width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
  if (!points || points.length === 0) {
    s.append(svg("text", { x: 4, y: h / 2 + 4, class: "empty" }));
    s.lastChild.textContent = "no recent values kept";
    return s;
  }
  const pad = opts.axes ? 4 : 2;
  let t0 = points[0][0], t1 = points[points.length - 1][0];
  if (t1 === t0) { t0 -= 1; t1 += 1; }
  let lo = Infinity, hi = -Infinity;
  for (const p of points) {
    for (const v of [p[1], p[3], p[4]]) {
      if (v !== null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
  }
  if (!isFinite(lo)) { lo = 0; hi = 1; }
  if (hi === lo) { lo -= 1; hi += 1; }
  const X = (t) => pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
  const Y = (v) => pad + (1 - (v - lo) / (hi - lo)) * (h - 2 * pad);
  // Band: one polygon per run of points that have one.
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const up = run.map((p) => `${X(p[0]).toFixed(1)},${Y(p[4]).toFixed(1)}`);
      const down = run.slice().reverse().map((p) => `${X(p[0]).toFixed(1)},${Y(p[3]).toFixed(1)}`);
      s.append(svg("polygon", { class: "band", points: up.concat(down).join(" ") }));
    }
    run = [];
  };
  for (const p of points) {
    if (p[3] !== null && p[4] !== null) run.push(p); else flush();
  }
  flush();
  const line = (idx, cls) => {
    let d = "", pen = "M";
    for (const p of points) {
      if (p[idx] === null || !isFinite(p[idx])) { pen = "M"; continue; }
      d += `${pen}${X(p[0]).toFixed(1)},${Y(p[idx]).toFixed(1)}`;
      pen = "L";
    }
    if (d) s.append(svg("path", { class: cls, d }));
  };
  line(2, "expected");
  line(1, "value");
  for (const p of points) {
    if (p[5] !== null && p[5] >= 1) {
      s.append(svg("circle", { class: "alarm", cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: opts.axes ? 3.5 : 2.5 }));
    }
  }
  if (opts.axes) {
    for (const [v, y] of [[hi, 12], [lo, h - 4]]) {
      const t = svg("text", { x: 4, y, class: "axis" });
      t.textContent = fmtNum(v);
      s.append(t);
    }
  }
  return s;
}

// kept fetches the kept points of the label sets given, keyed by selector.
async function kept(labelSets) {
  const out = new Map();
  if (labelSets.length === 0) return out;
  const q = labelSets.map((l) => "match[]=" + encodeURIComponent(selector(l))).join("&");
  const data = await api("api/v1/series?" + q);
  for (const s of data.series) out.set(selector(s.labels), s.points);
  return out;
}

// --- views ---

async function incidentsView() {
  const data = await api("api/v1/incidents");
  const list = data.incidents;
  const open = list.filter((i) => i.open).length;
  const table = el("table", { id: "incidents" },
    el("thead", {}, el("tr", {}, el("th", {}, "state"), el("th", {}, "group"), el("th", {}, "started"),
      el("th", { class: "num" }, "duration"), el("th", { class: "num" }, "peak score"), el("th", { class: "num" }, "series"),
      el("th", {}, "leading series"))));
  const body = el("tbody");
  for (const inc of list) {
    const end = inc.open ? Date.now() : new Date(inc.end).getTime();
    const lead = inc.top_series[0];
    const row = el("tr", { class: "incident" + (inc.open ? " open" : ""), "data-id": inc.id },
      el("td", {}, el("span", { class: "pill " + (inc.open ? "bad" : "muted") }, inc.open ? "open" : "closed")),
      el("td", {}, el("a", { href: "#/incident/" + encodeURIComponent(inc.id) }, labelText(inc.group))),
      el("td", { title: fmtTime(inc.start) }, ago(inc.start)),
      el("td", { class: "num" }, fmtDur(end - new Date(inc.start).getTime())),
      scoreCell(inc.peak_score),
      el("td", { class: "num" }, inc.series),
      el("td", { class: "lead" }, lead ? labelText(lead.labels, inc.group) + " — " + lead.reason : ""));
    body.append(row);
  }
  table.append(body);
  const head = el("h1", {}, "Incidents ", el("span", { class: "muted" }, `${open} open, ${list.length - open} recent`));
  const help = el("p", { class: "muted" }, "An incident is many series of one group (by default a job and instance) " +
    "moving at once, more than chance explains. Newest first; open incidents on top.");
  main.replaceChildren(head, help, list.length ? table : el("p", { id: "no-incidents" }, "No open or recent incidents."));
}

async function incidentView(id) {
  const data = await api("api/v1/incidents");
  const inc = data.incidents.find((i) => i.id === id);
  if (!inc) {
    main.replaceChildren(el("h1", {}, "Incident " + id), el("p", {}, "Not open and no longer among the recent incidents. ",
      el("a", { href: "#/" }, "All incidents")));
    return;
  }
  const pts = await kept(inc.top_series.map((c) => c.labels));
  const end = inc.open ? Date.now() : new Date(inc.end).getTime();
  const head = el("h1", {}, el("span", { class: "pill " + (inc.open ? "bad" : "muted") }, inc.open ? "open" : "closed"),
    " ", labelText(inc.group));
  const facts = el("p", {}, `Started ${fmtTime(inc.start)} (${ago(inc.start)}), ` +
    (inc.open ? `open for ${fmtDur(end - new Date(inc.start).getTime())}` : `lasted ${fmtDur(end - new Date(inc.start).getTime())}`) +
    `; peak score ${fmtNum(inc.peak_score)}; ${inc.series} series with evidence at once.`);
  const table = el("table", { id: "contributors" }, el("thead", {}, el("tr", {},
    el("th", {}, "series (the group's labels left out)"), el("th", { class: "num" }, "score"), el("th", {}, "why"),
    el("th", { class: "num" }, "value"), el("th", { class: "num" }, "expected [band]"), el("th", {}, "recent values"))));
  const body = el("tbody");
  for (const c of inc.top_series) {
    body.append(el("tr", { class: "contributor" },
      el("td", {}, seriesLink(c.labels, inc.group)),
      scoreCell(c.score),
      el("td", { class: "reason" }, c.reason, el("div", { class: "muted" }, "driven by " + c.detector + ", at " + fmtTime(c.time))),
      valueCell(c),
      bandCell(c),
      el("td", {}, plot(pts.get(selector(c.labels)), 260, 44))));
  }
  table.append(body);
  main.replaceChildren(el("p", {}, el("a", { href: "#/" }, "← incidents")), head, facts,
    el("h2", {}, "The series that explain it, most surprising first"), table, legend());
}

function legend() {
  return el("p", { class: "legend muted" }, el("span", { class: "sw value" }), " value (a counter's per-second rate) ",
    el("span", { class: "sw expected" }), " expected ", el("span", { class: "sw band" }), " expected band ",
    el("span", { class: "sw alarm" }), " score of 1 or more");
}

function params() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

function setParams(p) {
  location.hash = "#/series" + (p.toString() ? "?" + p.toString() : "");
}

async function seriesView() {
  const p = params();
  const match = p.get("match") || "";
  const range = p.get("range") || "";
  const offset = Number(p.get("offset") || 0);
  const limit = 50;
  const form = el("form", { id: "filter" },
    el("input", { id: "match", name: "match", value: match, size: 60, placeholder: 'selector, e.g. {job="node"} or {__name__=~"http_.*"}', "aria-label": "series selector" }),
    el("select", { id: "range", name: "range", "aria-label": "time range" },
      ...[["", "now"], ["15m", "last 15 min"], ["1h", "last hour"]].map(([v, t]) => el("option", { value: v, selected: v === range }, t))),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const np = new URLSearchParams();
    const m = document.getElementById("match").value.trim();
    const r = document.getElementById("range").value;
    if (m) np.set("match", m.startsWith("{") || /^[a-zA-Z_:]/.test(m) ? m : "{" + m + "}");
    if (r) np.set("range", r);
    setParams(np);
  });
  let q = `api/v1/anomalies?points=true&limit=${limit}&offset=${offset}`;
  if (match) q += "&match[]=" + encodeURIComponent(match);
  if (range) q += "&range=" + encodeURIComponent(range);
  let data;
  try {
    data = await api(q);
  } catch (e) {
    main.replaceChildren(el("h1", {}, "Series"), form, el("p", { class: "bad" }, e.message));
    return;
  }
  const rows = data.series;
  const table = el("table", { id: "series" }, el("thead", {}, el("tr", {},
    el("th", {}, "series"), el("th", { class: "num" }, range ? "highest score" : "score"), el("th", {}, "why"),
    el("th", { class: "num" }, "value"), el("th", { class: "num" }, "expected [band]"), el("th", {}, "recent values"))));
  const body = el("tbody");
  for (const r of rows) {
    body.append(el("tr", { class: "series-row" },
      el("td", {}, seriesLink(r.labels)),
      scoreCell(r.score),
      el("td", { class: "reason" }, r.reason, el("div", { class: "muted" }, r.detector + ", " + ago(r.time))),
      valueCell(r),
      bandCell(r),
      el("td", {}, plot(r.points, 260, 44))));
  }
  table.append(body);
  const summary = el("p", { class: "muted", id: "summary" }, range
    ? `${data.series_total} series kept with samples in the ${range} before now, ${data.anomalous} of them scored 1 or more.`
    : `${data.anomalous} series anomalous now (score ≥ 1) of ${data.series_total} analysed` + (match ? " (the count is of those the selector matches)" : "") + ".");
  const pager = el("p", { class: "pager" });
  if (offset > 0) {
    const pp = new URLSearchParams(p); pp.set("offset", Math.max(0, offset - limit));
    pager.append(el("a", { href: "#/series?" + pp.toString() }, "← previous"), " ");
  }
  if (rows.length === limit && offset + limit < 1000) {
    const np = new URLSearchParams(p); np.set("offset", offset + limit);
    pager.append(el("a", { href: "#/series?" + np.toString() }, "next →"));
  }
  main.replaceChildren(el("h1", {}, "Most anomalous series"), form, summary,
    rows.length ? table : el("p", { id: "no-series" }, "No series."), pager, legend());
}

async function oneSeriesView(sel) {
  let d;
  try {
    d = await api("api/v1/detail?match[]=" + encodeURIComponent(sel));
  } catch (e) {
    main.replaceChildren(el("p", {}, el("a", { href: "#/series" }, "← series")), el("h1", {}, sel),
      el("p", { class: "muted", id: "no-series" }, "No live series with a verdict matches: " + e.message));
    return;
  }
  const row = d.series;
  const parts = [el("p", {}, el("a", { href: "#/series" }, "← series")), el("h1", {}, labelText(row.labels))];
  const per = row.per_second ? "/s" : "";
  parts.push(el("p", { id: "verdict" }, `Latest (${ago(row.time)}): value ${fmtNum(row.value)}${per}, expected ${fmtNum(row.expected)} ` +
    `[${fmtNum(row.lower)}, ${fmtNum(row.upper)}]${per}, score `, el("b", { class: "score " + (row.score >= 2 ? "bad" : row.score >= 1 ? "warn" : "ok") }, fmtNum(row.score)),
    `, driven by ${row.detector}: ${row.reason}.`));
  if (d.trend) {
    parts.push(el("p", { id: "trend" }, "Trend over its last " + d.trend.samples + " values: ",
      el("b", {}, d.trend.class), ` (slope ${fmtNum(d.trend.slope_per_second)} per second, noise ${fmtNum(d.trend.noise)} around a level of ${fmtNum(d.trend.level)}).`));
  }
  const det = d.detectors;
  if (det.per_detector && det.per_detector.length) {
    const t = el("table", { id: "detectors" }, el("thead", {}, el("tr", {}, el("th", {}, "detector"),
      el("th", { class: "num" }, "score"), el("th", { class: "num" }, "expected [band]"), el("th", {}, ""))));
    const b = el("tbody");
    for (const r of det.per_detector) {
      b.append(el("tr", { class: "detector-row" }, el("td", {}, r.detector),
        r.ready ? scoreCell(r.score) : el("td", { class: "num muted" }, "warming up"),
        bandCell({ ...r, per_second: row.per_second }),
        el("td", { class: "muted" }, r.drives ? "drives the combined score" : "")));
    }
    t.append(b);
    parts.push(el("h2", {}, "Each detector on the sample of " + fmtTime(det.time)), t);
  } else if (det.note) {
    parts.push(el("p", { class: "muted", id: "detectors-note" }, "Each detector's verdict: " + det.note + "."));
  }
  if (row.points && row.points.length) {
    parts.push(plot(row.points, 900, 260, { axes: true }), legend(),
      el("p", { class: "muted", id: "plot-note" }, (row.per_second ? "Plotted per second: the rate of change anomalyd analyses, not the raw value. " : "") +
        "The band starts where anomalyd began keeping the series: at its first score of 1 or more, " +
        "or when a list showed it. Before that, the values its detectors hold."));
  }
  if (d.group) {
    parts.push(el("h2", {}, "Most similar series of its group " + labelText(d.group)));
    if (d.similar.length) {
      const t = el("table", { id: "similar" }, el("thead", {}, el("tr", {}, el("th", {}, "series"),
        el("th", { class: "num" }, "correlation"), el("th", { class: "num" }, "common samples"))));
      const b = el("tbody");
      for (const s of d.similar) {
        b.append(el("tr", { class: "similar-row" }, el("td", {}, seriesLink(s.labels, d.group)),
          el("td", { class: "num" }, s.correlation.toFixed(2)), el("td", { class: "num" }, s.samples)));
      }
      t.append(b);
      parts.push(t);
    } else {
      parts.push(el("p", { class: "muted" }, `None of the ${d.group_series_compared} other series compared moves with it.`));
    }
  }
  main.replaceChildren(...parts);
}

async function route() {
  clearTimeout(timer);
  const h = location.hash || "#/";
  const path = h.slice(1).split("?")[0];
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", path.startsWith("/series") ? a.dataset.nav === "series" : a.dataset.nav === "incidents");
  }
  try {
    if (path.startsWith("/incident/")) await incidentView(decodeURIComponent(path.slice("/incident/".length)));
    else if (path.startsWith("/series/")) await oneSeriesView(decodeURIComponent(path.slice("/series/".length)));
    else if (path.startsWith("/series")) await seriesView();
    else await incidentsView();
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString(undefined, { hour12: false });
  } catch (e) {
    showError(e.message);
  }
  document.body.dataset.ready = "1";
  // Keep the view current, but not while the filter is being edited.
  timer = setTimeout(() => {
    if (document.activeElement && document.activeElement.id === "match") return;
    route();
  }, REFRESH_MS);
}

window.addEventListener("hashchange", route);
route();
