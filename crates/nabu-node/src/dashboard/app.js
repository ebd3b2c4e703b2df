// The NabuStore dashboard. Plain JavaScript, no dependencies, no build step.
//
// Data comes from the serving node's JSON API (docs/api.md): /api/v1/ring once (the ring
// only changes with the member list), /api/v1/placement on request, and /api/v1/stream
// (Server-Sent Events): `stats` twice a second with every member's state and rates, `event`
// for each event of any member's log. History for the charts is kept here, in the browser.
//
// `/?demo=N` shows a synthetic N-node member list (ring and topology; no live data).
// When the first frame is drawn, `window.__nabuRendered` holds performance.now() (the
// benchmark, scripts/bench-dashboard, reads it).
"use strict";

const HISTORY_MS = 5 * 60 * 1000;
// A link stays drawn this long after its last traffic, fading, so a burst (a hint replayed
// in a fraction of a second) is seen.
const LINK_LINGER_MS = 5000;
const TWO_TO_32 = 4294967296;
const demo = Number(new URLSearchParams(location.search).get("demo")) || 0;
const demoQuery = demo ? `demo=${demo}` : "";

const state = {
  ring: null,        // /api/v1/ring
  ringBins: null,    // the owner (index into ring.members) of each angular bin, see binRing
  ringLoading: false, // a fetch of /api/v1/ring is under way
  memberIndex: new Map(), // node id -> index in ring.members
  live: null,        // the newest `stats` message
  states: new Map(), // node id -> "up" | "down"
  history: new Map(), // "all" or node id -> [{time, ...numbers}]
  highlight: null,   // {nodes: Set of ids, fractions: [{fraction, label}]} from a placement
  links: new Map(),  // "a-b" -> the link's last traffic {a, b, bytes_per_s, time}
  events: [],
};

const $ = (id) => document.getElementById(id);

// ---- formatting -------------------------------------------------------------------------

function bytes(value) {
  if (value == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}
const rate = (value) => value == null ? "–" : `${bytes(value)}/s`;
const micros = (us) => us == null ? "–" : us >= 1000 ? `${(us / 1000).toFixed(us >= 10000 ? 0 : 1)} ms` : `${us} µs`;
const percent = (ratio) => ratio == null ? "–" : `${(ratio * 100).toFixed(ratio < 0.1 ? 2 : 1)}%`;
const nodeColor = (index) => `hsl(${(index * 137.508) % 360}, 62%, 58%)`;
function colorOf(id) {
  const index = state.memberIndex.get(id);
  return index == null ? "#888" : nodeColor(index);
}
function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

// ---- ring -------------------------------------------------------------------------------

// Aggregates the virtual nodes into `bins` equal angles: each bin shows the owner of the
// ring position at its middle (the first point at or after it; the arc ending at a point
// belongs to that point's owner). One pass over the points, so 150,000 arcs cost a few ms.
function binRing(ring, bins) {
  const owners = new Int32Array(bins);
  const points = ring.points;
  let next = 0;
  for (let bin = 0; bin < bins; bin += 1) {
    const middle = ((bin + 0.5) / bins) * TWO_TO_32;
    while (next < points.length && points[next] < middle) next += 1;
    owners[bin] = ring.owners[next % points.length];
  }
  return owners;
}

function ringGeometry(canvas) {
  const size = canvas.clientWidth;
  return { size, cx: size / 2, cy: size / 2, outer: size / 2 - 24, inner: size / 2 - 70 };
}

const angleOf = (fraction) => fraction * 2 * Math.PI - Math.PI / 2;

function drawRing() {
  const canvas = $("ring");
  const ring = state.ring;
  if (!ring || ring.points.length === 0) return;
  const ratio = window.devicePixelRatio || 1;
  const { size, cx, cy, outer, inner } = ringGeometry(canvas);
  if (canvas.width !== size * ratio) { canvas.width = size * ratio; canvas.height = size * ratio; }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, size, size);
  if (!state.ringBins) state.ringBins = binRing(ring, Math.ceil(2 * Math.PI * outer * ratio));
  const owners = state.ringBins;
  const bins = owners.length;
  const highlight = state.highlight;
  // Draw each run of bins with one owner as one arc.
  let start = 0;
  for (let bin = 1; bin <= bins; bin += 1) {
    if (bin < bins && owners[bin] === owners[start]) continue;
    const member = ring.members[owners[start]];
    const down = state.states.get(member.id) === "down";
    const dimmed = highlight && !highlight.nodes.has(member.id);
    context.globalAlpha = dimmed ? 0.15 : down ? 0.35 : 1;
    context.fillStyle = nodeColor(owners[start]);
    context.beginPath();
    context.arc(cx, cy, outer, angleOf(start / bins), angleOf(bin / bins));
    context.arc(cx, cy, inner, angleOf(bin / bins), angleOf(start / bins), true);
    context.closePath();
    context.fill();
    start = bin;
  }
  context.globalAlpha = 1;
  if (highlight) drawMarkers(context, highlight.fractions, { cx, cy, outer, inner });
}

function drawMarkers(context, fractions, { cx, cy, outer, inner }) {
  context.strokeStyle = "#fff";
  context.fillStyle = "#fff";
  context.lineWidth = 2;
  context.font = "11px system-ui";
  for (const { fraction, label } of fractions) {
    const angle = angleOf(fraction);
    const [dx, dy] = [Math.cos(angle), Math.sin(angle)];
    context.beginPath();
    context.moveTo(cx + dx * (inner - 6), cy + dy * (inner - 6));
    context.lineTo(cx + dx * (outer + 6), cy + dy * (outer + 6));
    context.stroke();
    context.textAlign = "center";
    context.fillText(label, cx + dx * (inner - 18), cy + dy * (inner - 18) + 4);
  }
}

function ownerAt(fraction) {
  const ring = state.ring;
  const target = fraction * TWO_TO_32;
  let low = 0;
  let high = ring.points.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (ring.points[middle] < target) low = middle + 1; else high = middle;
  }
  return ring.members[ring.owners[low % ring.points.length]];
}

function onRingHover(event) {
  const canvas = $("ring");
  const tooltip = $("ring-tooltip");
  if (!state.ring) return;
  const box = canvas.getBoundingClientRect();
  const { cx, cy, outer, inner } = ringGeometry(canvas);
  const x = event.clientX - box.left - cx;
  const y = event.clientY - box.top - cy;
  const radius = Math.hypot(x, y);
  if (radius < inner || radius > outer) { tooltip.hidden = true; return; }
  const fraction = ((Math.atan2(y, x) + Math.PI / 2) / (2 * Math.PI) + 1) % 1;
  const member = ownerAt(fraction);
  const health = state.states.get(member.id) || (demo ? "up" : "unknown");
  tooltip.textContent = `node ${member.id} · ${member.zone} · ${percent(member.share)} of the ring · ` +
    `${150 * member.weight} vnodes · ${health}`;
  tooltip.style.left = `${event.clientX - box.left + 12}px`;
  tooltip.style.top = `${event.clientY - box.top + 12}px`;
  tooltip.hidden = false;
}

async function loadRing() {
  const ring = await getJson(`/api/v1/ring${demoQuery ? `?${demoQuery}` : ""}`);
  state.ring = ring;
  state.ringBins = null;
  state.memberIndex = new Map(ring.members.map((member, index) => [member.id, index]));
  $("ring-vnodes").textContent = ring.points.length;
  $("ring-members").textContent = ring.members.length;
  $("ring-epoch").textContent = ring.ring_epoch;
  if (demo) {
    for (const member of ring.members) state.states.set(member.id, "up");
    drawTopology(ring.members.map((member) => ({ ...member, state: "up" })), []);
  }
  drawRing();
}

// ---- placement --------------------------------------------------------------------------

function chips(nodes) {
  return nodes.map((node) => `<span class="chip" data-node="${node.id}" data-state="${node.state}" ` +
    `style="background:${colorOf(node.id)}">n${node.id}</span>`).join("");
}

async function place(event) {
  event.preventDefault();
  const namespace = $("placement-namespace").value.trim() || "default";
  const key = $("placement-key").value;
  const result = $("placement-result");
  const query = new URLSearchParams({ namespace, key });
  if (demo) query.set("demo", demo);
  try {
    const placement = await getJson(`/api/v1/placement?${query}`);
    const rows = [`<div class="row">${escapeHtml(placement.namespace)} is <b>${placement.durability}</b>; ` +
      `key record on ${chips(placement.key_record.nodes)}</div>`];
    const fractions = [{ fraction: placement.key_record.fraction, label: "key" }];
    const nodes = new Set(placement.key_record.nodes.map((node) => node.id));
    if (placement.object) {
      const object = placement.object;
      rows.push(`<div class="row">object ${bytes(object.size)}, ${object.stripes_total} stripe(s), ` +
        `blob ${object.blob_id.slice(0, 16)}…</div>`);
      object.stripes.forEach((stripe, index) => {
        rows.push(`<div class="row stripe">stripe ${index} <code>${stripe.stripe_id.slice(0, 12)}…</code>: ` +
          `shards 0…${stripe.nodes.length - 1} on ${chips(stripe.nodes)}</div>`);
        fractions.push({ fraction: stripe.fraction, label: `s${index}` });
        for (const node of stripe.nodes) nodes.add(node.id);
      });
    } else if (placement.object_error) {
      rows.push(`<div class="row error">object: ${escapeHtml(placement.object_error)}</div>`);
    } else {
      rows.push(`<div class="row">no object under this key${demo ? " (demo mode)" : ""}: ` +
        `stripes are placed by their content, so only the key record's nodes are known</div>`);
    }
    result.innerHTML = rows.join("");
    state.highlight = { nodes, fractions };
  } catch (error) {
    result.innerHTML = `<div class="error">${escapeHtml(error.message)}</div>`;
    state.highlight = null;
  }
  drawRing();
}

// ---- topology ---------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(name, attributes, parent) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (parent) parent.appendChild(element);
  return element;
}

// Nodes sit on one circle, grouped by zone (a labelled arc per zone); links are chords.
let topologyKey = "";
const nodePositions = new Map();
// The links with traffic within LINK_LINGER_MS of `time`, each with its age.
function lingeringLinks(links, time) {
  for (const link of links) state.links.set(`${link.a}-${link.b}`, { ...link, time });
  for (const [key, link] of state.links) if (time - link.time > LINK_LINGER_MS) state.links.delete(key);
  return [...state.links.values()].map((link) => ({ ...link, age: time - link.time }));
}

function drawTopology(nodes, links) {
  const root = $("topology");
  const key = nodes.map((node) => `${node.id}:${node.zone}`).join(",");
  if (key !== topologyKey) layoutTopology(root, nodes);
  topologyKey = key;
  for (const node of nodes) {
    const group = root.querySelector(`.node[data-id="${node.id}"]`);
    if (group) {
      group.dataset.state = node.state;
      group.querySelector("title").textContent = nodeTitle(node);
    }
  }
  const linkLayer = root.querySelector(".links");
  linkLayer.replaceChildren();
  for (const link of links) {
    const [a, b] = [nodePositions.get(link.a), nodePositions.get(link.b)];
    if (!a || !b) continue;
    const width = Math.min(12, 1 + Math.log10(1 + link.bytes_per_s / 1024) * 2);
    const age = link.age || 0;
    const line = svg("line", { class: "link", x1: a.x, y1: a.y, x2: b.x, y2: b.y,
      "stroke-width": width, "stroke-opacity": 0.8 * (1 - age / LINK_LINGER_MS) + 0.1,
      "data-a": link.a, "data-b": link.b, "data-live": age === 0 }, linkLayer);
    svg("title", {}, line).textContent = age === 0 ? `n${link.a} ↔ n${link.b}: ${rate(link.bytes_per_s)}`
      : `n${link.a} ↔ n${link.b}: ${rate(link.bytes_per_s)} ${(age / 1000).toFixed(1)} s ago`;
  }
}

function nodeTitle(node) {
  const parts = [`node ${node.id} (${node.zone}): ${node.state}`];
  if (node.roles) parts.push(`roles: ${node.roles.join(", ")}`);
  if (node.bytes_capacity) parts.push(`used ${bytes(node.bytes_used)} of ${bytes(node.bytes_capacity)}`);
  if (node.hardware) parts.push(hardwareText(node.hardware));
  return parts.join("\n");
}

function hardwareText(hardware) {
  const parts = [`${hardware.cpus} CPU`];
  if (hardware.memory_bytes) parts.push(bytes(hardware.memory_bytes));
  if (hardware.gpus.length) parts.push(hardware.gpus.join(", "));
  return parts.join(", ");
}

function layoutTopology(root, nodes) {
  root.replaceChildren();
  nodePositions.clear();
  const [cx, cy, radius] = [260, 260, 200];
  const zones = [...new Set(nodes.map((node) => node.zone))].sort();
  const ordered = [...nodes].sort((a, b) => a.zone.localeCompare(b.zone) || a.id - b.id);
  const gap = zones.length > 1 ? 0.5 : 0; // empty slots between zones
  const slots = ordered.length + gap * zones.length;
  const zoneLayer = svg("g", { class: "zones" }, root);
  svg("g", { class: "links" }, root);
  const nodeLayer = svg("g", { class: "nodes" }, root);
  const dot = Math.max(2.5, Math.min(18, (Math.PI * radius) / slots * 0.8));
  let slot = gap / 2;
  for (const zone of zones) {
    const members = ordered.filter((node) => node.zone === zone);
    const first = slot;
    for (const node of members) {
      const angle = angleOf(slot / slots);
      const position = { x: cx + radius * Math.cos(angle), y: cy + radius * Math.sin(angle) };
      nodePositions.set(node.id, position);
      const group = svg("g", { class: "node", "data-id": node.id, "data-zone": zone,
        "data-state": node.state }, nodeLayer);
      svg("circle", { cx: position.x, cy: position.y, r: dot }, group);
      svg("title", {}, group);
      if (dot >= 9) svg("text", { x: position.x, y: position.y + 3.5 }, group).textContent = node.id;
      slot += 1;
    }
    const [a0, a1] = [angleOf((first - 0.4) / slots), angleOf((slot - 0.6) / slots)];
    const arcRadius = radius + dot + 14;
    const large = a1 - a0 > Math.PI ? 1 : 0;
    if (zones.length > 1) {
      svg("path", { class: "zone-arc", d: `M ${cx + arcRadius * Math.cos(a0)} ${cy + arcRadius * Math.sin(a0)} ` +
        `A ${arcRadius} ${arcRadius} 0 ${large} 1 ${cx + arcRadius * Math.cos(a1)} ${cy + arcRadius * Math.sin(a1)}` }, zoneLayer);
    }
    // One zone: its name in the middle; several: each beside its arc.
    const middle = (a0 + a1) / 2;
    const labelRadius = zones.length > 1 ? arcRadius + 16 : 0;
    const label = svg("text", { class: "zone-label", x: cx + labelRadius * Math.cos(middle),
      y: cy + labelRadius * Math.sin(middle) + 4 }, zoneLayer);
    label.textContent = `${zone} (${members.length})`;
    slot += gap;
  }
}

function updateTable(nodes) {
  const body = $("nodes").tBodies[0];
  const rows = nodes.map((node) => {
    const read = (node.latency || []).find((latency) => latency.class === "read");
    const used = node.bytes_capacity ? node.bytes_used / node.bytes_capacity : null;
    const cells = [`n${node.id}`, node.zone, node.reachable ? node.state : `${node.state} (no answer)`,
      (node.roles || []).join(" "), percent(used), node.ops_per_s == null ? "–" : node.ops_per_s.toFixed(0),
      rate(node.data_in_bytes_per_s), rate(node.data_out_bytes_per_s), micros(read && read.p99_us),
      node.hardware ? hardwareText(node.hardware) : "–"];
    return `<tr data-id="${node.id}" data-state="${node.state}">${cells.map((cell) => `<td>${escapeHtml(cell)}</td>`).join("")}</tr>`;
  });
  body.innerHTML = rows.join("");
}

// ---- metrics ----------------------------------------------------------------------------

// One point of history for `nodes` (one node, or all summed; latency: the worst node).
function point(time, nodes) {
  const reachable = nodes.filter((node) => node.reachable);
  const sum = (field) => reachable.reduce((total, node) => total + (node[field] || 0), 0);
  const worst = (klass, field) => {
    const values = reachable.map((node) => ((node.latency || []).find((l) => l.class === klass) || {})[field])
      .filter((value) => value != null);
    return values.length ? Math.max(...values) : null;
  };
  const capacity = sum("bytes_capacity");
  const ratios = reachable.map((node) => node.kv_hit_ratio).filter((value) => value != null);
  return {
    time,
    in: sum("data_in_bytes_per_s"), out: sum("data_out_bytes_per_s"), ops: sum("ops_per_s"),
    readP50: worst("read", "p50_us"), readP99: worst("read", "p99_us"),
    writeP50: worst("write", "p50_us"), writeP99: worst("write", "p99_us"),
    used: capacity ? sum("bytes_used") / capacity : null,
    usedBytes: sum("bytes_used"), capacity,
    hints: sum("hints_pending"), repair: sum("repair_bytes_per_s"), scrub: sum("scrub_bytes_per_s"),
    scrubbing: reachable.filter((node) => node.scrub_running).length,
    scrubRepaired: sum("scrub_repaired_total"), scrubFound: sum("scrub_corrupt_found_total"),
    reprotected: sum("reprotect_stripes_repaired_total"),
    rebalance: sum("rebalance_bytes_per_s"), rebalanced: sum("rebalance_shards_moved_total"),
    maintaining: reachable.some((node) => node.maintenance_running),
    lost: Math.max(0, ...reachable.map((node) => node.members_lost || 0)),
    kv: ratios.length ? ratios.reduce((a, b) => a + b, 0) / ratios.length : null,
  };
}

function record(live) {
  const time = live.time_ms;
  const add = (key, nodes) => {
    const series = state.history.get(key) || [];
    series.push(point(time, nodes));
    while (series.length && series[0].time < time - HISTORY_MS) series.shift();
    state.history.set(key, series);
  };
  add("all", live.nodes);
  for (const node of live.nodes) add(String(node.id), [node]);
}

function drawChart(canvas, series, lines, format) {
  const ratio = window.devicePixelRatio || 1;
  const [width, height] = [canvas.clientWidth, canvas.clientHeight];
  if (canvas.width !== width * ratio) { canvas.width = width * ratio; canvas.height = height * ratio; }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  if (!series.length) return;
  const end = series[series.length - 1].time;
  const start = end - HISTORY_MS;
  let top = 0;
  for (const sample of series) for (const line of lines) top = Math.max(top, sample[line.field] || 0);
  top = top > 0 ? top * 1.15 : 1;
  const x = (time) => ((time - start) / HISTORY_MS) * width;
  const y = (value) => height - 4 - (value / top) * (height - 18);
  context.font = "10px system-ui";
  context.fillStyle = "#8494a4";
  context.textAlign = "right";
  context.fillText(`max ${format(top)}`, width - 4, 11);
  context.fillText("now", width - 4, height - 4);
  context.textAlign = "left";
  context.fillText("−5 min", 4, height - 4);
  let legendX = 4;
  for (const line of lines) {
    context.strokeStyle = line.color;
    context.lineWidth = 1.5;
    context.beginPath();
    let drawing = false;
    for (const sample of series) {
      const value = sample[line.field];
      if (value == null) { drawing = false; continue; }
      if (drawing) context.lineTo(x(sample.time), y(value)); else context.moveTo(x(sample.time), y(value));
      drawing = true;
    }
    context.stroke();
    context.fillStyle = line.color;
    context.fillText(line.label, legendX, 11);
    legendX += context.measureText(line.label).width + 10;
  }
}

function drawMetrics() {
  const key = $("metrics-node").value;
  const series = state.history.get(key) || [];
  const last = series[series.length - 1];
  if (last) {
    for (const [id, value, text] of [["metric-in", last.in, rate(last.in)], ["metric-out", last.out, rate(last.out)],
      ["metric-ops", last.ops, last.ops.toFixed(0)]]) {
      $(id).dataset.value = value;
      $(id).textContent = text;
    }
    $("metric-latency").textContent = `read ${micros(last.readP50)} / ${micros(last.readP99)}, ` +
      `write ${micros(last.writeP50)} / ${micros(last.writeP99)}`;
    $("metric-used").textContent = `${bytes(last.usedBytes)} of ${bytes(last.capacity)} (${percent(last.used)})`;
    $("metric-kv").textContent = percent(last.kv);
    $("metric-repair").textContent = `${last.hints} hints, ${rate(last.repair)} moved home; ` +
      `${last.lost} lost, ${last.reprotected} stripes re-protected; ` +
      `rebalance ${last.maintaining ? "running" : "idle"}, ${last.rebalanced} shards, ${rate(last.rebalance)}; ` +
      `scrub ${last.scrubbing ? "running" : "idle"} ` +
      `(${last.scrubFound} found, ${last.scrubRepaired} rebuilt)`;
  }
  drawChart($("chart-throughput"), series, [{ field: "in", label: "in", color: "#58a6ff" },
    { field: "out", label: "out", color: "#3fb950" }], rate);
  drawChart($("chart-ops"), series, [{ field: "ops", label: "ops/s", color: "#d2a8ff" }], (v) => v.toFixed(0));
  drawChart($("chart-latency"), series, [{ field: "readP50", label: "read p50", color: "#58a6ff" },
    { field: "readP99", label: "read p99", color: "#1f6feb" }, { field: "writeP50", label: "write p50", color: "#3fb950" },
    { field: "writeP99", label: "write p99", color: "#f0883e" }], micros);
  drawChart($("chart-capacity"), series, [{ field: "used", label: "used", color: "#e3b341" }], percent);
  drawChart($("chart-repair"), series, [{ field: "repair", label: "moved home", color: "#3fb950" },
    { field: "scrub", label: "scrubbed", color: "#e3b341" },
    { field: "rebalance", label: "rebalanced", color: "#d2a8ff" }], rate);
  drawChart($("chart-kv"), series, [{ field: "kv", label: "hit ratio", color: "#58a6ff" }], percent);
}

// ---- live updates -----------------------------------------------------------------------

function onStats(live) {
  state.live = live;
  let changed = false;
  for (const node of live.nodes) {
    if (state.states.get(node.id) !== node.state) changed = true;
    state.states.set(node.id, node.state);
  }
  const select = $("metrics-node");
  if (select.options.length !== live.nodes.length + 1) {
    select.replaceChildren(new Option("all nodes", "all"),
      ...live.nodes.map((node) => new Option(`node ${node.id}`, String(node.id))));
  }
  const up = live.nodes.filter((node) => node.state === "up").length;
  $("summary").textContent = `${live.nodes.length} nodes, ${up} up · served by node ${live.serving_node}`;
  $("summary").dataset.up = up;
  if (state.ring && live.ring_epoch !== state.ring.ring_epoch && !state.ringLoading) {
    // The member list changed: the ring too.
    state.ringLoading = true;
    loadRing().finally(() => { state.ringLoading = false; });
  }
  record(live);
  drawTopology(live.nodes, lingeringLinks(live.links, live.time_ms));
  updateTable(live.nodes);
  drawMetrics();
  if (changed) drawRing();
}

function describe(entry) {
  const node = (id) => `node ${id}`;
  switch (entry.kind) {
    case "node_up": return `${node(entry.node)} up`;
    case "node_down": return `${node(entry.node)} down`;
    case "rebalance_started": return `rebalance to epoch ${entry.ring_epoch} started`;
    case "rebalance_finished": return `rebalance to epoch ${entry.ring_epoch} finished: ${entry.shards_moved} shards, ${bytes(entry.bytes_moved)}`;
    case "repair_started": return `repair of ${node(entry.node)} started`;
    case "repair_finished": return `repair of ${node(entry.node)} finished: ${entry.shards_repaired} shards, ${bytes(entry.bytes)}, ${entry.failed} failed`;
    case "corruption_found": return `corrupt shard of stripe ${entry.stripe_id.slice(0, 12)}…`;
    case "corruption_repaired": return `repaired shard ${entry.shard_index} of stripe ${entry.stripe_id.slice(0, 12)}… (${bytes(entry.bytes)})`;
    default: return entry.kind;
  }
}

function onEvent(entry) {
  const item = document.createElement("li");
  item.dataset.kind = entry.kind;
  if (entry.node != null) item.dataset.node = entry.node;
  const time = new Date(entry.time_ms);
  item.innerHTML = `<time datetime="${time.toISOString()}">${time.toLocaleTimeString()}</time>` +
    `n${entry.reporter}: ${escapeHtml(describe(entry))}`;
  const list = $("events");
  list.prepend(item);
  while (list.children.length > 500) list.lastElementChild.remove();
}

function connect() {
  const source = new EventSource("/api/v1/stream");
  const status = $("connection");
  source.onopen = () => { status.dataset.state = "live"; status.textContent = "live"; };
  source.onerror = () => { status.dataset.state = "lost"; status.textContent = "reconnecting…"; };
  source.addEventListener("stats", (message) => onStats(JSON.parse(message.data)));
  source.addEventListener("event", (message) => onEvent(JSON.parse(message.data)));
}

// ---- start ------------------------------------------------------------------------------

async function start() {
  $("placement").addEventListener("submit", place);
  $("ring").addEventListener("mousemove", onRingHover);
  $("ring").addEventListener("mouseleave", () => { $("ring-tooltip").hidden = true; });
  $("metrics-node").addEventListener("change", drawMetrics);
  if (demo) {
    $("connection").dataset.state = "demo";
    $("connection").textContent = `demo: ${demo} synthetic nodes (no live data)`;
    $("summary").textContent = "";
    for (const id of ["metrics-view", "events-view"]) {
      $(id).insertAdjacentHTML("beforeend", `<p class="caption">demo mode: no live data</p>`);
    }
  } else {
    connect();
  }
  try {
    await loadRing();
  } catch (error) {
    $("ring-vnodes").textContent = `error: ${error.message}`;
  }
  window.__nabuRendered = performance.now();
  document.body.dataset.rendered = "true";
}

start();
