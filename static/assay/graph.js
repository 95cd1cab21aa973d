/*
 * The attribution-graph viewer: a layered SVG (rows: tokens, model layers, output; columns:
 * prompt positions), drawn from the graph JSON as stored in the evidence.
 *
 * One small loader reads both shapes Assay has written:
 *  - circuit-tracer's create_graph_files output: metadata.prompt_tokens, nodes (node_id,
 *    feature, layer ("E" for embeddings), ctx_idx, feature_type, influence, activation, clerp,
 *    is_target_logit, token_prob), links (source, target, weight);
 *  - Assay's first circuit_trace graph: prompt.tokens, nodes (id, type, layer, position,
 *    attribution, activation, hook, feature, token), edges (source, target, weight,
 *    metric_weight).
 * Hover or focus a node for its label, activation and top contexts; click it to highlight its
 * paths to the output; untick layers to hide them; the select reaches every node by keyboard.
 * Every text from the evidence goes into the page as text, never as markup.
 */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var MAX_LINKS = 1500;
  var CT_KINDS = {
    "cross layer transcoder": "feature",
    "mlp reconstruction error": "error",
    embedding: "token",
    logit: "output",
  };

  function num(value) {
    return typeof value === "number" && isFinite(value) ? value : null;
  }

  function fromCircuitTracer(doc) {
    var meta = doc.metadata || {};
    var tokens = (meta.prompt_tokens || []).map(String);
    var nodes = doc.nodes.map(function (n) {
      var kind = CT_KINDS[n.feature_type] || "feature";
      var layer = String(n.layer) === "E" ? -1 : Number(n.layer);
      var parts = String(n.node_id).split("_");
      var feature = kind === "feature" ? Number(parts[1]) : null;
      var influence = num(n.influence);
      var token = tokens[n.ctx_idx] || "";
      return {
        id: String(n.node_id),
        kind: kind,
        layer: layer,
        position: Number(n.ctx_idx) || 0,
        feature: feature,
        token: token,
        label: n.clerp || defaultLabel(kind, layer, feature, token),
        activation: num(n.activation),
        value: influence,
        importance: influence === null ? 0.5 : Math.max(0, 1 - influence),
        sign: 1,
        key: kind === "feature" ? "ct:" + n.feature : null,
        target: !!n.is_target_logit,
        prob: num(n.token_prob),
      };
    });
    var links = doc.links.map(function (l) {
      return { source: String(l.source), target: String(l.target), weight: Number(l.weight) || 0 };
    });
    return {
      schema: "circuit-tracer",
      valueName: "Influence",
      valueNote: "Influence is circuit-tracer's cumulative share of influence at which the node is kept: the smaller, the more influential. An attribution estimate, not a measured effect.",
      prompt: meta.prompt || tokens.join(""),
      tokens: tokens,
      nodes: nodes,
      links: links,
      layerName: function (layer, top) {
        if (layer < 0) return "tokens";
        if (layer === top) return "output";
        return "layer " + layer;
      },
    };
  }

  function fromAssayV1(doc) {
    var prompt = doc.prompt || {};
    var tokens = (prompt.tokens || []).map(function (t) { return String(t.text); });
    var metric = doc.metric || {};
    var target = (metric.target && metric.target.text) || "";
    var hooks = {};
    var nodes = doc.nodes.map(function (n) {
      var kind = n.type === "logit" ? "output" : n.type;
      var value = num(n.attribution);
      if (n.hook) hooks[n.layer] = n.hook;
      var label;
      if (kind === "token") label = "token " + JSON.stringify(n.token || tokens[n.position] || "");
      else if (kind === "feature") label = "feature " + n.feature + " at " + n.hook;
      else if (kind === "error") label = "lens error at " + n.hook;
      else label = (metric.kind || "metric") + " of " + JSON.stringify(target);
      return {
        id: String(n.id),
        kind: kind,
        layer: Number(n.layer),
        position: Number(n.position) || 0,
        feature: n.feature === undefined ? null : n.feature,
        token: tokens[n.position] || "",
        label: label,
        activation: num(n.activation),
        value: value,
        importance: value === null ? 0 : Math.abs(value),
        sign: value !== null && value < 0 ? -1 : 1,
        key: kind === "feature" ? n.hook + ":" + n.feature : null,
        target: kind === "output",
        prob: null,
      };
    });
    var links = (doc.edges || []).map(function (e) {
      var w = num(e.metric_weight);
      if (w === null) w = num(e.weight) || 0;
      return { source: String(e.source), target: String(e.target), weight: w };
    });
    return {
      schema: "assay-attribution-v1",
      valueName: "Attribution",
      valueNote: "Attribution is gradient x activation in " + (metric.kind || "metric") + " units: a linear estimate, not a measured effect.",
      prompt: prompt.text || tokens.join(""),
      tokens: tokens,
      nodes: nodes,
      links: links,
      layerName: function (layer, top) {
        if (layer < 0) return "tokens";
        if (layer === top) return "output";
        return hooks[layer] || "layer " + layer;
      },
    };
  }

  function defaultLabel(kind, layer, feature, token) {
    if (kind === "token") return "token " + JSON.stringify(token);
    if (kind === "error") return "reconstruction error, layer " + layer;
    if (kind === "output") return "output";
    return "feature " + feature + ", layer " + layer;
  }

  /* The one loader: either shape in, one model out. */
  function load(doc) {
    if (!doc || !Array.isArray(doc.nodes)) throw new Error("this file has no graph nodes");
    if (Array.isArray(doc.links)) return fromCircuitTracer(doc);
    if (Array.isArray(doc.edges)) return fromAssayV1(doc);
    throw new Error("this file has neither links (circuit-tracer) nor edges (Assay)");
  }

  // ---- drawing ----------------------------------------------------------------------------

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function layout(model) {
    var layers = Array.from(new Set(model.nodes.map(function (n) { return n.layer; }))).sort(function (a, b) { return a - b; });
    var top = layers[layers.length - 1];
    var npos = Math.max(model.tokens.length, 1 + Math.max.apply(null, model.nodes.map(function (n) { return n.position; })));
    var colW = Math.max(56, Math.min(130, 900 / npos));
    var rowH = 64;
    var left = 130, topPad = 16, bottom = 64;
    var cells = {};
    model.nodes.forEach(function (n) {
      var key = n.layer + "/" + n.position;
      (cells[key] = cells[key] || []).push(n);
    });
    var maxImp = Math.max.apply(null, model.nodes.map(function (n) { return n.importance; }).concat([1e-12]));
    Object.keys(cells).forEach(function (key) {
      var group = cells[key].sort(function (a, b) { return b.importance - a.importance; });
      group.forEach(function (n, i) {
        var row = layers.indexOf(n.layer);
        n.x = left + (n.position + (i + 1) / (group.length + 1)) * colW;
        n.y = topPad + (layers.length - 1 - row) * rowH + rowH / 2;
        n.r = Math.max(3, Math.min(9, colW / (2.4 * group.length), 3 + 6 * Math.sqrt(n.importance / maxImp)));
      });
    });
    return {
      layers: layers,
      top: top,
      width: left + npos * colW + 16,
      height: topPad + layers.length * rowH + bottom,
      left: left,
      colW: colW,
      rowH: rowH,
      topPad: topPad,
    };
  }

  function colour(n) {
    if (n.kind === "token") return "#e5e7eb";
    if (n.kind === "error") return "#6b7280";
    if (n.kind === "output") return n.target ? "#1b7f3b" : "#7fbf8e";
    return n.sign < 0 ? "#b3261e" : "#1f4e9c";
  }

  function draw(model, box, canvas) {
    var svg = el("svg", {
      viewBox: "0 0 " + box.width + " " + box.height,
      width: box.width,
      height: box.height,
      role: "group",
      "aria-label": "attribution graph of " + model.nodes.length + " nodes",
      class: "graph-svg",
    });
    var rows = el("g", { class: "rows" }, svg);
    box.layers.forEach(function (layer, i) {
      var y = box.topPad + (box.layers.length - 1 - i) * box.rowH + box.rowH / 2;
      el("line", { x1: box.left - 6, x2: box.width - 8, y1: y, y2: y, class: "row-rule", "data-layer": layer }, rows);
      var t = el("text", { x: 8, y: y + 4, class: "row-label", "data-layer": layer }, rows);
      t.textContent = model.layerName(layer, box.top);
    });
    var axis = el("g", { class: "token-axis" }, svg);
    model.tokens.forEach(function (tok, p) {
      var x = box.left + (p + 0.5) * box.colW;
      var y = box.height - box.rowH / 2 - 8;
      var t = el("text", { x: x, y: y + 22, class: "token-label", transform: "rotate(-28 " + x + " " + (y + 22) + ")" }, axis);
      t.textContent = tok.length > 14 ? tok.slice(0, 13) + "…" : tok;
    });
    var byId = {};
    model.nodes.forEach(function (n) { byId[n.id] = n; });
    var drawn = model.links.filter(function (l) { return byId[l.source] && byId[l.target]; })
      .sort(function (a, b) { return Math.abs(b.weight) - Math.abs(a.weight); }).slice(0, MAX_LINKS);
    var maxW = Math.max.apply(null, drawn.map(function (l) { return Math.abs(l.weight); }).concat([1e-12]));
    var linkLayer = el("g", { class: "links" }, svg);
    drawn.forEach(function (l) {
      var s = byId[l.source], t = byId[l.target], share = Math.abs(l.weight) / maxW;
      l.el = el("line", {
        x1: s.x, y1: s.y, x2: t.x, y2: t.y,
        class: "link " + (l.weight < 0 ? "neg" : "pos"),
        "stroke-width": (0.5 + 3 * share).toFixed(2),
        "stroke-opacity": (0.12 + 0.6 * share).toFixed(2),
        "data-source": l.source,
        "data-target": l.target,
      }, linkLayer);
    });
    var nodeLayer = el("g", { class: "nodes" }, svg);
    model.nodes.forEach(function (n) {
      var g = el("g", { class: "node kind-" + n.kind, "data-id": n.id, "data-layer": n.layer }, nodeLayer);
      if (n.kind === "feature") el("circle", { cx: n.x, cy: n.y, r: n.r, fill: colour(n) }, g);
      else if (n.kind === "output") el("rect", { x: n.x - 9, y: n.y - 9, width: 18, height: 18, rx: 3, fill: colour(n) }, g);
      else el("rect", { x: n.x - n.r, y: n.y - n.r, width: 2 * n.r, height: 2 * n.r, fill: colour(n), stroke: "#374151" }, g);
      var title = el("title", {}, g);
      title.textContent = n.label;
      n.el = g;
    });
    canvas.textContent = "";
    canvas.appendChild(svg);
    // On a narrow screen shrink the drawing (at most 1.6 times) and show the end of the
    // prompt, where the output is; the rest scrolls sideways inside the frame.
    var room = canvas.clientWidth;
    if (room && box.width > room) {
      var width = Math.max(room, box.width / 1.6);
      svg.setAttribute("width", width);
      svg.setAttribute("height", box.height * (width / box.width));
      canvas.scrollLeft = canvas.scrollWidth;
    }
    return { svg: svg, drawn: drawn, byId: byId };
  }

  // ---- details, heat maps, highlight, filters ----------------------------------------------

  function heat(value, vmax) {
    var s = Math.min(1, Math.abs(value) / (vmax || 1));
    var dark = value < 0 ? [103, 0, 13] : [8, 48, 107];
    var rgb = dark.map(function (d) { return Math.round(255 + (d - 255) * s); });
    var lum = rgb.map(function (c) {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    var L = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2];
    var text = (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) ? "#000" : "#fff";
    return { background: "rgb(" + rgb.join(",") + ")", color: text };
  }

  function contextLine(ctx, parent) {
    var p = document.createElement("p");
    p.className = "heatline";
    var acts = ctx.acts || [];
    var vmax = Math.max.apply(null, acts.filter(function (a) { return typeof a === "number"; }).concat([1e-12]));
    (ctx.tokens || []).forEach(function (tok, i) {
      var span = document.createElement("span");
      span.className = "tok";
      span.textContent = tok;
      if (typeof acts[i] === "number" && acts[i]) {
        var c = heat(acts[i], vmax);
        span.style.backgroundColor = c.background;
        span.style.color = c.color;
        span.title = "activation " + acts[i].toPrecision(3);
      }
      p.appendChild(span);
    });
    if (ctx.note) {
      var note = document.createElement("span");
      note.className = "note";
      note.textContent = " (" + ctx.note + ")";
      p.appendChild(note);
    }
    parent.appendChild(p);
  }

  function fmt(value) {
    return value === null || value === undefined ? "–" : Number(value).toPrecision(4);
  }

  function showDetails(panel, model, n, info) {
    panel.textContent = "";
    var h = document.createElement("h3");
    h.textContent = n.label;
    panel.appendChild(h);
    var dl = document.createElement("dl");
    dl.className = "pairs compact";
    var rows = [
      ["Kind", n.kind],
      ["Layer", model.layerName(n.layer, model.top)],
      ["Position", n.position + (n.token ? " (" + JSON.stringify(n.token) + ")" : "")],
      ["Activation", fmt(n.activation)],
      [model.valueName, fmt(n.value)],
    ];
    if (n.prob !== null) rows.push(["Probability", fmt(n.prob)]);
    var extra = n.key && info[n.key];
    if (extra && extra.label) rows.unshift(["Catalog", extra.label]);
    if (extra && extra.frequency !== undefined && extra.frequency !== null) rows.push(["Firing frequency", fmt(extra.frequency)]);
    rows.forEach(function (pair) {
      var dt = document.createElement("dt");
      dt.textContent = pair[0];
      var dd = document.createElement("dd");
      dd.textContent = pair[1];
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
    panel.appendChild(dl);
    var note = document.createElement("p");
    note.className = "note";
    note.textContent = model.valueNote;
    panel.appendChild(note);
    if (extra && extra.top_logits && extra.top_logits.length) {
      var logits = document.createElement("p");
      logits.textContent = "Promotes: " + extra.top_logits.map(function (t) { return JSON.stringify(t); }).join(", ");
      panel.appendChild(logits);
    }
    if (extra && extra.contexts && extra.contexts.length) {
      var title = document.createElement("p");
      title.className = "label";
      title.textContent = "Top activating contexts:";
      panel.appendChild(title);
      extra.contexts.forEach(function (ctx) { contextLine(ctx, panel); });
    } else if (n.kind === "feature") {
      var none = document.createElement("p");
      none.className = "note";
      none.textContent = "No recorded contexts for this feature.";
      panel.appendChild(none);
    }
  }

  /* Nodes and links on some path from `start` to an output node. */
  function pathsToOutput(model, start) {
    var out = {};
    model.links.forEach(function (l) { (out[l.source] = out[l.source] || []).push(l); });
    var byId = {};
    model.nodes.forEach(function (n) { byId[n.id] = n; });
    var memo = {};
    function reaches(id, seen) {
      if (memo[id] !== undefined) return memo[id];
      if (seen[id]) return false;
      seen[id] = true;
      var n = byId[id];
      var ok = !!n && n.kind === "output";
      (out[id] || []).forEach(function (l) { if (reaches(l.target, seen)) ok = true; });
      memo[id] = ok;
      return ok;
    }
    var nodes = {}, links = [];
    var stack = [start], visited = {};
    while (stack.length) {
      var id = stack.pop();
      if (visited[id]) continue;
      visited[id] = true;
      if (!reaches(id, {})) continue;
      nodes[id] = true;
      (out[id] || []).forEach(function (l) {
        if (reaches(l.target, {})) { links.push(l); stack.push(l.target); }
      });
    }
    return { nodes: nodes, links: links };
  }

  function viewer(root) {
    var canvas = root.querySelector(".graph-canvas");
    var panel = root.querySelector(".graph-details");
    var infoEl = document.getElementById(root.dataset.features);
    var info = infoEl ? JSON.parse(infoEl.textContent) : {};
    var select = root.querySelector(".node-select");
    var hidden = {};
    var model, drawn;

    function clear() {
      drawn.svg.classList.remove("highlighting");
      root.querySelectorAll(".on").forEach(function (e) { e.classList.remove("on"); });
    }

    function highlight(id) {
      clear();
      var found = pathsToOutput(model, id);
      drawn.svg.classList.add("highlighting");
      Object.keys(found.nodes).forEach(function (nid) {
        if (drawn.byId[nid] && drawn.byId[nid].el) drawn.byId[nid].el.classList.add("on");
      });
      found.links.forEach(function (l) { if (l.el) l.el.classList.add("on"); });
      if (drawn.byId[id]) {
        drawn.byId[id].el.classList.add("on");
        showDetails(panel, model, drawn.byId[id], info);
      }
      root.dataset.highlighted = String(Object.keys(found.nodes).length);
    }

    function applyFilter() {
      model.nodes.forEach(function (n) { n.el.classList.toggle("filtered", !!hidden[n.layer]); });
      drawn.drawn.forEach(function (l) {
        var s = drawn.byId[l.source], t = drawn.byId[l.target];
        l.el.classList.toggle("filtered", !!(hidden[s.layer] || hidden[t.layer]));
      });
      drawn.svg.querySelectorAll(".row-label, .row-rule").forEach(function (e) {
        e.classList.toggle("filtered", !!hidden[e.getAttribute("data-layer")]);
      });
    }

    function controls() {
      var boxes = root.querySelector(".layer-boxes");
      boxes.textContent = "";
      model.layers.forEach(function (layer) {
        var id = root.id + "-layer-" + String(layer).replace("-", "m");
        var wrap = document.createElement("span");
        wrap.className = "choice";
        var input = document.createElement("input");
        input.type = "checkbox";
        input.id = id;
        input.checked = true;
        input.addEventListener("change", function () { hidden[layer] = !input.checked; applyFilter(); });
        var label = document.createElement("label");
        label.htmlFor = id;
        label.textContent = model.layerName(layer, model.top);
        wrap.appendChild(input);
        wrap.appendChild(label);
        boxes.appendChild(wrap);
      });
      model.nodes.filter(function (n) { return n.kind === "feature" || n.kind === "output"; })
        .sort(function (a, b) { return b.importance - a.importance; }).slice(0, 300)
        .forEach(function (n) {
          var option = document.createElement("option");
          option.value = n.id;
          option.textContent = n.label + " · " + model.layerName(n.layer, model.top) + ", position " + n.position;
          select.appendChild(option);
        });
      select.addEventListener("change", function () { if (select.value) highlight(select.value); else clear(); });
      root.querySelector(".clear-button").addEventListener("click", function () { clear(); select.value = ""; });
      root.addEventListener("keydown", function (e) { if (e.key === "Escape") { clear(); select.value = ""; } });
    }

    function wire() {
      model.nodes.forEach(function (n) {
        n.el.addEventListener("mouseenter", function () { showDetails(panel, model, n, info); });
        n.el.addEventListener("click", function () {
          if (n.el.classList.contains("on") && root.dataset.selected === n.id) { clear(); root.dataset.selected = ""; return; }
          root.dataset.selected = n.id;
          select.value = n.id;
          highlight(n.id);
        });
      });
    }

    root.hidden = false;
    fetch(root.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("the graph file could not be read (HTTP " + response.status + ")");
        return response.json();
      })
      .then(function (doc) {
        model = load(doc);
        var box = layout(model);
        model.layers = box.layers;
        model.top = box.top;
        drawn = draw(model, box, canvas);
        controls();
        wire();
        root.dataset.ready = model.schema;
      })
      .catch(function (err) {
        panel.textContent = "The interactive viewer could not draw this graph: " + err.message + ". The figure and table below show it.";
        root.dataset.ready = "error";
      });
  }

  window.AssayGraph = { load: load, pathsToOutput: pathsToOutput };
  document.querySelectorAll(".graph-viewer").forEach(viewer);
})();
