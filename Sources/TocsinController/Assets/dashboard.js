// The network at a glance, live: one snapshot a second from /v1/dashboard/events (server-sent
// events read through fetch, so the admin token can go in the Authorization header).
const $ = (id) => document.getElementById(id);
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) sessionStorage.setItem("tocsin.token", fragment.get("token"));

/** The latest snapshot and how many came, for people and for tests. */
const state = { snapshot: null, updates: 0, connected: false };
window.tocsinDashboard = state;

function token() { return sessionStorage.getItem("tocsin.token") ?? ""; }

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("tocsin.token", $("token").value.trim());
  $("login").hidden = true;
  follow();
});

function live(text, cls) { $("live").textContent = text; $("live").className = `badge ${cls}`; }

async function follow() {
  for (;;) {
    try {
      const response = await fetch("/v1/dashboard/events", { headers: token() ? { Authorization: `Bearer ${token()}` } : {} });
      if (response.status === 401 || response.status === 403) {
        live("needs an admin token", "down");
        $("login").hidden = false;
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      state.connected = true;
      live("live", "live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = message.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) render(JSON.parse(data));
        }
      }
    } catch (e) {
      // The controller restarted or is out of reach: try again.
    }
    state.connected = false;
    live("reconnecting…", "down");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const fmt = (x, digits = 0) => (x === undefined || x === null ? "–" : Number(x).toFixed(digits));
const clock = (ms) => new Date(ms).toLocaleTimeString();

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  if (text instanceof Node) td.append(text); else td.textContent = text;
  tr.append(td);
}

function badge(text, cls) {
  const b = document.createElement("span");
  b.className = `badge ${cls ?? text}`;
  b.textContent = text;
  return b;
}

function fill(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...rows);
}

function log(id, items, line) {
  $(id).replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    const t = document.createElement("time");
    t.textContent = clock(item.at ?? item.atMillis ?? item.createdAtMillis);
    li.append(t, document.createTextNode(line(item)));
    if (item.kind) li.className = item.kind;
    if (item.subject) li.dataset.subject = item.subject;
    return li;
  }));
}

/** Lines (or bars) of `series` over the last samples, in an SVG of 300×100. */
function chart(id, samples, series, bars) {
  const svg = $(id);
  const max = Math.max(1, ...samples.flatMap((s) => series.map((k) => s[k] ?? 0)));
  const n = Math.max(samples.length, 2);
  const x = (i) => (i / (n - 1)) * 300;
  const y = (v) => 100 - (v / max) * 95;
  const parts = [];
  series.forEach((key, k) => {
    if (bars) {
      samples.forEach((s, i) => {
        const v = s[key] ?? 0;
        if (v > 0) parts.push(`<rect class="s${k + 1}" x="${x(i)}" y="${y(v)}" width="${Math.max(1, 300 / n)}" height="${100 - y(v)}"/>`);
      });
    } else {
      const points = samples.map((s, i) => (s[key] === undefined ? null : `${x(i)},${y(s[key])}`)).filter(Boolean).join(" ");
      parts.push(`<polyline class="s${k + 1}" points="${points}"/>`);
    }
  });
  svg.innerHTML = parts.join("");
  return max;
}

function render(s) {
  state.snapshot = s;
  state.updates += 1;
  $("board").hidden = false;
  const totalClients = s.brokers.reduce((a, b) => a + b.load.connections, 0);
  $("summary").textContent = `${s.brokers.length} brokers · ${totalClients} clients · leader ${s.leader ?? "none"} (epoch ${s.epoch}) · configuration v${s.configVersion} · ${clock(s.at)}`;
  const rows = s.brokers.map((b) => {
    const tr = document.createElement("tr");
    tr.dataset.broker = b.id;
    const l = b.load;
    cell(tr, b.id);
    cell(tr, badge(b.state === "active" ? "healthy" : b.state));
    cell(tr, b.region);
    cell(tr, String(l.connections), "n");
    cell(tr, String(l.subscriptions), "n");
    cell(tr, fmt(l.deliveriesPerSecond), "n");
    cell(tr, fmt(l.publishesPerSecond), "n");
    cell(tr, `${fmt(l.cpu * 100)}%`, "n");
    cell(tr, `${fmt(l.latencyP50Millis, 1)} / ${fmt(l.latencyP99Millis, 1)}`, "n");
    cell(tr, b.configVersion === undefined ? "–" : `v${b.configVersion}`);
    return tr;
  });
  for (const g of s.gone) {
    const tr = document.createElement("tr");
    tr.className = "gone";
    tr.dataset.broker = g.id;
    cell(tr, g.id);
    cell(tr, badge("gone"));
    cell(tr, `since ${clock(g.at)}`);
    for (let i = 0; i < 7; i++) cell(tr, "");
    rows.push(tr);
  }
  fill("brokers", rows);
  fill("regions", s.regions.map((r) => {
    const tr = document.createElement("tr");
    cell(tr, r.region); cell(tr, String(r.brokers), "n"); cell(tr, String(r.clients), "n"); cell(tr, String(r.subscriptions), "n");
    return tr;
  }));
  fill("controllers", s.controllers.map((c) => {
    const tr = document.createElement("tr");
    cell(tr, c.urls?.http ?? c.id); cell(tr, badge(c.state)); cell(tr, c.version); cell(tr, c.configVersion === undefined ? "–" : `v${c.configVersion}`);
    return tr;
  }));
  const samples = s.timeline.slice(-120);
  $("ratesMax").textContent = `max ${fmt(chart("rates", samples, ["deliveriesPerSecond", "publishesPerSecond"]))}/s`;
  $("latencyMax").textContent = `max ${fmt(chart("latency", samples, ["p50", "p99"]), 1)} ms`;
  $("movesMax").textContent = `max ${fmt(chart("moves", samples, ["migrations", "failovers"], true))} per second`;
  log("events", s.events, (e) => e.text);
  log("commands", s.commands, (c) => `${c.id} ${c.kind} → ${c.targets.map((t) => `${t.component}: ${t.state}`).join(", ")} (by ${c.by})`);
  log("config", s.configChanges, (c) => `v${c.version} ${c.key}: ${JSON.stringify(c.old)} → ${JSON.stringify(c.new)} (${c.scope.role ?? c.scope.component}, by ${c.by})`);
}

follow();
