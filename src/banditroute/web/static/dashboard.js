// banditroute dashboard: vanilla JS + SVG, no dependencies. Polls the worker's JSON API every second.
// Every string from the API is inserted with textContent (task types and model names come from clients).
"use strict";

(function () {
  const POLL_MS = 1000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#ea580c", "#475569"];
  const colors = new Map();
  let polls = 0;

  function color(model) {
    if (!colors.has(model)) colors.set(model, PALETTE[colors.size % PALETTE.length]);
    return colors.get(model);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, String(v));
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const fmt = {
    int: (v) => (v === null || v === undefined ? "-" : Math.round(v).toLocaleString("en-US")),
    pct: (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%"),
    usd: (v) => (v === null || v === undefined ? "-" : "$" + (v >= 0.01 ? v.toFixed(4) : v.toPrecision(3))),
    num: (v, d = 3) => (v === null || v === undefined ? "-" : Number(v).toFixed(d)),
    time: (iso) => (iso ? iso.slice(11, 23) : "-"),
  };

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store" });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  // ---- header and tables ------------------------------------------------------------------------------------
  function renderHeader(state, stats, history) {
    document.getElementById("worker-id").textContent = stats.worker_id;
    const decided = document.getElementById("decided-count");
    decided.textContent = fmt.int(stats.decided);
    decided.dataset.value = String(stats.decided);
    const tp = history.throughput;
    const recent = tp.slice(-5);
    const rate = recent.length ? recent.reduce((s, p) => s + p.decisions, 0) / recent.length : 0;
    document.getElementById("decision-rate").textContent = rate.toFixed(1);
    document.getElementById("joined-count").textContent = fmt.int(stats.join.joined);
    document.getElementById("learned-count").textContent = fmt.int(stats.learned);
    const dead = Object.values(stats.dead_letters).reduce((a, b) => a + b, 0);
    document.getElementById("dead-count").textContent = fmt.int(dead);
    const lagTotal = stats.lag.sampled_at === null ? null : stats.lag.groups.reduce((s, g) => s + g.lag, 0);
    document.getElementById("lag-total").textContent = fmt.int(lagTotal);
  }

  function fillKV(table, rows) {
    table.replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
  }

  function renderTables(stats) {
    const j = stats.join;
    fillKV(document.getElementById("join-table"), [
      ["joined in time", fmt.int(j.joined)],
      ["late feedback (learnt)", fmt.int(j.late_feedback)],
      ["reward-wait timeouts", fmt.int(j.reward_timeouts)],
      ["duplicate feedback", fmt.int(j.duplicate_feedback)],
      ["model mismatch", fmt.int(j.model_mismatch)],
      ["unknown request", fmt.int(j.unknown_request)],
      ["outcomes learnt", fmt.int(stats.learned)],
      ["in flight (join table)", fmt.int(stats.join_in_flight)],
      ...Object.entries(stats.local_decisions_by_client || {}).map(([client, byModel]) => [
        "local-mode decisions: " + client,
        fmt.int(Object.values(byModel).reduce((a, b) => a + b, 0)),
      ]),
    ]);
    const dead = Object.entries(stats.dead_letters).filter(([, n]) => n > 0);
    fillKV(document.getElementById("dead-table"), dead.length ? dead.map(([k, n]) => ["dead letters: " + k, fmt.int(n)]) : [["dead letters", "0"]]);
    const lag = stats.lag.groups.map((g) => [g.group + " / " + g.topic.split(".").pop(), fmt.int(g.lag)]);
    fillKV(document.getElementById("lag-table"), lag.length ? lag : [["consumer lag", "sampling…"]]);
  }

  // ---- network diagram ----------------------------------------------------------------------------------------
  function renderNetwork(net) {
    const root = document.getElementById("network");
    const W = 900, H = 260, pad = 24;
    const columns = { source: 120, task: 430, model: 700 };
    const byKind = { source: [], task: [], model: [] };
    for (const n of net.nodes) (byKind[n.kind] || []).push(n);
    const pos = new Map();
    for (const [kind, list] of Object.entries(byKind)) {
      list.forEach((n, i) => pos.set(n.id, { x: columns[kind], y: pad + ((i + 0.5) * (H - 2 * pad)) / Math.max(list.length, 1) }));
    }
    const maxW = Math.max(1, ...net.edges.map((e) => e.weight));
    const children = [];
    for (const e of net.edges) {
      const a = pos.get(e.source), b = pos.get(e.target);
      if (!a || !b) continue;
      const mx = (a.x + b.x) / 2;
      const model = e.target.startsWith("model:") ? e.target.slice(6) : null;
      children.push(svg("path", {
        d: `M${a.x},${a.y} C${mx},${a.y} ${mx},${b.y} ${b.x},${b.y}`,
        fill: "none", stroke: model ? color(model) : "#94a3b8", "stroke-opacity": 0.55,
        "stroke-width": (1 + (18 * e.weight) / maxW).toFixed(2), class: "edge",
        "data-source": e.source, "data-target": e.target, "data-weight": e.weight,
      }));
    }
    for (const n of net.nodes) {
      const p = pos.get(n.id);
      const fill = n.kind === "model" ? color(n.label) : n.kind === "task" ? "#111827" : "#64748b";
      children.push(svg("circle", { cx: p.x, cy: p.y, r: 7, fill, class: "node", "data-id": n.id, "data-weight": n.weight }));
      const anchor = n.kind === "model" ? "start" : n.kind === "source" ? "end" : "middle";
      const dx = n.kind === "model" ? 12 : n.kind === "source" ? -12 : 0;
      const dy = n.kind === "task" ? -12 : 4;
      let label = n.label + " (" + fmt.int(n.weight) + ")";
      if (n.kind === "model" && n.lifecycle && n.lifecycle !== "active") label += " [" + n.lifecycle + "]";
      children.push(svg("text", { x: p.x + dx, y: p.y + dy, "text-anchor": anchor, style: "font-size:12px;fill:#1d2330" }, label));
    }
    root.setAttribute("viewBox", `0 0 ${W} ${H}`);
    root.replaceChildren(...children);
  }

  // ---- per task panels ---------------------------------------------------------------------------------------
  function panelFor(key, title) {
    const id = "task-" + encodeURIComponent(key).replace(/%/g, "_");
    let panel = document.getElementById(id);
    if (panel) return panel;
    panel = el("section", { class: "card wide task", id, "data-task": key });
    panel.append(
      el("h2", {}, "task type: ", el("span", { class: "task-name" }, title), el("small", { class: "task-meta" })),
      el("div", { class: "task-grid" },
        el("div", {}, el("h3", {}, "Traffic share over time"), svg("svg", { class: "share-chart", "data-testid": "share-chart", viewBox: "0 0 400 180" }), el("div", { class: "legend share-legend" })),
        el("div", {}, el("h3", {}, "Cost per request vs best single model"), svg("svg", { class: "cost-chart", "data-testid": "cost-chart", viewBox: "0 0 400 180" }), el("div", { class: "savings" })),
        el("div", {}, el("h3", {}, "Posterior quality (mean, 90% interval)"), svg("svg", { class: "posterior-chart", "data-testid": "posterior-chart", viewBox: "0 0 400 180" }), el("div", { class: "budget" })),
      ),
      el("table", { class: "grid models" }),
    );
    document.getElementById("tasks").append(panel);
    return panel;
  }

  function axes(root, W, H, m, yLabelTop, yLabelBottom) {
    root.append(svg("line", { x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b, class: "axis" }));
    root.append(svg("line", { x1: m.l, y1: m.t, x2: m.l, y2: H - m.b, class: "axis" }));
    root.append(svg("text", { x: m.l - 4, y: m.t + 8, "text-anchor": "end" }, yLabelTop));
    root.append(svg("text", { x: m.l - 4, y: H - m.b, "text-anchor": "end" }, yLabelBottom));
  }

  function renderShare(panel, series) {
    const root = panel.querySelector(".share-chart");
    const W = 400, H = 180, m = { l: 34, r: 8, t: 8, b: 18 };
    root.replaceChildren();
    const points = series ? series.points : [];
    const models = series ? series.models : [];
    root.dataset.points = String(points.length);
    axes(root, W, H, m, "100%", "0%");
    if (points.length < 1) return;
    const n = points.length;
    const x = (i) => m.l + ((W - m.l - m.r) * (n === 1 ? 1 : i / (n - 1)));
    const y = (v) => H - m.b - (H - m.t - m.b) * v;
    // Smooth over 5 samples so one-second quantisation does not dominate the picture.
    const shares = points.map((_, i) => {
      const win = points.slice(Math.max(0, i - 4), i + 1);
      const tot = {}; let all = 0;
      for (const p of win) for (const [mod, c] of Object.entries(p.counts)) { tot[mod] = (tot[mod] || 0) + c; all += c; }
      const out = {};
      for (const mod of models) out[mod] = all ? (tot[mod] || 0) / all : 0;
      return out;
    });
    const base = new Array(n).fill(0);
    for (const mod of models) {
      const lower = base.slice();
      const upper = base.map((b, i) => b + shares[i][mod]);
      let d = "M" + x(0) + "," + y(upper[0]);
      for (let i = 1; i < n; i++) d += " L" + x(i).toFixed(1) + "," + y(upper[i]).toFixed(1);
      for (let i = n - 1; i >= 0; i--) d += " L" + x(i).toFixed(1) + "," + y(lower[i]).toFixed(1);
      root.append(svg("path", { d: d + " Z", fill: color(mod), "fill-opacity": 0.8, class: "area", "data-model": mod, "data-share": shares[n - 1][mod].toFixed(4) }));
      for (let i = 0; i < n; i++) base[i] = upper[i];
    }
    const secs = Math.round(points[n - 1].t - points[0].t);
    root.append(svg("text", { x: W - m.r, y: H - 4, "text-anchor": "end" }, "last " + secs + " s"));
    const legend = panel.querySelector(".share-legend");
    legend.replaceChildren(...models.map((mod) => el("span", {}, el("span", { class: "swatch", style: "background:" + color(mod) }), mod + " " + fmt.pct(shares[n - 1][mod]))));
  }

  function line(root, pts, stroke, cls, dash) {
    if (pts.length < 1) return;
    const d = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
    root.append(svg("path", { d, fill: "none", stroke, "stroke-width": 2, class: cls, "stroke-dasharray": dash || null, "data-n": pts.length }));
  }

  function renderCost(panel, series) {
    const root = panel.querySelector(".cost-chart");
    const W = 400, H = 180, m = { l: 48, r: 8, t: 8, b: 18 };
    root.replaceChildren();
    const points = series ? series.points.filter((p) => p.cost_per_request !== null && p.best_cost !== undefined) : [];
    root.dataset.points = String(points.length);
    const top = Math.max(1e-9, ...points.map((p) => Math.max(p.cost_per_request, p.best_cost))) * 1.1;
    axes(root, W, H, m, fmt.usd(top), "$0");
    const n = points.length;
    const x = (i) => m.l + ((W - m.l - m.r) * (n <= 1 ? 1 : i / (n - 1)));
    const yc = (v) => H - m.b - ((H - m.t - m.b) * v) / top;
    const yq = (v) => H - m.b - (H - m.t - m.b) * v;
    line(root, points.map((p, i) => [x(i), yc(p.best_cost)]), "#94a3b8", "best-cost", "5,3");
    line(root, points.map((p, i) => [x(i), yc(p.cost_per_request)]), "#2563eb", "routed-cost");
    line(root, points.map((p, i) => [x(i), yq(p.best_quality)]), "#fca5a5", "best-quality", "5,3");
    line(root, points.map((p, i) => [x(i), yq(p.quality)]), "#dc2626", "routed-quality");
    root.append(svg("text", { x: W - m.r, y: m.t + 8, "text-anchor": "end" }, "blue: cost/request · red: quality (0–1) · dashed: best single"));
    const s = series ? series.summary : null;
    const box = panel.querySelector(".savings");
    box.dataset.savings = s && s.savings !== undefined && s.savings !== null ? s.savings.toFixed(4) : "";
    if (!s || !s.requests) { box.replaceChildren("no decisions yet"); return; }
    const best = points.length ? points[points.length - 1].best_model : "-";
    const cheaper = s.savings >= 0;
    box.replaceChildren(
      el("b", {}, fmt.pct(Math.abs(s.savings))), cheaper ? " cheaper than always using " : " more expensive than always using ", el("b", {}, best),
      " · cost/request " + fmt.usd(s.cost_per_request) + " vs " + fmt.usd(s.best_cost_per_request),
      " · quality " + fmt.num(s.quality) + " vs " + fmt.num(s.best_quality),
      " (model-based, " + fmt.int(s.requests) + " requests)",
    );
  }

  function renderPosterior(panel, task) {
    const root = panel.querySelector(".posterior-chart");
    const W = 400, H = 180, m = { l: 90, r: 14, t: 8, b: 18 };
    root.replaceChildren();
    const rows = task.models;
    const band = (H - m.t - m.b) / Math.max(rows.length, 1);
    const x = (v) => m.l + (W - m.l - m.r) * v;
    for (const t of [0, 0.25, 0.5, 0.75, 1]) {
      root.append(svg("line", { x1: x(t), y1: m.t, x2: x(t), y2: H - m.b, class: "axis" }));
      root.append(svg("text", { x: x(t), y: H - 4, "text-anchor": "middle" }, t.toFixed(2)));
    }
    rows.forEach((r, i) => {
      const cy = m.t + band * (i + 0.5);
      const c = color(r.model);
      root.append(svg("text", { x: m.l - 6, y: cy + 3, "text-anchor": "end", style: "font-size:11px;fill:#1d2330" }, r.model));
      if (r.quality_low !== null && r.quality_high !== null) {
        root.append(svg("line", { x1: x(r.quality_low), y1: cy, x2: x(r.quality_high), y2: cy, stroke: c, "stroke-width": 6, "stroke-opacity": 0.35, "stroke-linecap": "round", class: "interval", "data-model": r.model }));
      }
      if (r.quality_mean !== null) {
        root.append(svg("circle", { cx: x(r.quality_mean), cy, r: 5, fill: c, class: "posterior-mean", "data-model": r.model, "data-mean": r.quality_mean.toFixed(4), "data-observations": r.observations }));
      }
      if (r.circuit !== "closed") root.append(svg("text", { x: W - m.r, y: cy - 6, "text-anchor": "end", style: "fill:#dc2626" }, "circuit " + r.circuit));
    });
    const b = task.budget;
    const box = panel.querySelector(".budget");
    const parts = [el("div", {}, "objective " + b.objective + (b.objective === "budget" ? " · dual λ " + fmt.num(b.dual) : " · λ " + fmt.num(b.lam, 1)) +
      " · spend " + fmt.usd(b.spend_rate_usd_per_min) + "/min · mean " + fmt.usd(b.mean_cost_usd) + "/call")];
    const limits = [[b.spend_rate_usd_per_min, b.budget_usd_per_min, "/min"], [b.mean_cost_usd, b.budget_mean_cost_usd, "/call"]];
    for (const [used, limit, unit] of limits) {
      if (limit === null || limit === undefined) continue;
      const ratio = (used || 0) / limit;
      const bar = el("div", { class: ratio > 1 ? "over" : "", style: "width:" + Math.min(100, 100 * ratio).toFixed(1) + "%" });
      parts.push(el("div", {}, "budget " + fmt.usd(limit) + unit + ": " + fmt.pct(ratio) + " used"), el("div", { class: "budget-bar" }, bar));
    }
    box.replaceChildren(...parts);
  }

  function renderModelTable(panel, task) {
    const table = panel.querySelector("table.models");
    const head = el("tr", {}, ...["model", "decisions", "observations", "quality", "90% interval", "cost/call", "latency", "circuit", "lifecycle"].map((h) => el("th", {}, h)));
    const rows = task.models.map((r) =>
      el("tr", { "data-model": r.model },
        el("td", {}, el("span", { class: "swatch", style: "background:" + color(r.model) }), " " + r.model + (r.model === task.best_single ? " ★" : "")),
        el("td", { class: "num" }, fmt.int(r.decisions)),
        el("td", { class: "num" }, fmt.int(r.observations)),
        el("td", { class: "num" }, fmt.num(r.quality_mean)),
        el("td", { class: "num" }, fmt.num(r.quality_low) + " – " + fmt.num(r.quality_high)),
        el("td", { class: "num" }, fmt.usd(r.mean_cost_usd)),
        el("td", { class: "num" }, fmt.int(r.mean_latency_ms) + " ms"),
        el("td", {}, el("span", { class: "badge circuit " + r.circuit }, r.circuit)),
        el("td", {}, el("span", { class: "badge canary " + r.canary }, r.lifecycle === "canary" ? "canary: " + r.canary : r.canary)),
      ));
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  }

  function renderTasks(state, history) {
    const keep = new Set();
    for (const task of state.tasks) {
      const panel = panelFor(task.key, task.key === task.task_type ? task.task_type : task.key);
      keep.add(panel.id);
      panel.querySelector(".task-meta").textContent = "state v" + task.version + " · " + fmt.int(task.events) + " outcomes";
      const series = history.tasks[task.task_type];
      renderShare(panel, series);
      renderCost(panel, series);
      renderPosterior(panel, task);
      renderModelTable(panel, task);
    }
    for (const panel of Array.from(document.querySelectorAll("#tasks > .task"))) if (!keep.has(panel.id)) panel.remove();
  }

  function reasonText(d) {
    const r = d.reasons || {};
    const parts = [];
    if (r.exploration) parts.push("exploration");
    if (r.no_eligible) parts.push("no eligible: " + r.no_eligible);
    if (r.circuit_open && r.circuit_open.length) parts.push("circuit open: " + r.circuit_open.join(", "));
    const filtered = Object.entries(r.filtered || {});
    if (filtered.length) parts.push("filtered: " + filtered.map(([k, v]) => k + "=" + v).join(", "));
    if (r.rules && r.rules.length) parts.push("rules: " + r.rules.join(", "));
    return parts.length ? parts.join("; ") : "best sampled utility";
  }

  function renderDecisions(data) {
    const body = document.querySelector("#decisions tbody");
    body.replaceChildren(...data.decisions.slice(0, 25).map((d) =>
      el("tr", { "data-request": d.request_id },
        el("td", {}, fmt.time(d.decided_at)),
        el("td", {}, d.task_type),
        el("td", {}, el("span", { class: "swatch", style: "background:" + color(d.model || "-") }), " " + (d.model || "none")),
        el("td", { class: "num" }, fmt.num(d.propensity, 2)),
        el("td", { class: "num" }, fmt.num(d.decision_ms, 2)),
        el("td", {}, reasonText(d)),
        el("td", {}, (d.candidates || []).slice(0, 3).map((c) => c.model + " " + fmt.num(c.sampled_utility)).join(" · ")),
      )));
  }

  // ---- loop ---------------------------------------------------------------------------------------------------
  async function poll() {
    const status = document.getElementById("status");
    try {
      const [state, history, stats, decisions, network] = await Promise.all([
        getJSON("/api/state"), getJSON("/api/history?last=120"), getJSON("/api/stats"),
        getJSON("/api/decisions?limit=25"), getJSON("/api/network"),
      ]);
      for (const mod of state.models) color(mod.model);
      renderHeader(state, stats, history);
      renderTables(stats);
      renderNetwork(network);
      renderTasks(state, history);
      renderDecisions(decisions);
      polls += 1;
      status.dataset.polls = String(polls);
      status.className = "status";
      status.textContent = "live · updated " + new Date().toLocaleTimeString();
    } catch (err) {
      status.className = "status down";
      status.textContent = "disconnected: " + err.message;
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
