// Tocsin's browser client: one ES module, no build step, no dependencies.
//
// The same semantics as the Swift library (docs/protocol.md, "Writing a client: checklist"):
// locate a broker through the controller (`/v1/cluster`, `/v1/assign`), say `hello` with a
// stable client id, resume every durable subscription from its stored cursor, drop duplicates
// by seq, acknowledge what the application has seen, follow `migrate` make-before-break, and
// after a lost connection come back with exponential backoff and full jitter, excluding the
// broker that failed. Nothing acknowledged is lost across a broker's death.
//
//   import { Subscriber } from "/tocsin.js";
//   const s = new Subscriber({ seeds: [location.origin], client: "alice", token },
//                            [{ channel: "EmergenciesNearMe", params: { lat, lon, radiusKm: 25 } }]);
//   s.addEventListener("notification", (e) => show(e.detail));
//   s.start();

/**
 * @typedef {Object} SubscriptionRequest
 * @property {string} channel
 * @property {Object<string, any>} [params]
 * @property {"latest"|"earliest"|{epoch: string, seq: number}|{since: string|number}} [from]
 *   Where a new subscription starts (later connections resume from the stored cursor).
 */

/**
 * @typedef {Object} SubscriberOptions
 * @property {string[]} seeds Any nodes of the network: the controller or brokers (their HTTP URLs).
 * @property {string} client A stable client id of your own: the identity of the durable subscriptions.
 * @property {string|(() => (string|Promise<string>))} [token] A token with `subscribe:` and `discovery`, or a function giving a fresh one.
 * @property {string} [region] The region to be placed in.
 * @property {{lat: number, lon: number}} [location] Where the client is, for the nearest region.
 * @property {number} [initialBackoffMs] The first reconnect delay's ceiling (1000).
 * @property {number} [maxBackoffMs] The largest reconnect delay's ceiling (10000).
 * @property {number} [ackIntervalMs] How often acknowledgements go out (200).
 * @property {number} [pingIntervalMs] How often the broker is pinged; two missed answers mean it is gone (15000).
 * @property {number} [moveTimeoutMs] A migration that has not finished within this falls back to reconnecting (5000).
 */

/**
 * @typedef {Object} Notification
 * @property {string} subscription The durable subscription id.
 * @property {string} channel
 * @property {number} seq The position this notification brings the subscription to.
 * @property {Object} [event] The event (continuous push).
 * @property {{seq: number, event: Object}[]} [events] The events (repetitive push).
 * @property {number} [count] Matches up to `seq` (notify delivery: fetch them).
 * @property {Object} [enriched] Enrichment records, per clause.
 * @property {string} broker The broker it came from.
 */

/** Thrown for a refusal a broker or controller answered with: a stable `code` and a human message. */
export class TocsinError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "TocsinError";
    /** @type {string} */
    this.code = code;
  }
}

/**
 * Finds the broker `client` should use: asks each seed for the discovery list, then its
 * controller for an assignment. Falls back to a broker of the list (the highest hash of
 * `client@id`) when no controller answers.
 * @param {string[]} seeds
 * @param {string} client
 * @param {{token?: string, exclude?: string[], region?: string, location?: {lat: number, lon: number}}} [options]
 * @returns {Promise<{id: string, wsURL: string, httpURL: string}>}
 */
export async function locate(seeds, client, options = {}) {
  const headers = options.token ? { Authorization: `Bearer ${options.token}` } : {};
  const exclude = options.exclude ?? [];
  let lastError = new TocsinError("unavailable", "no seed given");
  for (const seed of seeds) {
    const base = seed.replace(/\/+$/, "");
    try {
      const cluster = await getJSON(`${base}/v1/cluster`, headers);
      const controller = cluster.controller ?? (cluster.brokers?.length === 1 ? null : base);
      if (controller) {
        const q = new URLSearchParams({ client });
        if (options.region) q.set("region", options.region);
        if (options.location) { q.set("lat", String(options.location.lat)); q.set("lon", String(options.location.lon)); }
        if (exclude.length) q.set("exclude", exclude.join(","));
        try {
          const reply = await getJSON(`${controller.replace(/\/+$/, "")}/v1/assign?${q}`, headers);
          return reply.broker;
        } catch (e) {
          lastError = e;
        }
      }
      const candidates = (cluster.brokers ?? []).filter((b) => b.state === "active" && !exclude.includes(b.id));
      const pool = candidates.length ? candidates : (cluster.brokers ?? []);
      if (pool.length) return pool.reduce((best, b) => (hash(`${client}@${b.id}`) > hash(`${client}@${best.id}`) ? b : best));
    } catch (e) {
      lastError = e;
    }
  }
  throw lastError;
}

/** @param {string} url @param {Object<string,string>} headers */
async function getJSON(url, headers) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 5000);
  try {
    const response = await fetch(url, { headers, signal: controller.signal });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new TocsinError(body?.error?.code ?? "internal", body?.error?.message ?? `${url}: HTTP ${response.status}`);
    return body;
  } finally {
    clearTimeout(timer);
  }
}

/** FNV-1a, 32 bits. @param {string} text */
function hash(text) {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) { h ^= byte; h = Math.imul(h, 0x01000193) >>> 0; }
  return h;
}

/**
 * A durable subscriber. Events (an `EventTarget`): `notification` (detail: `Notification`),
 * `connected` ({broker}), `migrated` ({from, to, reason}), `disconnected` ({broker, reason}),
 * `subscribed` ({subscription, channel, epoch, seq, recovered}), `notRecovered` (the same: some
 * events were gone, retention passed the position), `error` ({code, message}).
 */
export class Subscriber extends EventTarget {
  /** @param {SubscriberOptions} options @param {SubscriptionRequest[]} requests */
  constructor(options, requests) {
    super();
    this.options = { initialBackoffMs: 1000, maxBackoffMs: 10000, ackIntervalMs: 200, pingIntervalMs: 15000, moveTimeoutMs: 5000, ...options };
    /** @type {SubscriptionRequest[]} */
    this.requests = requests;
    /** Per subscription id: {epoch, seq, channel}: the last position handed to the application. */
    this.positions = new Map();
    /** Per subscription id: the highest seq to acknowledge. */
    this.pendingAcks = new Map();
    /** The broker delivering now (id), or null. */
    this.broker = null;
    this.running = false;
    this.failures = 0;
    /** @type {Connection|null} */
    this.connection = null;
    /** A migration is in progress. */
    this.moving = false;
    this.firstRun = true;
  }

  /** Starts (and keeps) the subscriber connected. */
  start() {
    if (this.running) return;
    this.running = true;
    this.ackTimer = setInterval(() => this.flushAcks(), this.options.ackIntervalMs);
    this.connect([]);
  }

  /** Stops: acknowledges what was seen and closes. */
  stop() {
    this.running = false;
    this.flushAcks();
    clearInterval(this.ackTimer);
    this.connection?.close();
    this.connection = null;
  }

  async token() {
    const t = this.options.token;
    return typeof t === "function" ? await t() : t;
  }

  /** @param {string[]} exclude */
  async connect(exclude) {
    while (this.running) {
      try {
        const token = await this.token();
        const broker = await locate(this.options.seeds, this.options.client, { token, exclude, region: this.options.region, location: this.options.location });
        const connection = await this.open(broker, token, this.firstRun);
        if (!this.running) { connection.close(); return; }
        this.connection = connection;
        this.broker = broker.id;
        this.failures = 0;
        this.firstRun = false;
        this.dispatchEvent(new CustomEvent("connected", { detail: { broker: broker.id } }));
        return;
      } catch (e) {
        this.failures += 1;
        const err = /** @type {any} */ (e);
        if (err?.broker) exclude = [...new Set([...exclude, err.broker])];
        const ceiling = Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** Math.min(this.failures - 1, 16));
        await sleep(Math.random() * ceiling);
      }
    }
  }

  /**
   * Opens a connection to `broker`, says hello and subscribes to every request; resolves once
   * every subscription is confirmed.
   * @param {{id: string, wsURL: string}} broker @param {string|undefined} token @param {boolean} first
   * @returns {Promise<Connection>}
   */
  open(broker, token, first) {
    return new Promise((resolve, reject) => {
      const connection = new Connection(this, broker, token);
      const timer = setTimeout(() => { connection.close(); reject(Object.assign(new TocsinError("timeout", `${broker.id} did not answer in time`), { broker: broker.id })); }, this.options.moveTimeoutMs * 2);
      connection.onReady = () => { clearTimeout(timer); resolve(connection); };
      connection.onFailed = (error) => { clearTimeout(timer); reject(Object.assign(error, { broker: broker.id })); };
      connection.start(first);
    });
  }

  /** A notification from `connection`: dropped if not newer than the last one, else handed out. */
  deliver(connection, frame) {
    const position = this.positions.get(frame.subscription);
    if (position && frame.seq <= position.seq) return;
    let events = frame.events;
    if (events && position) events = events.filter((e) => e.seq > position.seq);
    this.positions.set(frame.subscription, { epoch: position?.epoch, seq: frame.seq, channel: position?.channel ?? connection.channels.get(frame.subscription) });
    const detail = { subscription: frame.subscription, channel: position?.channel ?? connection.channels.get(frame.subscription), seq: frame.seq, broker: connection.broker.id };
    if (frame.event !== undefined) detail.event = frame.event;
    if (events) detail.events = events;
    if (frame.count !== undefined) detail.count = frame.count;
    if (frame.enriched !== undefined) detail.enriched = frame.enriched;
    this.dispatchEvent(new CustomEvent("notification", { detail }));
    // Handed to the application's listeners (synchronously): acknowledge it.
    this.pendingAcks.set(frame.subscription, frame.seq);
  }

  /** A `subscribed` (or a welcome entry): the position delivery continues after. */
  confirmed(connection, s) {
    const known = this.positions.get(s.subscription);
    if (!known || known.epoch !== s.epoch) {
      this.positions.set(s.subscription, { epoch: s.epoch, seq: s.seq, channel: s.channel });
    } else if (s.seq > known.seq) {
      known.seq = s.seq;
    }
    connection.channels.set(s.subscription, s.channel);
    this.dispatchEvent(new CustomEvent("subscribed", { detail: s }));
    if (s.recovered === false) this.dispatchEvent(new CustomEvent("notRecovered", { detail: s }));
  }

  flushAcks() {
    const connection = this.connection;
    if (!connection || !connection.open) return;
    for (const [subscription, seq] of this.pendingAcks) connection.send({ type: "ack", subscription, seq });
    this.pendingAcks.clear();
  }

  /** The connection delivering now was lost: come back through `assign`, excluding its broker. */
  lost(connection, reason) {
    if (connection !== this.connection) return;
    this.connection = null;
    this.broker = null;
    this.dispatchEvent(new CustomEvent("disconnected", { detail: { broker: connection.broker.id, reason } }));
    if (this.running && !this.moving) this.connect([connection.broker.id]);
  }

  /** `migrate`: open the new connection while the old one keeps delivering, then close the old one. */
  async migrate(connection, frame) {
    if (connection !== this.connection || this.moving) return;
    const from = connection.broker.id;
    const target = { id: frame.broker, wsURL: frame.to };
    this.moving = true;
    try {
      const next = await this.open(target, await this.token(), false);
      this.moving = false;
      if (!this.running) { next.close(); return; }
      this.flushAcks();
      this.connection = next;
      this.broker = target.id;
      connection.close();
      this.dispatchEvent(new CustomEvent("migrated", { detail: { from, to: target.id, reason: frame.reason } }));
    } catch (e) {
      // The move failed: close the old connection too and come back through assign.
      this.moving = false;
      connection.close();
      if (this.connection === connection) this.connection = null;
      if (this.running && !this.connection) {
        this.dispatchEvent(new CustomEvent("disconnected", { detail: { broker: from, reason: "migration failed" } }));
        this.connect([from, target.id]);
      }
    }
  }
}

/** One WebSocket to one broker. */
class Connection {
  /** @param {Subscriber} owner @param {{id: string, wsURL: string}} broker @param {string|undefined} token */
  constructor(owner, broker, token) {
    this.owner = owner;
    this.broker = broker;
    this.token = token;
    this.open = false;
    this.closed = false;
    this.nextID = 1;
    /** Subscription ids to channels, as this connection learnt them. */
    this.channels = new Map();
    this.waiting = new Set();
    this.onReady = () => {};
    this.onFailed = (_) => {};
    this.ready = false;
    this.lastPong = Date.now();
  }

  start(first) {
    const protocols = this.token ? ["tocsin", `bearer.${this.token}`] : ["tocsin"];
    const ws = new WebSocket(this.broker.wsURL, protocols);
    this.ws = ws;
    ws.onopen = () => {
      this.open = true;
      this.send({ type: "hello", id: "hello", client: this.owner.options.client });
    };
    ws.onmessage = (m) => this.receive(JSON.parse(m.data), first);
    ws.onclose = (e) => this.ended(`closed (${e.code}${e.reason ? ": " + e.reason : ""})`);
    ws.onerror = () => this.ended("connection error");
    this.pinger = setInterval(() => {
      if (Date.now() - this.lastPong > 2 * this.owner.options.pingIntervalMs) { this.ws.close(); this.ended("no answer to pings"); return; }
      this.send({ type: "ping", id: "ping" });
    }, this.owner.options.pingIntervalMs);
  }

  send(frame) {
    if (this.open && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  close() {
    this.closed = true;
    clearInterval(this.pinger);
    try { this.ws?.close(1000); } catch {}
  }

  ended(reason) {
    if (this.closed && !this.open) return;
    const wasOpen = this.open;
    this.open = false;
    this.closed = true;
    clearInterval(this.pinger);
    if (!this.ready) { this.onFailed(new TocsinError("unavailable", `${this.broker.id}: ${reason}`)); return; }
    if (wasOpen) this.owner.lost(this, reason);
  }

  receive(frame, first) {
    switch (frame.type) {
      case "welcome":
        for (const s of frame.subscriptions ?? []) this.owner.confirmed(this, s);
        for (const r of this.owner.requests) {
          const id = `sub-${this.nextID++}`;
          this.waiting.add(id);
          const request = { type: "subscribe", id, channel: r.channel, params: r.params ?? {} };
          if (first && r.from !== undefined) request.from = r.from;
          this.send(request);
        }
        if (this.waiting.size === 0) this.becomeReady();
        break;
      case "subscribed":
        this.owner.confirmed(this, frame);
        if (frame.id && this.waiting.delete(frame.id) && this.waiting.size === 0) this.becomeReady();
        break;
      case "notify":
        this.owner.deliver(this, frame);
        break;
      case "migrate":
        this.owner.migrate(this, frame);
        break;
      case "pong":
        this.lastPong = Date.now();
        break;
      case "token_expiring":
        if (typeof this.owner.options.token === "function") {
          this.owner.token().then((token) => this.send({ type: "refresh", id: "refresh", token }));
        }
        break;
      case "error":
        this.lastPong = Date.now();
        if (!this.ready && (frame.id === "hello" || (frame.id && this.waiting.has(frame.id)))) {
          this.close();
          this.onFailed(new TocsinError(frame.code, frame.message));
          return;
        }
        this.owner.dispatchEvent(new CustomEvent("error", { detail: { code: frame.code, message: frame.message } }));
        break;
      default:
        break;
    }
  }

  becomeReady() {
    if (this.ready) return;
    this.ready = true;
    this.onReady();
  }
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
