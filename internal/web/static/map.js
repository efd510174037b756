// The port map: draws each protocol's 65,536 ports as a 256 x 256 grid,
// one canvas pixel a port, and follows the broker's server-sent events.
// Text that came from other processes (command lines) is only ever set
// as textContent, never as HTML.
"use strict";

const COLORS = {
  free: [238, 240, 244], dynamic: [214, 228, 255],
  runtime: [34, 197, 94], runtimeBound: [21, 128, 61],
  delegated: [168, 85, 247], delegatedBound: [107, 33, 168],
  persistent: [59, 130, 246], persistentBound: [30, 58, 138],
  restored: [249, 115, 22], excluded: [250, 204, 21], foreign: [239, 68, 68],
};

let state = null;      // the last map from the broker
let pinned = null;     // the block kept in the details panel
const maps = {};       // proto -> {canvas, ctx, image, owners: Int32Array (block index per port, -1 none)}

function kindOf(b) {
  if (b.kind === "persistent") return "persistent";
  return b.delegated ? "delegated" : "runtime";
}

function filters() {
  const kinds = new Set([...document.querySelectorAll(".f-kind")].filter(c => c.checked).map(c => c.value));
  return {
    tcp: document.getElementById("f-tcp").checked,
    udp: document.getElementById("f-udp").checked,
    kinds,
    owner: document.getElementById("f-owner").value.trim().toLowerCase(),
  };
}

function ownerMatches(b, q) {
  if (!q) return true;
  return String(b.pid || "").includes(q) || String(b.uid).includes(q) || (b.command || "").toLowerCase().includes(q);
}

function ownerText(b) {
  if (b.kind === "persistent") return "uid " + b.uid + " (persistent)";
  return "pid " + b.pid + " · uid " + b.uid;
}

function rangeText(b) {
  return b.count === 1 ? String(b.start) : b.start + "-" + b.end;
}

function ensureMap(proto) {
  if (maps[proto]) return maps[proto];
  const box = document.createElement("div");
  box.className = "map";
  box.id = "map-" + proto;
  const h = document.createElement("h3");
  h.textContent = proto.toUpperCase();
  const small = document.createElement("small");
  h.appendChild(small);
  box.appendChild(h);
  const grid = document.createElement("div");
  grid.className = "grid";
  const rows = document.createElement("div");
  rows.className = "rows";
  for (let r = 0; r <= 256; r += 32) {
    const s = document.createElement("span");
    s.style.top = (r * 2) + "px";
    s.textContent = String(Math.min(r * 256, 65535));
    rows.appendChild(s);
  }
  const canvas = document.createElement("canvas");
  canvas.width = 256;
  canvas.height = 256;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", proto.toUpperCase() + " ports, 0 to 65535");
  canvas.dataset.proto = proto;
  grid.appendChild(rows);
  grid.appendChild(canvas);
  box.appendChild(grid);
  document.getElementById("maps").appendChild(box);
  const ctx = canvas.getContext("2d");
  const m = { box, small, canvas, ctx, image: ctx.createImageData(256, 256), owners: new Int32Array(65536), inUse: new Uint8Array(65536), excluded: new Uint8Array(65536) };
  canvas.addEventListener("mousemove", ev => hover(proto, ev));
  canvas.addEventListener("mouseleave", () => { document.getElementById("tip").hidden = true; });
  canvas.addEventListener("click", ev => { const b = blockAt(proto, ev); pinned = b; showDetails(b); renderTable(); });
  maps[proto] = m;
  return m;
}

function portAt(ev) {
  const r = ev.target.getBoundingClientRect();
  const x = Math.floor((ev.clientX - r.left) / r.width * 256);
  const y = Math.floor((ev.clientY - r.top) / r.height * 256);
  if (x < 0 || x > 255 || y < 0 || y > 255) return -1;
  return y * 256 + x;
}

function blockAt(proto, ev) {
  const port = portAt(ev);
  if (port < 0 || !state) return null;
  const i = maps[proto].owners[port];
  return i >= 0 ? Object.assign({ port }, state.blocks[i]) : { port, proto, none: true, inUse: maps[proto].inUse[port] === 1, excluded: maps[proto].excluded[port] === 1 };
}

function describe(b) {
  if (b.none) {
    let what = "free";
    if (b.excluded) what = "excluded from automatic assignment by other software (ip_local_reserved_ports)";
    if (b.inUse) what = "in use by a socket outside portres";
    return b.proto + " port " + b.port + ": " + what;
  }
  const bound = b.bound.length ? b.bound.join(",") : "none";
  let s = b.proto + " " + rangeText(b) + " · " + kindOf(b) + (b.restored ? " (restored)" : "") + " · " + b.count + (b.count === 1 ? " port" : " ports") + "\n" + ownerText(b);
  if (b.command) s += "\n" + b.command;
  return s + "\nbound: " + bound;
}

function hover(proto, ev) {
  const b = blockAt(proto, ev);
  const tip = document.getElementById("tip");
  if (!b) { tip.hidden = true; return; }
  tip.textContent = describe(b);
  tip.hidden = false;
  tip.style.left = (ev.clientX + 14) + "px";
  tip.style.top = (ev.clientY + 14) + "px";
  if (!pinned) showDetails(b);
}

function showDetails(b) {
  const d = document.getElementById("details");
  d.replaceChildren();
  if (!b) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = "Hover over a block for its owner; click to keep it here.";
    d.appendChild(p);
    return;
  }
  const dl = document.createElement("dl");
  const add = (k, v) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  };
  if (b.none) {
    add("port", b.proto + " " + b.port);
    add("state", describe(b).split(": ")[1]);
  } else {
    add("block", b.proto + " " + rangeText(b) + " (" + b.count + (b.count === 1 ? " port)" : " ports)"));
    add("kind", kindOf(b) + (b.restored ? ", restored after a broker restart" : ""));
    if (b.kind !== "persistent") add("owner", "pid " + b.pid);
    add("uid", String(b.uid));
    if (b.command) add("command", b.command);
    add("bound", b.bound.length ? b.bound.join(", ") : "none");
  }
  d.appendChild(dl);
}

function fillRanges(arr, ranges) {
  arr.fill(0);
  for (const [lo, hi] of ranges) for (let p = lo; p <= hi; p++) arr[p] = 1;
}

function draw() {
  if (!state) return;
  const f = filters();
  for (const pm of state.protos) {
    const m = ensureMap(pm.proto);
    m.box.hidden = !f[pm.proto];
    m.small.textContent = "dynamic " + pm.dynamic[0] + "-" + pm.dynamic[1];
    fillRanges(m.inUse, pm.in_use);
    fillRanges(m.excluded, pm.excluded);
    m.owners.fill(-1);
    state.blocks.forEach((b, i) => {
      if (b.proto !== pm.proto) return;
      for (let p = b.start; p <= b.end; p++) m.owners[p] = i;
    });
    const px = m.image.data;
    for (let p = 0; p < 65536; p++) {
      let c = (p >= pm.dynamic[0] && p <= pm.dynamic[1]) ? COLORS.dynamic : COLORS.free;
      let faded = false;
      const i = m.owners[p];
      if (i >= 0) {
        const b = state.blocks[i];
        const k = kindOf(b);
        if (f.kinds.has(k)) {
          const bound = b.bound.includes(p);
          c = b.restored ? COLORS.restored : COLORS[bound ? k + "Bound" : k];
          faded = !ownerMatches(b, f.owner);
        }
      } else if (m.inUse[p] && f.kinds.has("foreign")) {
        c = COLORS.foreign;
        faded = !!f.owner;
      } else if (m.excluded[p] && f.kinds.has("excluded")) {
        c = COLORS.excluded;
        faded = !!f.owner;
      }
      const o = p * 4;
      px[o] = c[0]; px[o + 1] = c[1]; px[o + 2] = c[2]; px[o + 3] = faded ? 60 : 255;
    }
    m.ctx.putImageData(m.image, 0, 0);
  }
  renderTable();
}

function renderTable() {
  if (!state) return;
  const f = filters();
  const body = document.querySelector("#blocks tbody");
  body.replaceChildren();
  for (const b of state.blocks) {
    const k = kindOf(b);
    if (!f[b.proto] || !f.kinds.has(k) || !ownerMatches(b, f.owner)) continue;
    const tr = document.createElement("tr");
    tr.className = "kind-" + k;
    tr.dataset.proto = b.proto;
    tr.dataset.start = String(b.start);
    tr.dataset.kind = k;
    if (pinned && !pinned.none && pinned.proto === b.proto && pinned.start === b.start) tr.classList.add("pinned");
    const cells = [b.proto, rangeText(b), k + (b.restored ? " (restored)" : ""), ownerText(b), b.command || "", b.bound.length ? b.bound.join(",") : "-"];
    for (const v of cells) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
    tr.children[4].className = "cmd";
    tr.children[4].title = b.command || "";
    tr.addEventListener("click", () => { pinned = Object.assign({}, b); showDetails(pinned); renderTable(); });
    body.appendChild(tr);
  }
  // Rows that are not portres reservations: the kernel's exclusions made
  // by other software (one list for both protocols) and other programs'
  // sockets on ports outside every reservation.
  const other = (kind, proto, lo, hi, what) => {
    const tr = document.createElement("tr");
    tr.className = "kind-" + kind;
    tr.dataset.kind = kind;
    tr.dataset.proto = proto;
    tr.dataset.start = String(lo);
    const cells = [proto, lo === hi ? String(lo) : lo + "-" + hi, kind, what, "", "-"];
    for (const v of cells) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
    body.appendChild(tr);
  };
  if (f.owner) return;
  for (const pm of state.protos) {
    if (pm.proto === "tcp" && f.kinds.has("excluded")) {
      for (const [lo, hi] of pm.excluded) other("excluded", "tcp+udp", lo, hi, "ip_local_reserved_ports, not portres");
    }
    if (!f[pm.proto] || !f.kinds.has("foreign")) continue;
    const owners = maps[pm.proto] ? maps[pm.proto].owners : null;
    for (const [lo, hi] of pm.in_use) {
      // Split around reservations: a bound port inside a block is the block's.
      let run = -1;
      for (let p = lo; p <= hi + 1; p++) {
        const outside = p <= hi && !(owners && owners[p] >= 0);
        if (outside && run < 0) run = p;
        if (!outside && run >= 0) { other("foreign", pm.proto, run, p - 1, "a socket outside portres"); run = -1; }
      }
    }
  }
}

function setMeta(text, live) {
  const meta = document.getElementById("meta");
  meta.replaceChildren();
  const dot = document.createElement("span");
  dot.className = live ? "live" : "dead";
  dot.textContent = live ? "● live" : "● reconnecting";
  meta.append(dot, document.createTextNode("  " + text));
}

function connect() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("map", ev => {
    state = JSON.parse(ev.data);
    document.body.dataset.updated = state.time;
    setMeta("portresd " + state.version + " · enforcement " + state.enforcement + " · " + state.blocks.length + " reservations · " + new Date(state.time).toLocaleTimeString(), true);
    draw();
  });
  es.onerror = () => setMeta("lost the broker; retrying", false);
}

for (const id of ["f-tcp", "f-udp", "f-owner"]) document.getElementById(id).addEventListener("input", draw);
for (const c of document.querySelectorAll(".f-kind")) c.addEventListener("input", draw);
connect();
