"""The dashboard and the browser client in a real headless browser (Debian's chromium driven by
Playwright), against a real `tocsin dev --enable-chaos` network:

1. the demo page ("alerts near me", tocsin.js) subscribes from the browser's (mocked) position
   and receives the events a publisher sends near it;
2. the dashboard shows three healthy brokers and the demo's client on one of them;
3. that broker is SIGKILLed through the chaos API;
4. the dashboard shows it gone and the client on another broker; the demo page moved and
   received every acknowledged event, with no gap and no duplicate.

Usage: dashboard_failover.py TOCSIN_BINARY WORK_DIR [SCREENSHOT]. Exits non-zero, saying why,
when anything is not so. Run by IntegrationTests' BrowserTests (swift test).
"""

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from playwright.sync_api import sync_playwright

TOCSIN, WORK = sys.argv[1], sys.argv[2]
SCREENSHOT = sys.argv[3] if len(sys.argv) > 3 else None
DEADLINE = 60  # seconds, for each wait


def fail(message):
    print("FAILED: " + message, flush=True)
    raise SystemExit(1)


def wait(what, condition, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    fail("timed out waiting for " + what)


def http(method, url, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", "Bearer " + token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {url}: {e.code} {e.read()[:200]!r}")


def start_dev():
    dev = subprocess.Popen(
        [TOCSIN, "dev", "--port", "0", "--brokers", "3", "--enable-chaos", "--data-dir", WORK + "/data",
         "--log-level", "warning", "--no-fsync"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in dev.stdout], daemon=True).start()
    controller = admin = chaos = None
    end = time.monotonic() + DEADLINE
    while not (controller and admin and chaos):
        if time.monotonic() > end:
            dev.kill()
            fail("tocsin dev did not start")
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if m := re.match(r"controller-1\s+(\S+)", line):
            controller = m.group(1)
        if m := re.search(r"TOCSIN_TOKEN=(\S+)", line):
            admin = m.group(1)
        if m := re.search(r"chaos API listening on (\S+)", line):
            chaos = m.group(1)
    return dev, controller, admin, chaos


def main():
    dev, controller, admin, chaos = start_dev()
    acknowledged = []
    publishing = threading.Event()
    stop = threading.Event()

    def publisher():
        """Publishes a fire near the page every 100 ms through any live broker; records the seqs acknowledged."""
        n = 0
        while not stop.is_set():
            if not publishing.is_set():
                time.sleep(0.05)
                continue
            n += 1
            event = {"kind": "fire", "severity": 3, "location": {"lat": 52.371, "lon": 4.895}, "area": "Amsterdam",
                     "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
            try:
                brokers = http("GET", controller + "/v1/cluster", admin)["brokers"]
                for b in brokers:
                    try:
                        reply = http("POST", b["httpURL"] + "/v1/streams/emergencies/events", admin, event)
                        acknowledged.append(reply["seq"])
                        break
                    except Exception:
                        continue
            except Exception:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    try:
        token = subprocess.run(
            [TOCSIN, "token", "--keys", WORK + "/data/auth-keys.json", "--client", "browser-1", "--scope", "subscribe:*", "--scope", "discovery"],
            check=True, capture_output=True, text=True).stdout.strip()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            context = browser.new_context(
                geolocation={"latitude": 52.37, "longitude": 4.89}, permissions=["geolocation"], viewport={"width": 1400, "height": 1100},
                # The pages forbid eval (CSP); the test's own probes need it.
                bypass_csp=True)
            demo = context.new_page()
            demo.goto(f"{controller}/demo#client=browser-1&token={token}&radius=25&start")
            demo.wait_for_function("window.tocsinDemo && window.tocsinDemo.broker", timeout=DEADLINE * 1000)
            dashboard = context.new_page()
            dashboard.goto(f"{controller}/ui#token={admin}")
            dashboard.wait_for_function("window.tocsinDashboard && window.tocsinDashboard.updates > 0", timeout=DEADLINE * 1000)

            publishing.set()
            wait("20 notifications in the demo page", lambda: demo.evaluate("window.tocsinDemo.notifications") >= 20)
            victim = demo.evaluate("window.tocsinDemo.broker")
            print(f"the demo page is on {victim}; {demo.evaluate('window.tocsinDemo.notifications')} notifications so far", flush=True)
            # The dashboard: three healthy brokers, the demo's client on the victim.
            wait("the dashboard to show 3 healthy brokers and the client on " + victim, lambda: dashboard.evaluate(
                f"""(() => {{
                    const rows = [...document.querySelectorAll('#brokers tbody tr')];
                    const healthy = rows.filter(r => r.querySelector('.badge.healthy')).length;
                    const victim = rows.find(r => r.dataset.broker === '{victim}');
                    return healthy === 3 && victim && Number(victim.children[3].textContent) >= 1;
                }})()"""))

            killed = http("POST", chaos + "/v1/chaos", admin, {"action": "kill", "target": victim})
            print("killed " + json.dumps(killed["worker"]), flush=True)
            moved_to = wait("the demo page to move off " + victim, lambda: (
                lambda b: b if b and b != victim and demo.evaluate("window.tocsinDemo.disconnects") >= 1 else None)(
                demo.evaluate("window.tocsinDemo.broker")))
            print(f"the demo page moved to {moved_to}", flush=True)
            wait(f"the dashboard to show {victim} gone and the client on {moved_to}", lambda: dashboard.evaluate(
                f"""(() => {{
                    const gone = document.querySelector('#events li.gone[data-subject="{victim}"]');
                    const row = [...document.querySelectorAll('#brokers tbody tr')].find(r => r.dataset.broker === '{moved_to}');
                    return !!gone && row && Number(row.children[3].textContent) >= 1;
                }})()"""))
            # Let the dashboard draw the failover, then photograph it.
            wait("a sample after the failover", lambda: dashboard.evaluate(
                "window.tocsinDashboard.snapshot.timeline.some(s => s.failovers > 0)"))
            if SCREENSHOT:
                dashboard.screenshot(path=SCREENSHOT, full_page=True)
                print("screenshot: " + SCREENSHOT, flush=True)

            time.sleep(2)  # keep publishing across the new broker for a moment (a load, not a wait for a condition)
            publishing.clear()
            stop.set()
            thread.join()
            expected = sorted(set(acknowledged))
            if len(expected) < 30:
                fail(f"only {len(expected)} events were acknowledged")
            seen = wait("every acknowledged event in the demo page",
                        lambda: (lambda s: s if set(expected) <= set(s) else None)(demo.evaluate("window.tocsinDemo.seqs")))
            if any(b <= a for a, b in zip(seen, seen[1:])):
                fail("the demo page saw a seq out of order or twice")
            if demo.evaluate("window.tocsinDemo.errors.length"):
                fail("the demo page saw errors: " + json.dumps(demo.evaluate("window.tocsinDemo.errors")))
            print(f"ok: {len(expected)} events acknowledged, all received in order by the page across the kill of {victim}", flush=True)
            browser.close()
    finally:
        stop.set()
        dev.terminate()
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()


main()
