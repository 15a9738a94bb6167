// The run viewer's page: draws the JSON of <script id="ttd-data"> (see ttd_agent/view/payload.py) with
// Plotly, and when its data-poll-ms is set, polls version.json and reloads data.json when the run changed.
"use strict";

(function () {
  const PLOT_CONFIG = {displaylogo: false, responsive: true};  // the mode bar stands upright at the right (layout.modebar), clear of the titles
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
  const OUTCOME_NAMES = ["valid", "unchanged", "timed out", "crashed", "invalid"];
  const OUTCOME_COLORS = ["#2ca02c", "#98df8a", "#ff7f0e", "#d62728", "#7f7f7f"];
  const view = {data: null, state: null, pinned: false, step: null, renders: 0};
  // view.state is the state shown; pinned: the user chose it (a click, a link, #state=...), so a redraw
  // keeps it; otherwise a live page follows the run's best state as the run finds better ones.
  const INTEGER = new Intl.NumberFormat("en");  // one formatter: toLocaleString builds one per call

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "n/a";
    if (typeof value !== "number") return String(value);
    return Number.isInteger(value) && Math.abs(value) < 1e15 ? INTEGER.format(value) : value.toPrecision(digits || 6);
  }

  function layout(title, xTitle, yTitle, extra) {
    return Object.assign({
      title: {text: title, font: {size: 14}, x: 0.01, xanchor: "left"}, margin: {l: 60, r: 20, t: 40, b: 45}, height: 320,
      xaxis: {title: {text: xTitle}}, yaxis: {title: {text: yTitle}},
      legend: {orientation: "h", y: -0.25, font: {size: 11}}, hovermode: "closest", modebar: {orientation: "v"},
    }, extra || {});
  }

  function plot(id, traces, plotLayout) {
    const node = document.getElementById(id);
    if (node) Plotly.react(node, traces, plotLayout, PLOT_CONFIG);
    return node;
  }

  function section(title, ...children) {
    return el("section", {}, el("h2", {}, title), ...children);
  }

  function plotDiv(id, wide) {
    return el("div", {id: id, class: wide ? "plot wide" : "plot"});
  }

  // -- header ---------------------------------------------------------------------------------------
  function header(data) {
    const status = data.finished ? "finished" : (data.steps_done ? "unfinished or still training" : "no step yet");
    const steps = data.steps_total ? `step ${data.steps_done} of ${data.steps_total}` : `step ${data.steps_done}`;
    const cfg = data.config || {};
    const setup = Object.entries(cfg).filter(([k]) => k !== "env").map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`);
    const notes = (data.notes || []).map((note) => el("li", {}, note));
    return el("header", {},
      el("h1", {}, data.env || "a run without config.json"),
      el("p", {class: "status"}, `${steps} · ${status} · ${data.run_dir}`, el("span", {id: "live"})),
      el("p", {class: "setup"}, setup.join(" · ")),
      notes.length ? el("ul", {class: "notes", id: "notes"}, ...notes) : null);
  }

  // A record's holder can be a whole citation: its card shows the part before the first ";" (the rest on hover).
  function shortHolder(holder) {
    const head = String(holder).split(";")[0];
    return head.length > 60 ? `${head.slice(0, 57)}...` : head;
  }

  function cards(items) {
    return el("div", {class: "cards"}, ...items.map(([label, value]) => el("div", {class: "card"},
      el("div", {class: "label"}, label), el("div", {class: "value"}, value))));
  }

  // -- discovery --------------------------------------------------------------------------------------
  function renderDiscovery(root, data) {
    const c = data.curves;
    const last = (xs) => (xs && xs.length ? xs[xs.length - 1] : null);
    const best = data.best || {};
    const record = data.record;
    root.append(cards([
      ["best reward", fmt(last(c.best_reward))], ["its score", fmt(best.score)],
      ["record", record ? el("span", {title: record.holder}, `${fmt(record.score)} (${shortHolder(record.holder)})`) : "none"],
      ["samples", fmt(last(c.samples))], ["wall time", c.wall_s ? `${fmt(last(c.wall_s), 4)} s` : "n/a"],
      ["tokens out", c.tokens_out ? fmt(last(c.tokens_out)) : "not reported"],
    ]));
    root.append(section("Best so far", el("div", {class: "row"}, plotDiv("plot-samples"), plotDiv("plot-wall"), plotDiv("plot-tokens"))));
    root.append(section("State tree", el("p", {class: "hint"}, "Each point is a state kept by the run (x: step found, y: reward); lines join a state to its parent. Click one to see its program and its diff against its parent."),
      el("div", {class: "row"}, plotDiv("plot-tree", true)), el("div", {id: "state", class: "state"})));
    root.append(section("Per step", el("label", {class: "stepper"}, "step ", el("input", {type: "range", id: "step-range", min: "0", max: String(Math.max(0, data.steps.length - 1)), value: "0"}), el("span", {id: "step-label"})),
      el("div", {class: "row"}, plotDiv("plot-groups"), plotDiv("plot-weights")),
      el("div", {class: "row"}, plotDiv("plot-outcomes"), plotDiv("plot-beta")),
      el("div", {class: "row"}, el("div", {id: "errors", class: "errors"}))));
    root.append(section("Best construction", el("div", {id: "drawing"})));
    root.append(section("Cost", el("div", {id: "cost"}), el("div", {class: "row"}, plotDiv("plot-phases"), plotDiv("plot-cost"))));

    drawProgress(data);
    drawTree(data);
    return [["per-step plots", () => {
      const range = document.getElementById("step-range");
      const stepIndex = data.steps.findIndex((s) => s.step === view.step);
      range.value = String(stepIndex >= 0 ? stepIndex : data.steps.length - 1);
      range.addEventListener("input", () => drawStep(data, Number(range.value)));
      drawStep(data, Number(range.value));
    }], ["plots over steps", () => drawOverSteps(data)], ["best construction", () => drawBest(data)],
    ["cost", () => drawCost(data)]];
  }

  function bestTraces(data, xKey) {
    const c = data.curves;
    const traces = [];
    const xs = c[xKey];
    if (xs) traces.push({x: xs, y: c.best_reward, name: "this run", mode: "lines+markers", line: {shape: "hv"}, marker: {size: 4}});
    return traces;
  }

  function recordShape(data) {
    const r = data.record && data.record.reward;
    return r === null || r === undefined ? [] : [{type: "line", xref: "paper", x0: 0, x1: 1, y0: r, y1: r, line: {dash: "dash", color: "black", width: 1}}];
  }

  function drawProgress(data) {
    const shapes = recordShape(data);
    const note = shapes.length ? {annotations: [{xref: "paper", x: 0, y: data.record.reward, text: "record", showarrow: false, yanchor: "bottom", xanchor: "left", font: {size: 10}}]} : {};
    const traces = bestTraces(data, "samples");
    Object.entries(data.baselines || {}).forEach(([name, curve], i) => traces.push({
      x: curve.samples, y: curve.reward, name: `${name} (same evaluations)`, mode: "lines", line: {shape: "hv", dash: "dot", color: COLORS[i + 2]},
    }));
    plot("plot-samples", traces, layout("best reward vs samples", "samples", "best reward", Object.assign({shapes: shapes}, note)));
    plot("plot-wall", bestTraces(data, "wall_s"), layout("best reward vs wall time", "seconds", "best reward", {shapes: shapes}));
    const tokenTitle = data.curves.tokens_in ? "best reward vs tokens (in + out)" : "best reward vs tokens out";
    const c = data.curves;
    const tokens = c.tokens_out && c.tokens_in ? c.tokens_out.map((t, i) => t + c.tokens_in[i]) : c.tokens_out;
    if (tokens) plot("plot-tokens", [{x: tokens, y: c.best_reward, name: "this run", mode: "lines+markers", line: {shape: "hv"}, marker: {size: 4}}],
      layout(tokenTitle, "tokens", "best reward", {shapes: shapes}));
    else document.getElementById("plot-tokens").replaceChildren(el("p", {class: "hint"}, "best reward vs tokens: this run logged no token counts (see the notes)"));
  }

  // -- the tree ---------------------------------------------------------------------------------------
  function drawTree(data) {
    const nodes = data.tree.nodes;
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const ex = [], ey = [];
    for (const n of nodes) {
      const p = n.parent && byId.get(n.parent);
      if (p) { ex.push(p.step, n.step, null); ey.push(p.reward, n.reward, null); }
    }
    const initial = nodes.filter((n) => n.initial), kept = nodes.filter((n) => !n.initial);
    const point = (list, name, color, symbol) => ({
      x: list.map((n) => n.step), y: list.map((n) => n.reward), customdata: list.map((n) => n.id), name: name,
      mode: "markers", type: "scatter", marker: {color: color, size: 7, symbol: symbol, line: {width: 0.5, color: "#333"}},
      text: list.map((n) => `score ${fmt(n.score)}<br>visits ${fmt(n.visits)}<br>PUCT ${fmt(n.puct)}`),
      hovertemplate: "step %{x}<br>reward %{y}<br>%{text}<extra></extra>",
    });
    const traces = [
      {x: ex, y: ey, mode: "lines", type: "scatter", name: "parent → child", line: {color: "#bbb", width: 1}, hoverinfo: "skip"},
      point(initial, "initial states", "#7f7f7f", "square"), point(kept, "states found", COLORS[0], "circle"),
    ];
    const div = plot("plot-tree", traces, layout(`${nodes.length} states`, "step found", "reward", {height: 380}));
    if (div && !div.dataset.bound) {
      div.dataset.bound = "1";
      div.on("plotly_click", (event) => {
        const id = event.points && event.points[0] && event.points[0].customdata;
        if (id) { view.pinned = true; selectState(view.data, id); }
      });
    }
    const wanted = view.pinned && byId.has(view.state) ? view.state : (data.best && byId.has(data.best.id) ? data.best.id :
      (nodes.length ? nodes.reduce((a, b) => ((b.reward ?? -Infinity) > (a.reward ?? -Infinity) ? b : a)).id : null));
    selectState(data, wanted);
  }

  function selectState(data, id) {
    const panel = document.getElementById("state");
    if (!panel) return;
    panel.replaceChildren();
    const byId = new Map(data.tree.nodes.map((n) => [n.id, n]));
    const node = byId.get(id);
    if (!node) { panel.append(el("p", {class: "hint"}, "no state to show yet")); return; }
    view.state = id;
    const parent = node.parent ? byId.get(node.parent) : null;
    const link = (target) => el("a", {href: `#state=${target}`, onclick: (e) => { e.preventDefault(); view.pinned = true; selectState(data, target); }}, target);
    panel.append(el("h3", {}, `state ${node.id}`), el("table", {class: "meta"},
      ...[["step found", fmt(node.step)], ["reward", fmt(node.reward)], ["score", fmt(node.score)],
        ["visits", node.in_buffer ? fmt(node.visits) : "not in the latest checkpoint's buffer"],
        ["PUCT value", node.in_buffer ? fmt(node.puct) : "n/a"],
        ["parent", node.parent ? (parent ? link(node.parent) : `${node.parent} (not kept)`) : "none (an initial state)"],
      ].map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
    const text = data.tree.texts[id] || {};
    const key = text.code !== null && text.code !== undefined ? "code" : "construction";
    const kind = key === "code" ? "program" : "construction";
    const body = text[key];
    const shown = body === null || body === undefined ? "(none stored)" : (body === "" ? "(empty)" : body);
    panel.append(el("h4", {}, kind), el("pre", {class: "code", id: "state-text"}, shown));
    panel.append(el("h4", {}, "diff against its parent"));
    const parentText = node.parent ? data.tree.texts[node.parent] : null;
    const before = parentText ? parentText[key] : null;
    const hint = (message) => panel.append(el("p", {class: "hint", id: "diff"}, message));
    if (!node.parent) hint("an initial state: nothing to compare with");
    else if (!parentText) hint("the parent is not in the run directory (states.jsonl lacks it): nothing to compare with");
    else if (before === null || before === undefined) hint(`the parent has no ${kind} stored: nothing to compare with`);
    else panel.append(diffView(before, body || ""));
  }

  function diffView(before, after) {
    const pre = el("pre", {class: "diff", id: "diff"});
    const a = before.split("\n"), b = after.split("\n");
    if (a.length === 1 && b.length === 1 && a[0].length === b[0].length) { // one line of equal length: a character diff
      let changed = 0;
      for (let i = 0; i < b[0].length; i++) {
        const same = a[0][i] === b[0][i];
        if (!same) changed++;
        pre.append(same ? b[0][i] : el("span", {class: "chg", title: `was ${a[0][i]}`}, b[0][i]));
      }
      pre.prepend(el("div", {class: "hint"}, `${changed} of ${b[0].length} characters changed (highlighted)`));
      return pre;
    }
    if (a.length * b.length > 4e6) { pre.append(`${a.length.toLocaleString("en")} and ${b.length.toLocaleString("en")} lines: too long for a line diff`); return pre; }
    const n = a.length, m = b.length, lcs = [];
    for (let i = 0; i <= n; i++) lcs.push(new Int32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    let i = 0, j = 0;
    const line = (cls, sign, t) => pre.append(el("span", {class: cls}, `${sign} ${t}\n`));
    while (i < n || j < m) {
      if (i < n && j < m && a[i] === b[j]) { line("same", " ", a[i]); i++; j++; }
      else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) { line("add", "+", b[j]); j++; }
      else { line("del", "-", a[i]); i++; }
    }
    return pre;
  }

  // -- per step ---------------------------------------------------------------------------------------
  function drawStep(data, index) {
    const step = data.steps[index];
    const label = document.getElementById("step-label");
    if (!step) { if (label) label.textContent = "no step logged yet"; plot("plot-groups", [], layout("rewards per group", "group", "reward")); plot("plot-weights", [], layout("weights", "reward", "advantage")); return; }
    view.step = step.step;
    label.textContent = ` ${step.step} (${step.rewards.length} groups)`;
    const groups = step.rewards.map((rewards, g) => ({y: rewards, type: "box", name: `g${g}`, boxpoints: "all", jitter: 0.4, pointpos: 0, marker: {size: 3, color: COLORS[g % COLORS.length]}, line: {width: 1}}));
    plot("plot-groups", groups, layout(`step ${step.step}: reward distribution of each group`, "group", "reward", {showlegend: false}));
    const weights = step.rewards.map((rewards, g) => {
      const pts = rewards.map((r, k) => [r, step.advantages[g][k]]).filter((p) => p[1] !== null);
      const beta = step.betas[g];
      return {x: pts.map((p) => p[0]), y: pts.map((p) => p[1]), mode: "markers", type: "scatter", name: `g${g} β=${beta === null || beta === undefined ? "n/a" : fmt(beta, 3)}`, marker: {size: 5, color: COLORS[g % COLORS.length]}};
    });
    plot("plot-weights", weights, layout(`step ${step.step}: the weight (advantage) each answer got, β per group`, "reward", "advantage"));
    const errors = document.getElementById("errors");
    const table = (title, rows) => el("div", {}, el("h4", {}, title), rows.length ? el("table", {class: "meta"},
      ...rows.map(([msg, count]) => el("tr", {}, el("td", {class: "count"}, `${count}×`), el("td", {}, msg)))) : el("p", {class: "hint"}, "no failed answers"));
    const overall = new Map();
    for (const s of data.steps) for (const [msg, count] of s.errors) overall.set(msg, (overall.get(msg) || 0) + count);
    const top = [...overall.entries()].sort((x, y) => y[1] - x[1]).slice(0, 5);
    errors.replaceChildren(table(`most common errors at step ${step.step}`, step.errors), table("most common errors over the run", top));
  }

  function drawOverSteps(data) {
    const steps = data.steps.map((s) => s.step);
    const totals = data.steps.map((s) => s.outcomes.reduce((a, b) => a + b, 0) || 1);
    const shares = OUTCOME_NAMES.map((name, k) => ({x: steps, y: data.steps.map((s, i) => s.outcomes[k] / totals[i]), name: name, type: "bar", marker: {color: OUTCOME_COLORS[k]}}));
    plot("plot-outcomes", shares, layout("share of answers by outcome", "step", "share", {barmode: "stack", yaxis: {range: [0, 1], title: {text: "share"}}}));
    const bx = [], by = [];
    data.steps.forEach((s) => s.betas.forEach((b) => { if (b !== null) { bx.push(s.step); by.push(b); } }));
    const c = data.curves;
    const traces = [{x: bx, y: by, mode: "markers", type: "scatter", name: "β of a group", marker: {size: 4, color: COLORS[4]}}];
    if (c.beta_mean.some((b) => b !== null)) traces.push({x: c.step, y: c.beta_mean, mode: "lines", name: "mean β", line: {color: COLORS[3]}});
    plot("plot-beta", traces, layout("adaptive β by step", "step", "β"));
  }

  // -- best construction --------------------------------------------------------------------------------
  function drawBest(data) {
    const box = document.getElementById("drawing");
    const best = data.best;
    if (!best) { box.append(el("p", {class: "hint"}, "no best state yet")); return; }
    box.append(el("p", {}, `state ${best.id}, reward ${fmt(best.reward)}, score ${fmt(best.score)}, found by step ${fmt(best.step)} after ${fmt(best.samples)} samples`));
    const d = best.drawing;
    if (d && d.kind === "circles") {
      box.append(plotDiv("plot-drawing", true));
      const [x0, y0, x1, y1] = d.box;
      const shapes = [{type: "rect", x0: x0, y0: y0, x1: x1, y1: y1, line: {color: "black"}}].concat(d.circles.map(([x, y, r]) => ({
        type: "circle", x0: x - r, x1: x + r, y0: y - r, y1: y + r, line: {color: COLORS[0]}, fillcolor: "rgba(31,119,180,0.25)"})));
      plot("plot-drawing", [{x: d.circles.map((q) => q[0]), y: d.circles.map((q) => q[1]), mode: "markers", marker: {size: 3, color: "#333"}, name: "centres"}],
        layout(d.title, "x", "y", {shapes: shapes, height: 460, width: 460, xaxis: {range: [x0, x1], constrain: "domain"}, yaxis: {range: [y0, y1], scaleanchor: "x"}}));
    } else if (d && d.kind === "series") {
      box.append(plotDiv("plot-drawing", true));
      plot("plot-drawing", d.series.map((s, i) => s.shape === "bar" ? {x: s.x, y: s.y, type: "bar", name: s.name, marker: {color: COLORS[i]}} :
        {x: s.x, y: s.y, mode: "lines", name: s.name, line: {shape: s.shape === "step" ? "hv" : "linear", color: COLORS[i]}}), layout(d.title, d.x_label, d.y_label));
    } else if (d && d.kind === "plane") {
      box.append(plotDiv("plot-drawing", true));
      drawPlane(d);
    } else if (best.drawing_pending) {
      box.append(el("p", {class: "hint", id: "drawing-note"}, "drawing... (running this program on test 0, as the judge does; the page redraws when it is done)"));
    } else if (best.drawing_note) {
      box.append(el("p", {class: "hint", id: "drawing-note"}, best.drawing_note));
    } else {
      box.append(el("p", {class: "hint"}, "this problem has no drawing: its construction as text"));
    }
    if (d && d.caption) box.append(el("p", {class: "hint", id: "drawing-caption"}, d.caption));
    const text = best.code || best.construction;
    if (text) box.append(el("pre", {class: "code"}, text));
  }

  // Point sets as markers and closed paths as filled outlines, at equal scale in the drawing's box.
  function drawPlane(d) {
    const [x0, y0, x1, y1] = d.box;
    const traces = d.points.map((p, i) => ({x: p.x, y: p.y, name: p.name, mode: "markers", type: "scatter", hoverinfo: "skip",
      marker: {size: 3, color: COLORS[i % COLORS.length], opacity: 0.6}}));
    d.paths.forEach((p, i) => traces.push({x: p.x.concat(p.x.slice(0, 1)), y: p.y.concat(p.y.slice(0, 1)), name: p.name,
      mode: "lines", type: "scatter", fill: "toself", fillcolor: "rgba(0,0,0,0.06)", line: {color: i ? COLORS[(i + 3) % COLORS.length] : "black", width: 2}}));
    plot("plot-drawing", traces, layout(d.title, "x", "y", {shapes: [{type: "rect", x0: x0, y0: y0, x1: x1, y1: y1, line: {color: "#999", width: 1}}],
      height: 560, width: 600, xaxis: {range: [x0, x1], constrain: "domain"}, yaxis: {range: [y0, y1], scaleanchor: "x"}}));
  }

  // -- cost ---------------------------------------------------------------------------------------------
  function money(data) {
    const c = data.curves, p = data.prices || {};
    if (p.input === null && p.output === null && p.gpu_hour === null) return null;
    return c.samples.map((_, i) => ((c.tokens_in && p.input ? c.tokens_in[i] * p.input : 0) + (c.tokens_out && p.output ? c.tokens_out[i] * p.output : 0)) / 1e6
      + (c.gpu_s && p.gpu_hour ? c.gpu_s[i] / 3600 * p.gpu_hour : 0));
  }

  function drawCost(data) {
    const c = data.curves;
    const last = (xs) => (xs && xs.length ? xs[xs.length - 1] : null);
    const sum = (xs) => (xs ? xs.reduce((a, b) => a + (b || 0), 0) : null);
    const usd = money(data);
    const rows = [
      ["tokens in", c.tokens_in ? fmt(last(c.tokens_in)) : (c.tokens_out ? "not logged by this run" : "not reported by the server")],
      ["tokens out", c.tokens_out ? fmt(last(c.tokens_out)) : "not reported by the server"],
      ["wall seconds: sampling / evaluation / update", [sum(c.time_sample_s), sum(c.time_eval_s), sum(c.time_update_s)].map((v) => fmt(v, 4)).join(" / ")],
      ["CPU seconds: sampling + evaluation / update", c.cpu_update_s ? `${fmt(last(c.cpu_sample_eval_s), 4)} / ${fmt(last(c.cpu_update_s), 4)}` : "not logged by this run"],
      ["GPU seconds (sampling + update)", c.gpu_s ? fmt(last(c.gpu_s), 4) : "0 (a CPU run)"],
      ["money", usd ? `$${last(usd).toFixed(4)}` : "pass --usd-per-m-input / --usd-per-m-output / --usd-per-gpu-hour to price the run"],
    ];
    document.getElementById("cost").append(el("table", {class: "meta", id: "cost-table"}, ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
    plot("plot-phases", [["sampling", c.time_sample_s], ["evaluation", c.time_eval_s], ["update", c.time_update_s]].map(([name, ys], k) => ({x: c.step, y: ys, name: name, type: "bar", marker: {color: COLORS[k]}})),
      layout("wall seconds per step by phase", "step", "seconds", {barmode: "stack"}));
    const x = usd || c.tokens_out || c.wall_s;
    const xTitle = usd ? "US dollars" : (c.tokens_out ? "tokens out" : "wall seconds");
    plot("plot-cost", x ? [{x: x, y: c.best_reward, mode: "lines+markers", line: {shape: "hv"}, marker: {size: 4}, name: "this run"}] : [],
      layout("improvement against cost", xTitle, "best reward", {shapes: recordShape(data)}));
  }

  // -- TTRL ----------------------------------------------------------------------------------------------
  function renderTTRL(root, data) {
    const t = data.ttrl;
    const last = (xs) => (xs && xs.length ? xs[xs.length - 1] : null);
    root.append(cards([["steps", fmt(last(t.step))], ["majority ratio", fmt(last(t.majority_ratio), 3)],
      ["label accuracy", fmt(last(t.label_accuracy), 3)], [`eval maj@${t.n || "n"}`, fmt(last(t.maj_at_n), 3)],
      ["wall time", t.wall_s ? `${fmt(last(t.wall_s), 4)} s` : "n/a"]]));
    root.append(section("Accuracy", el("div", {class: "row"}, plotDiv("plot-ttrl-accuracy"), plotDiv("plot-ttrl-votes"))));
    const line = (x, y, name, extra) => Object.assign({x: x, y: y, name: name, mode: "lines+markers", marker: {size: 4}}, extra || {});
    plot("plot-ttrl-accuracy", [line(t.step, t.label_accuracy, "label accuracy (batch majority vs truth)"), line(t.step, t.ground_truth_ratio, "share of votes correct"),
      line(t.eval_step, t.avg_at_k, `eval avg@${t.k || "k"}`), line(t.eval_step, t.maj_at_n, `eval maj@${t.n || "n"}`)],
      layout("accuracy by step", "rollout step", "accuracy", {yaxis: {range: [-0.02, 1.02], title: {text: "accuracy"}}}));
    plot("plot-ttrl-votes", [line(t.step, t.majority_ratio, "majority agreement"), line(t.step, t.answer_rate, "answer rate"),
      line(t.step, t.vote_entropy, "vote entropy (nats, right)", {yaxis: "y2", line: {dash: "dash"}})],
      layout("majority agreement and vote entropy", "rollout step", "share", {yaxis: {range: [-0.02, 1.02], title: {text: "share"}}, yaxis2: {overlaying: "y", side: "right", title: {text: "nats"}}}));
  }

  // -- the page --------------------------------------------------------------------------------------------
  // Each part draws inside `guarded`: a part that fails (a run this script does not understand) shows
  // what went wrong in its place and logs it, and the rest of the page still draws.
  function guarded(root, name, draw) {
    try {
      draw();
    } catch (error) {
      console.error(`the ${name} could not be drawn:`, error);
      root.append(el("p", {class: "failed"}, `the ${name} could not be drawn: ${error && error.message ? error.message : error}`));
    }
  }

  // The first screen (header, cards, best-so-far curves, the state tree and the state it shows) is
  // drawn at once; the sections below it follow one per task, so the browser paints the first screen
  // without waiting for every plot. body.dataset: loadedMs when the first screen is drawn, drawnMs and
  // ready = "1" when every part is (a redraw of a live page sets ready back to "0" until it is done).
  function render(data) {
    const token = ++view.renders;
    view.data = data;
    document.body.dataset.ready = "0";
    const root = document.getElementById("app");
    root.replaceChildren();
    guarded(root, "header", () => root.append(header(data)));
    let later = [];
    if (typeof Plotly === "undefined") root.append(el("p", {class: "failed"}, "Plotly did not load: the plots cannot be drawn"));
    else guarded(root, data.kind === "ttrl" ? "TTRL view" : "run view", () => { later = (data.kind === "ttrl" ? renderTTRL : renderDiscovery)(root, data) || []; });
    document.body.dataset.version = String(data.version);
    if (!document.body.dataset.loadedMs) document.body.dataset.loadedMs = String(Math.round(performance.now()));  // since navigation began
    drawRest(root, later, token);
  }

  function drawRest(root, parts, token) {
    if (token !== view.renders) return;  // a newer render replaced this page: its parts are not drawn
    if (!parts.length) {
      if (!document.body.dataset.drawnMs) document.body.dataset.drawnMs = String(Math.round(performance.now()));
      document.body.dataset.ready = "1";
      return;
    }
    const [name, draw] = parts.shift();
    guarded(root, name, draw);
    setTimeout(() => drawRest(root, parts, token), 0);
  }

  function fromHash() {
    const match = /state=([0-9a-zA-Z_-]+)/.exec(location.hash);
    if (match) { view.state = match[1]; view.pinned = true; }
  }

  function poll(ms) {
    const live = () => document.getElementById("live");
    const tick = () => fetch("version.json", {cache: "no-store"}).then((r) => r.json()).then((v) => {
      if (v.version === view.data.version) return null;
      return fetch("data.json", {cache: "no-store"}).then((r) => r.json()).then((data) => { render(data); });
    }).then(() => { const node = live(); if (node) node.textContent = ` · live, checked ${new Date().toLocaleTimeString()}`; })
      .catch((error) => { const node = live(); if (node) node.textContent = ` · the viewer is not reachable (${error.message})`; })
      .finally(() => setTimeout(tick, ms));
    setTimeout(tick, ms);
  }

  fromHash();
  window.addEventListener("hashchange", () => { fromHash(); if (view.data && view.data.tree) selectState(view.data, view.state); });
  const source = document.getElementById("ttd-data");
  let data;
  try {
    data = JSON.parse(source.textContent);
  } catch (error) {
    document.getElementById("app").replaceChildren(el("p", {class: "failed"}, `the page's data cannot be read (${error.message}): export it again with ttd-agent view RUN_DIR --html FILE`));
    document.body.dataset.ready = "1";
    return;
  }
  render(data);
  const pollMs = Number(source.dataset.pollMs);
  if (pollMs > 0) poll(pollMs);
})();
