// "Alerts near me": the browser's position, a durable subscription to EmergenciesNearMe
// through tocsin.js, and every notification as it arrives. Settings may come in the URL's
// fragment (never sent to a server): #client=alice&token=eyJ…&radius=25&start
import { Subscriber } from "/tocsin.js";

const $ = (id) => document.getElementById(id);
const fragment = new URLSearchParams(location.hash.slice(1));
$("client").value = fragment.get("client") ?? localStorage.getItem("tocsin.client") ?? `browser-${crypto.randomUUID().slice(0, 8)}`;
$("token").value = fragment.get("token") ?? "";
if (fragment.get("radius")) $("radius").value = fragment.get("radius");

/** What the page has seen, for people and for tests. */
const state = { broker: null, seqs: [], notifications: 0, connections: 0, migrations: 0, disconnects: 0, errors: [], position: null };
window.tocsinDemo = state;

function status(text, cls) {
  $("status").textContent = text;
  $("status").className = cls ?? "";
}

function position() {
  return new Promise((resolve, reject) => {
    if (!navigator.geolocation) { reject(new Error("this browser has no geolocation")); return; }
    navigator.geolocation.getCurrentPosition((p) => resolve({ lat: p.coords.latitude, lon: p.coords.longitude }), reject, { timeout: 10000 });
  });
}

async function start() {
  const client = $("client").value.trim();
  localStorage.setItem("tocsin.client", client);
  status("finding where you are…");
  let where;
  try {
    where = await position();
  } catch (e) {
    status(`no position: ${e.message}`, "down");
    return;
  }
  state.position = where;
  const token = $("token").value.trim() || undefined;
  const radiusKm = Number($("radius").value);
  const subscriber = new Subscriber(
    { seeds: [location.origin], client, token, location: where },
    [{ channel: "EmergenciesNearMe", params: { lat: where.lat, lon: where.lon, radiusKm } }]);
  subscriber.addEventListener("connected", (e) => {
    state.broker = e.detail.broker;
    state.connections += 1;
    status(`live on ${e.detail.broker}: emergencies within ${radiusKm} km of ${where.lat.toFixed(3)}, ${where.lon.toFixed(3)}`, "live");
  });
  subscriber.addEventListener("migrated", (e) => {
    state.broker = e.detail.to;
    state.migrations += 1;
    status(`live on ${e.detail.to} (moved from ${e.detail.from}: ${e.detail.reason})`, "live");
  });
  subscriber.addEventListener("disconnected", (e) => {
    state.disconnects += 1;
    status(`${e.detail.broker} lost (${e.detail.reason}); reconnecting — nothing will be missed`, "down");
  });
  subscriber.addEventListener("error", (e) => state.errors.push(e.detail));
  subscriber.addEventListener("notRecovered", () => state.errors.push({ code: "not_recovered" }));
  subscriber.addEventListener("notification", (e) => {
    const n = e.detail;
    state.notifications += 1;
    state.seqs.push(n.seq);
    const ev = n.event ?? {};
    const li = document.createElement("li");
    li.className = `sev-${ev.severity ?? 0}`;
    li.innerHTML = `<strong></strong> <span class="meta"></span>`;
    li.querySelector("strong").textContent = `${ev.kind ?? "event"} (severity ${ev.severity ?? "?"}) ${ev.area ? "in " + ev.area : ""}`;
    li.querySelector(".meta").textContent = `#${n.seq} · ${ev.time ?? ""} · via ${n.broker}`;
    $("alerts").prepend(li);
    while ($("alerts").children.length > 200) $("alerts").lastChild.remove();
  });
  subscriber.start();
  window.tocsinSubscriber = subscriber;
}

$("setup").addEventListener("submit", (e) => { e.preventDefault(); $("setup").hidden = true; start(); });
if (fragment.has("start")) { $("setup").hidden = true; start(); }
