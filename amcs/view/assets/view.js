// amcs view: renders a generate run or an eval folder from the JSON block #amcs-data.
// Static pages carry everything; served pages ("mode": "serve") fetch rows, totals and problems
// from the loopback server. Plain DOM, no libraries, no network access beyond that server.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("amcs-data").textContent);
  const app = document.getElementById("app");

  // --- helpers ------------------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }
  const int = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
  const num = (x, d = 3) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));
  const pct = (x, d = 1) => (x === null || x === undefined ? "—" : (100 * x).toFixed(d) + "%");
  const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);
  function kv(pairs) {  // null pairs are left out
    return el("dl", { class: "kv" }, pairs.filter(Boolean).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  }
  function badge(text, cls, extra) {
    return el("span", Object.assign({ class: "badge " + (cls || ""), text: text }, extra || {}));
  }
  function scoreColor(s) {  // 0 red .. 1 green
    const h = Math.max(0, Math.min(1, s)) * 120;
    return `hsl(${h.toFixed(0)}, 70%, 86%)`;
  }
  async function getJSON(url) {
    const r = await fetch(url);
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  function fail(err) {
    app.append(el("p", { class: "reason", id: "error", text: "error: " + err.message }));
  }

  // --- data sources for a run ---------------------------------------------------------------
  function staticSource(d) {
    return {
      info: async () => d,
      rows: async (start, count) => d.rows.slice(start, start + count),
      totals: async () => d.totals,
      problem: async (i) => d.details[String(i)],
      chunk: d.rows.length || 1,
    };
  }
  function serveSource() {
    return {
      info: () => getJSON("api/info"),
      rows: async (start, count) => (await getJSON(`api/rows?start=${start}&count=${count}`)).rows,
      totals: async () => (await getJSON("api/totals")).totals,
      problem: (i) => getJSON(`api/problem?index=${i}`),
      chunk: 20000,
    };
  }

  // --- the run view ---------------------------------------------------------------------------
  const TOTALS = [
    ["problems", "problems"], ["problems_ok", "ok"], ["problems_failed", "failed"],
    ["paths", "paths"], ["labels_positive", "“+” labels"], ["labels_negative", "“−” labels"],
    ["rollouts", "rollouts"], ["tokens", "generated tokens"], ["early_exits", "early exits"],
    ["cache_hit_ratio", "cache hit ratio"],
    ["grading_retried", "grading timeouts retried"], ["grading_unresolved", "grading timeouts unresolved"],
  ];

  async function runView() {
    const src = DATA.mode === "serve" ? serveSource() : staticSource(DATA);
    const info = await src.info();
    const C = Object.fromEntries(info.columns.map((c, i) => [c, i]));
    const state = { rows: [], page: 0, size: 50, sort: null, selected: null, loaded: false };
    const fp = info.fingerprint || {};

    app.replaceChildren();
    app.append(
      el("h1", { text: "amcs view — generate run" }),
      el("div", { class: "muted mono", id: "source", text: info.source }),
      el("h2", { text: "Fingerprint" }),
      fingerprintBlock(fp),
      el("h2", { text: "Totals" }),
      el("div", { class: "totals", id: "totals" }, el("span", { class: "muted", text: "counting…" })),
    );
    if (info.meta_lines > info.total_problems) {
      const n = info.meta_lines - info.total_problems;
      app.append(el("p", { class: "muted", id: "superseded", text:
        `${int(n)} earlier record${n > 1 ? "s" : ""} of retried problems superseded (the last record of a problem counts).` }));
    }
    if (info.mode === "static" && info.rows.length < info.total_problems) {
      app.append(el("p", { class: "note", id: "truncated", text:
        `This page holds the first ${int(info.rows.length)} of ${int(info.total_problems)} problems; ` +
        "totals count them all. `amcs view RUN --serve` browses every problem." }));
    }
    // filters
    const f = {
      status: el("select", { id: "f-status" }, el("option", { value: "", text: "all" }),
        el("option", { value: "ok", text: "ok" }), el("option", { value: "failed", text: "failed" })),
      neg: el("input", { type: "checkbox", id: "f-neg" }),
      mcMin: el("input", { type: "number", id: "f-mc-min", min: 0, max: 1, step: 0.05, placeholder: "0" }),
      mcMax: el("input", { type: "number", id: "f-mc-max", min: 0, max: 1, step: 0.05, placeholder: "1" }),
      roMin: el("input", { type: "number", id: "f-ro-min", min: 0, step: 1, placeholder: "min" }),
      roMax: el("input", { type: "number", id: "f-ro-max", min: 0, step: 1, placeholder: "max" }),
      search: el("input", { type: "search", id: "f-search", placeholder: "problem id, question or reason" }),
    };
    const count = el("span", { id: "count", class: "muted" });
    const tbody = el("tbody", { id: "problem-rows" });
    const pageInfo = el("span", { id: "page-info", class: "muted" });
    const cols = [
      ["index", "#", 1], ["problem_id", "problem"], ["status", "status"], ["root_mc", "root MC", 1],
      ["rollouts", "rollouts", 1], ["paths", "paths", 1], ["labels_positive", "+", 1],
      ["labels_negative", "−", 1], ["early_exits", "early exits", 1], ["tokens", "tokens", 1],
      ["question", "question / reason"],
    ];
    const thead = el("tr", {}, cols.map(([key, label, isNum]) => el("th", {
      class: isNum ? "num" : "", dataset: { col: key }, text: label,
      onclick: () => {
        state.sort = state.sort && state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: 1 };
        state.page = 0; refresh();
      },
    })));
    app.append(
      el("h2", { text: "Problems" }),
      el("div", { class: "filters" },
        el("label", {}, "status ", f.status),
        el("label", {}, f.neg, " has a “−” label"),
        el("label", {}, "root MC ", f.mcMin, " to ", f.mcMax),
        el("label", {}, "rollouts ", f.roMin, " to ", f.roMax),
        el("label", {}, f.search), count),
      el("table", { class: "grid", id: "problems" }, el("thead", {}, thead), tbody),
      el("div", { class: "pager" },
        el("button", { id: "prev", text: "‹ prev", onclick: () => { state.page--; refresh(); } }),
        pageInfo,
        el("button", { id: "next", text: "next ›", onclick: () => { state.page++; refresh(); } })),
    );
    const detail = el("section", { id: "detail" });
    app.append(detail);
    for (const input of Object.values(f)) {
      input.addEventListener("input", () => { state.page = 0; refresh(); });
    }

    function numOr(input, dflt) {
      const v = input.value.trim();
      return v === "" || isNaN(Number(v)) ? dflt : Number(v);
    }
    function filtered() {
      const status = f.status.value, neg = f.neg.checked;
      const mcMin = numOr(f.mcMin, -Infinity), mcMax = numOr(f.mcMax, Infinity);
      const roMin = numOr(f.roMin, -Infinity), roMax = numOr(f.roMax, Infinity);
      const mcSet = f.mcMin.value.trim() !== "" || f.mcMax.value.trim() !== "";
      const q = f.search.value.trim().toLowerCase();
      let out = state.rows.filter((r) => {
        if (status && r[C.status] !== status) return false;
        if (neg && !(r[C.labels_negative] > 0)) return false;
        const mc = r[C.root_mc];
        if (mcSet && (mc === null || mc < mcMin || mc > mcMax)) return false;
        if (r[C.rollouts] < roMin || r[C.rollouts] > roMax) return false;
        if (q && !(String(r[C.problem_id]).toLowerCase().includes(q) ||
          r[C.question].toLowerCase().includes(q) || r[C.reason].toLowerCase().includes(q))) return false;
        return true;
      });
      if (state.sort) {
        const i = C[state.sort.key], dir = state.sort.dir;
        out = out.slice().sort((a, b) => {
          const x = a[i], y = b[i];
          if (x === y) return a[C.index] - b[C.index];
          if (x === null) return 1;
          if (y === null) return -1;
          return (x < y ? -1 : 1) * dir;
        });
      }
      return out;
    }
    function refresh() {
      const rows = filtered();
      const pages = Math.max(1, Math.ceil(rows.length / state.size));
      state.page = Math.max(0, Math.min(state.page, pages - 1));
      const loadedNote = state.loaded ? "" : ` (${int(state.rows.length)} of ${int(info.total_problems)} loaded)`;
      count.textContent = `${int(rows.length)} of ${int(state.rows.length)} problems${loadedNote}`;
      count.dataset.shown = rows.length;
      pageInfo.textContent = `page ${state.page + 1} of ${pages}`;
      const slice = rows.slice(state.page * state.size, (state.page + 1) * state.size);
      tbody.replaceChildren(...slice.map((r) => el("tr", {
        dataset: { index: r[C.index], problem: r[C.problem_id], status: r[C.status] },
        class: r[C.index] === state.selected ? "selected" : "",
        onclick: () => openProblem(r[C.index]),
      },
        el("td", { class: "num", text: r[C.index] }),
        el("td", { class: "mono", text: r[C.problem_id] }),
        el("td", {}, badge(r[C.status], r[C.status] === "ok" ? "ok" : "failed")),
        el("td", { class: "num", text: num(r[C.root_mc], 2) }),
        el("td", { class: "num", text: int(r[C.rollouts]) }),
        el("td", { class: "num", text: int(r[C.paths]) }),
        el("td", { class: "num", text: int(r[C.labels_positive]) }),
        el("td", { class: "num", text: int(r[C.labels_negative]) }),
        el("td", { class: "num", text: int(r[C.early_exits]) }),
        el("td", { class: "num", text: int(r[C.tokens]) }),
        el("td", { class: "q", title: r[C.reason] || r[C.question] },
          r[C.reason] ? el("span", { class: "failed-reason", text: short(r[C.reason], 90) }) : short(r[C.question], 90)),
      )));
      for (const th of thead.children) {
        const s = state.sort && state.sort.key === th.dataset.col ? (state.sort.dir > 0 ? " ▲" : " ▼") : "";
        th.dataset.sorted = s ? "1" : "";
        th.textContent = th.textContent.replace(/ [▲▼]$/, "") + s;
      }
      app.dataset.ready = state.loaded ? "1" : "";
    }

    async function openProblem(index) {
      state.selected = index;
      for (const tr of tbody.children) tr.classList.toggle("selected", Number(tr.dataset.index) === index);
      detail.replaceChildren(el("p", { class: "muted", text: "loading problem…" }));
      try {
        const p = await src.problem(index);
        renderProblem(detail, p, index);
        detail.scrollIntoView({ block: "start" });
      } catch (e) {
        detail.replaceChildren(el("p", { class: "reason", text: "error: " + e.message }));
      }
    }

    // first page, then the rest in chunks; totals when ready
    src.totals().then(renderTotals).catch(fail);
    let start = 0;
    const served = DATA.mode === "serve";
    const first = await src.rows(0, served ? 200 : info.rows.length);
    state.rows.push(...first);
    start = first.length;
    state.loaded = !served || start >= info.total_problems;
    refresh();
    while (!state.loaded) {
      const more = await src.rows(start, src.chunk);
      if (!more.length) break;
      state.rows.push(...more);
      start += more.length;
      state.loaded = start >= info.total_problems;
      refresh();
    }
    state.loaded = true;
    refresh();
  }

  function fingerprintBlock(fp) {
    const pairs = [];
    if (!fp.header) {
      pairs.push(["run header", el("span", { class: "muted", text: "none in the meta file (an older run); method and model from the data lines" })]);
    }
    for (const [k, v] of Object.entries(fp)) {
      if (k === "header") continue;
      pairs.push([k, typeof v === "object" && v !== null && !Array.isArray(v)
        ? el("span", { class: "mono flow" }, Object.entries(v).map(([a, b]) => el("span", { text: `${a}=${JSON.stringify(b)}` })))
        : typeof v === "object" ? JSON.stringify(v) : String(v)]);
    }
    const block = kv(pairs);
    block.id = "fingerprint";
    return block;
  }

  function renderTotals(t) {
    const box = document.getElementById("totals");
    box.replaceChildren(...TOTALS.map(([key, label]) => {
      const v = t[key];
      const shown = key === "cache_hit_ratio" ? (v === null ? "n/a" : pct(v)) : int(v);
      return el("div", { class: "total", dataset: { total: key, value: v === null ? "" : String(v) } },
        el("span", { class: "v", text: shown }), el("span", { class: "k", text: label }));
    }));
    box.dataset.ready = "1";
  }

  function renderProblem(box, p, index) {
    const stats = p.stats || {};
    box.replaceChildren(
      el("h2", {}, `Problem ${p.problem_id}`, badge(p.status, p.status === "ok" ? "ok" : "failed"),
        p.exact ? badge(`${p.domain_title}: exact truth`, "info") : null),
      kv([
        ["question", el("pre", { text: p.question })],
        p.policy_prompt === undefined || p.policy_prompt === null ? null
          : ["policy prompt", el("pre", { id: "policy-prompt", title: "the exact text the policy was given", text: p.policy_prompt })],
        ["gold answer", el("span", { class: "mono", id: "gold", text: p.answer })],
        ["paths", int(p.paths)],
        ["stats", el("span", { class: "mono", text: Object.entries(stats).map(([k, v]) => `${k} ${v}`).join(" · ") })],
      ]),
    );
    box.dataset.index = index;
    if (p.status !== "ok") {
      box.append(el("h3", { text: "Why it failed" }), el("div", { class: "reason", id: "reason", text: p.reason || "(no reason recorded)" }));
    }
    if (p.agreement && p.agreement.steps) {
      const a = p.agreement;
      box.append(el("p", { id: "agreement" }, `Labels vs exact truth on the written paths: ${a.agree} of ${a.steps} steps agree`,
        a.agree < a.steps ? badge(`${a.steps - a.agree} disagree`, "warn") : badge("all agree", "ok")));
    }
    if (!p.has_tree && !p.labelled_paths.length) {
      if (p.status === "ok") box.append(el("p", { class: "muted", text: "No search tree recorded." }));
      return;
    }
    box.append(
      el("h3", { text: "Search tree" }),
      el("div", { class: "legend" },
        "One line per step prefix. MC: the estimated value (rollouts spent on it); prefixes the search never estimated ",
        "take their value from the next estimated prefix on a path (inherited). ",
        badge("+", "pos"), badge("−", "neg"), " labels written to data.jsonl; red outline: the first error of a path",
        p.exact ? "; ✓/✗: exact truth of the prefix (every step so far right)" : "",
        ". Click a step for its details, ▸ to fold."),
    );
    const tree = el("div", { class: "tree", id: "tree" });
    const expandAll = p.nodes.length <= 400;
    tree.append(renderNode(p, p.nodes[p.root], expandAll, true));
    box.append(tree);
    box.append(el("h3", { text: `Labelled paths (${p.labelled_paths.length})` }));
    p.labelled_paths.forEach((path, i) => box.append(renderPath(path, i, p.exact)));
    if (!p.labelled_paths.length) box.append(el("p", { class: "muted", text: "None written for this problem." }));
  }

  function labelBadges(node) {
    const seen = new Set();
    const out = [];
    for (const l of node.labels) {
      const key = l.label ? "+" : "−";
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(badge(key, l.label ? "pos" : "neg", { dataset: { label: key } }));
    }
    return out;
  }

  function renderNode(p, node, expand, isRoot) {
    const kids = node.children.map((id) => p.nodes[id]);
    const classes = ["node"];
    if (isRoot) classes.push("root");
    if (node.first_error) classes.push("first-error");
    if (!node.evaluated && !node.labels.length) classes.push("unvisited");
    const box = el("div", { class: classes.join(" "), dataset: {
      node: node.id, firstError: node.first_error ? "1" : "", evaluated: node.evaluated ? "1" : "" } });
    const childBox = el("div", { class: "children" + (expand || isRoot ? "" : " hidden") });
    const caret = el("span", { class: "caret", text: kids.length ? (expand || isRoot ? "▾" : "▸") : "" });
    caret.addEventListener("click", (e) => {
      e.stopPropagation();
      if (!kids.length) return;
      const hidden = childBox.classList.toggle("hidden");
      caret.textContent = hidden ? "▸" : "▾";
    });
    const parts = [];
    if (node.evaluated) {
      parts.push(badge(`MC ${num(node.mc, 2)}`, "info"), badge(`${node.rollouts} rollouts`, ""));
      if (node.early_exit) parts.push(badge("early exit", ""));
      if (node.clusters && node.clusters.length) parts.push(badge(`clusters ${node.clusters.join("/")}`, ""));
    } else if (node.labels.length) {
      const l = node.labels[0];
      parts.push(badge(`value ${num(l.value, 2)}`, ""), badge(l.rollouts ? `${l.rollouts} graded` : "inherited", "muted"));
    }
    parts.push(...labelBadges(node));
    if (node.first_error) parts.push(badge("first error", "neg"));
    if (node.truth !== null && node.depth > 0) {
      parts.push(badge(node.truth ? "✓ exact" : "✗ exact", node.truth ? "ok" : "wrong", { dataset: { truth: node.truth ? "1" : "0" } }));
      const l = node.labels.length ? node.labels[0].label : null;
      if (l !== null && l !== node.truth) parts.push(badge("label ≠ truth", "warn"));
    }
    const text = isRoot ? "(question)" : node.step;
    const line = el("div", { class: "node-line" }, caret,
      el("span", { class: "step-text", text: short(text, 160) }), el("span", { class: "badges" }, parts));
    const info = el("div", { class: "node-info hidden" });
    line.addEventListener("click", () => {
      if (!info.childElementCount) info.append(nodeInfo(p, node));
      info.classList.toggle("hidden");
      box.classList.toggle("open", !info.classList.contains("hidden"));
    });
    box.append(...[line, keptRollouts(node), info, childBox].filter(Boolean));
    for (const kid of kids) childBox.append(renderNode(p, kid, expand, false));
    return box;
  }

  // The rollouts that estimated a node (runs with --keep-rollouts), folded until opened.
  function keptRollouts(node) {
    const kept = node.kept_rollouts;
    if (!kept || !kept.length) return null;
    const right = kept.filter((r) => r.correct).length;
    const cut = kept.filter((r) => r.finish_reason === "length").length;
    return el("details", { class: "kept", dataset: { kept: kept.length } },
      el("summary", { text: `${kept.length} rollouts kept: ${right} right` + (cut ? `, ${cut} cut at max_new_tokens` : "") }),
      kept.map((r, i) => el("div", { class: "rollout", dataset: { correct: r.correct ? "1" : "0", cut: r.finish_reason === "length" ? "1" : "" } },
        el("div", {}, el("span", { class: "muted", text: `#${i + 1}` }),
          badge(r.correct ? "right" : "wrong", r.correct ? "ok" : "wrong"),
          r.finish_reason === "length" ? badge("cut at max_new_tokens", "warn", { title: "finish_reason length: truncated, graded wrong" }) : null,
          el("span", { class: "muted", text: ` ${int(r.tokens)} tokens · mean NLL ${num(r.mean_nll, 3)}` })),
        el("pre", { class: "rollout-text", text: r.text }))));
  }

  function nodeInfo(p, node) {
    const pairs = [["step", el("pre", { text: node.depth ? node.step : p.question })], ["depth", `${node.depth} steps`]];
    if (node.evaluated) {
      pairs.push(["MC estimate", num(node.mc, 4)], ["rollouts", `${node.rollouts} (estimated here)`],
        ["early exit", node.early_exit === null ? "—" : node.early_exit ? "yes: all rollouts agreed" : "no"],
        ["cluster sizes", node.clusters && node.clusters.length ? node.clusters.join(", ") : "—"],
        ["uncertainty", node.uncertainty === null ? "—" : num(node.uncertainty, 3)],
        ["selected as candidate", `${node.visits} times`]);
    } else {
      pairs.push(["MC estimate", "not estimated by the search"]);
    }
    if (node.labels.length) {
      pairs.push(["on paths", el("span", {}, node.labels.map((l) =>
        el("div", { text: `path ${l.path + 1}: label ${l.label ? "+" : "−"}, value ${num(l.value, 3)}, ` +
          (l.rollouts ? `${l.rollouts} rollouts` : "inherited from a later prefix") })))]);
    }
    if (node.truth !== null && node.depth) {
      pairs.push(["exact truth", `prefix ${node.truth ? "correct" : "wrong"}; this step ${node.step_truth ? "correct" : "wrong"}`]);
    }
    return kv(pairs);
  }

  function renderPath(path, i, exact) {
    const rows = path.completions.map((s, j) => el("tr", { class: j === path.first_error ? "first-error" : "", dataset: { node: path.nodes[j] } },
      el("td", { class: "num", text: j + 1 }),
      el("td", { class: "step", text: s }),
      el("td", {}, badge(path.labels[j] ? "+" : "−", path.labels[j] ? "pos" : "neg")),
      el("td", { class: "num", text: num(path.values[j], 3) }),
      el("td", { class: "num", text: path.rollouts[j] ? path.rollouts[j] : "inherited" }),
      exact ? el("td", {}, path.truth[j] === null ? "" : badge(path.truth[j] ? "✓" : "✗", path.truth[j] ? "ok" : "wrong")) : null,
    ));
    const head = el("tr", {}, ["#", "step", "label", "MC value", "rollouts", exact ? "exact" : null]
      .filter((x) => x !== null).map((h) => el("th", { text: h })));
    const title = path.first_error >= 0 ? `path ${i + 1}: first error at step ${path.first_error + 1}` : `path ${i + 1}: all steps “+”`;
    return el("div", { class: "path", dataset: { path: i } }, el("div", { class: "muted", text: title }),
      el("table", { class: "grid" }, el("thead", {}, head), el("tbody", {}, rows)));
  }

  // --- the eval view --------------------------------------------------------------------------
  function environmentBlock(env) {  // where the evaluation ran (none in older results files)
    const pairs = Object.entries(env).map(([k, v]) => [k, v === null ? "—" : String(v)]);
    return pairs.length ? [el("h2", { text: "Environment" }), el("section", { id: "environment" }, kv(pairs))] : [];
  }
  function evalView() {
    const d = DATA;
    app.replaceChildren(
      el("h1", { text: "amcs view — eval" }),
      el("div", { class: "muted mono", id: "source", text: d.source }),
      el("h2", { text: "Settings" }),
      kv(Object.entries(d.settings || {}).map(([k, v]) => [k,
        typeof v === "object" && v !== null ? el("pre", { text: JSON.stringify(v) }) : String(v)])),
      ...environmentBlock(d.environment || {}),
      el("h2", { text: "Accuracy vs generated tokens" }),
      plot(d.results || []),
      resultsTable(d.results || []),
    );
    if (d.problems.length < d.total_problems) {
      app.append(el("p", { class: "note", text: `This page holds the first ${d.problems.length} of ${d.total_problems} problems.` }));
    }
    const cellSel = el("select", { id: "f-cell" }, el("option", { value: "", text: "any strategy" }),
      d.cells.map((c) => el("option", { value: c, text: c })));
    const wrong = el("input", { type: "checkbox", id: "f-wrong" });
    const search = el("input", { type: "search", id: "f-search", placeholder: "problem id or question" });
    const count = el("span", { id: "count", class: "muted" });
    const tbody = el("tbody", { id: "problem-rows" });
    const detail = el("section", { id: "detail" });
    app.append(
      el("h2", { text: "Problems" }),
      el("div", { class: "filters" }, el("label", {}, "strategy ", cellSel),
        el("label", {}, wrong, " wrong only"), el("label", {}, search), count),
      el("table", { class: "grid", id: "problems" },
        el("thead", {}, el("tr", {}, el("th", { text: "problem" }), el("th", { text: "question" }),
          el("th", { text: "gold" }), el("th", { class: "num", text: "right" }),
          d.cells.map((c) => el("th", { text: c, title: c })))),
        tbody),
      detail,
    );
    function refresh() {
      const cell = cellSel.value, q = search.value.trim().toLowerCase();
      const rows = d.problems.filter((p) => {
        const runs = cell ? p.runs.filter((r) => r.cell === cell) : p.runs;
        if (cell && !runs.length) return false;
        if (wrong.checked && !runs.some((r) => !r.correct)) return false;
        if (q && !(p.problem_id.toLowerCase().includes(q) || p.question.toLowerCase().includes(q))) return false;
        return true;
      });
      count.textContent = `${rows.length} of ${d.problems.length} problems`;
      count.dataset.shown = rows.length;
      tbody.replaceChildren(...rows.map((p) => {
        const byCell = Object.fromEntries(p.runs.map((r) => [r.cell, r]));
        return el("tr", { dataset: { problem: p.problem_id }, onclick: () => openProblem(p) },
          el("td", { class: "mono", text: p.problem_id }),
          el("td", { class: "q", text: short(p.question, 70) }),
          el("td", { class: "mono", text: p.reference }),
          el("td", { class: "num", text: `${p.correct}/${p.runs.length}` }),
          d.cells.map((c) => el("td", {}, byCell[c] ? el("span", {
            class: "cellmark " + (byCell[c].correct ? "right" : "wrong"), text: byCell[c].correct ? "✓" : "✗" }) : "")));
      }));
    }
    function openProblem(p) {
      for (const tr of tbody.children) tr.classList.toggle("selected", tr.dataset.problem === p.problem_id);
      detail.replaceChildren(
        el("h2", {}, `Problem ${p.problem_id}`, p.domain ? badge(`${p.domain_title}: exact truth`, "info") : null),
        kv([["question", el("pre", { text: p.question })], ["gold answer", el("span", { class: "mono", id: "gold", text: p.reference })]]),
        el("div", { class: "legend" }, "Each step's background is its PRM score (red 0 … green 1); ★ marks the candidate the strategy chose",
          p.domain ? "; ✓/✗ after a step: exact truth of the prefix." : "."),
      );
      const cell = cellSel.value;
      for (const r of p.runs) {
        if (cell && r.cell !== cell) continue;
        detail.append(renderRun(r));
      }
      detail.scrollIntoView({ block: "start" });
    }
    for (const x of [cellSel, wrong, search]) x.addEventListener("input", refresh);
    refresh();
    app.dataset.ready = "1";
  }

  function renderRun(r) {
    const box = el("div", { class: "run", dataset: { cell: r.cell } },
      el("h3", {}, r.cell, " — answer ", el("span", { class: "mono", text: r.answer === null ? "none" : r.answer }),
        badge(r.correct ? "right" : "wrong", r.correct ? "ok" : "wrong"),
        el("span", { class: "muted", text: ` · ${int(r.tokens)} tokens · ${int(r.prm_calls)} PRM calls · ${r.candidates.length} candidates` })),
    );
    if (r.votes) {
      box.append(el("div", { class: "muted", text: "votes: " +
        Object.entries(r.votes).map(([a, v]) => `${a}: ${Number(v).toFixed(3).replace(/\.?0+$/, "")}`).join(", ") }));
    }
    r.candidates.forEach((c, i) => {
      const chosen = i === r.chosen;
      const right = c.correct === null ? badge("?", "", { title: "not a plain number: not graded here" })
        : badge(c.correct ? "right" : "wrong", c.correct ? "ok" : "wrong");
      const steps = c.steps.map((s, j) => {
        const sc = j < c.step_scores.length ? c.step_scores[j] : null;
        return el("div", { class: "s", style: sc === null ? null : `background:${scoreColor(sc)}`, title: sc === null ? "no score" : `PRM score ${sc}` },
          el("span", { class: "sc", text: sc === null ? "" : sc.toFixed(3) }), el("span", { text: s }),
          c.truth ? el("span", { text: c.truth[j] ? "✓" : "✗", class: c.truth[j] ? "" : "wrong-step" }) : null);
      });
      box.append(el("div", { class: "cand" + (chosen ? " chosen" : ""), dataset: { candidate: i, chosen: chosen ? "1" : "", correct: String(c.correct) } },
        el("div", {}, chosen ? el("b", { text: "★ chosen " }) : null, `candidate ${i + 1} · answer `,
          el("span", { class: "mono", text: c.answer === null ? "none" : c.answer }), right,
          el("span", { class: "muted", text: ` · score ${c.score === null ? "—" : num(c.score, 3)}` }),
          c.finished ? null : badge("unfinished", "warn")),
        el("div", { class: "steps" }, steps)));
    });
    return box;
  }

  function resultsTable(rows) {
    return el("table", { class: "grid", id: "results" },
      el("thead", {}, el("tr", {}, ["strategy", "N", "accuracy", "tokens / problem", "PRM calls / problem", "problems"]
        .map((h, i) => el("th", { class: i ? "num" : "", text: h })))),
      el("tbody", {}, rows.filter((r) => r.problems).map((r) => el("tr", { dataset: { cell: `${r.strategy}@${r.n}` } },
        el("td", { text: r.strategy }), el("td", { class: "num", text: r.n }),
        el("td", { class: "num acc", text: pct(r.accuracy) }), el("td", { class: "num", text: int(Math.round(r.tokens_per_problem)) }),
        el("td", { class: "num", text: num(r.prm_calls_per_problem, 1) }), el("td", { class: "num", text: r.problems })))));
  }

  function plot(rows) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 640, H = 340, L = 56, R = 130, T = 14, B = 44;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H); svg.id = "plot";
    const s = (tag, attrs, text) => {
      const n = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text !== undefined) n.textContent = text;
      svg.append(n);
      return n;
    };
    const pts = rows.filter((r) => r.problems && r.tokens_per_problem > 0);
    if (!pts.length) {
      s("text", { x: L, y: H / 2 }, "no results.json rows to plot");
      return svg;
    }
    const lx = pts.map((r) => Math.log10(r.tokens_per_problem));
    let x0 = Math.floor(Math.min(...lx) * 10) / 10, x1 = Math.ceil(Math.max(...lx) * 10) / 10;
    if (x1 - x0 < 0.2) { x0 -= 0.1; x1 += 0.1; }
    const accs = pts.map((r) => r.accuracy);
    let y1 = Math.min(1, Math.ceil(Math.max(...accs) * 10 + 1e-9) / 10);
    let y0 = Math.max(0, Math.floor(Math.min(...accs) * 10 - 1e-9) / 10);
    if (y1 - y0 < 0.2) y0 = Math.max(0, y1 - 0.2);
    if (y1 - y0 < 0.2) y1 = y0 + 0.2;
    const yStep = y1 - y0 > 0.5 ? 0.1 : 0.05;
    const X = (v) => L + ((Math.log10(v) - x0) / (x1 - x0)) * (W - L - R);
    const Y = (a) => T + (1 - (a - y0) / (y1 - y0)) * (H - T - B);
    s("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#d0d7de" });
    for (let e = Math.floor(x0); e <= Math.floor(x1); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** e;
        if (Math.log10(v) < x0 || Math.log10(v) > x1) continue;
        s("line", { x1: X(v), x2: X(v), y1: T, y2: H - B, stroke: "#eee" });
        s("text", { x: X(v), y: H - B + 14, "text-anchor": "middle" }, v >= 1000 ? `${v / 1000}k` : String(v));
      }
    }
    for (let a = y0; a <= y1 + 1e-9; a += yStep) {
      s("line", { x1: L, x2: W - R, y1: Y(a), y2: Y(a), stroke: "#eee" });
      s("text", { x: L - 6, y: Y(a) + 4, "text-anchor": "end" }, pct(a, 0));
    }
    s("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, "generated tokens per problem (log)");
    s("text", { x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${(T + H - B) / 2})`, "text-anchor": "middle" }, "accuracy");
    const colors = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#57606a"];
    const strategies = [...new Set(pts.map((r) => r.strategy))];
    strategies.forEach((st, i) => {
      const c = colors[i % colors.length];
      const mine = pts.filter((r) => r.strategy === st).sort((a, b) => a.tokens_per_problem - b.tokens_per_problem);
      s("polyline", { points: mine.map((r) => `${X(r.tokens_per_problem)},${Y(r.accuracy)}`).join(" "), fill: "none", stroke: c, "stroke-width": 2 });
      for (const r of mine) {
        const dot = s("circle", { cx: X(r.tokens_per_problem), cy: Y(r.accuracy), r: 4, fill: c, "data-cell": `${r.strategy}@${r.n}` });
        const t = document.createElementNS(NS, "title");
        t.textContent = `${r.strategy}@${r.n}: ${pct(r.accuracy)} at ${Math.round(r.tokens_per_problem)} tokens`;
        dot.append(t);
        s("text", { x: X(r.tokens_per_problem) + 5, y: Y(r.accuracy) - 5, fill: c }, String(r.n));
      }
      s("rect", { x: W - R + 12, y: T + 8 + i * 18, width: 12, height: 4, fill: c });
      s("text", { x: W - R + 30, y: T + 13 + i * 18 }, st);
    });
    return svg;
  }

  (DATA.kind === "eval" ? Promise.resolve().then(evalView) : runView()).catch(fail);
})();
