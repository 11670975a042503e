#!/usr/bin/env python3
"""End-to-end test of the operators' console in headless Chromium.

Standard library only: events go into the Redis streams over a raw RESP
socket (as the outbox relay writes them), a statement is imported over
HTTP, and Chromium is driven through chromedriver's W3C WebDriver HTTP API.
scripts/browser-test.sh starts channel-accounting and chromedriver first.

usage: console_test.py --base-url URL --redis-url URL --prefix P
                       --webdriver URL --screenshot PATH
"""

import argparse
import base64
import json
import random
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8))
CHANNELS = ["wechat", "kiosk", "phone114", "window", "app", "referral", "clinic"]
# The demo city's four hospitals, then enough district hospitals to make 34.
HOSPITALS = ["pumch", "tongren", "xuanwu", "chaoyang-community"] + [f"district-{n:02d}" for n in range(1, 31)]


class Redis:
    """Just enough RESP to XADD."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=10)
        self.file = self.sock.makefile("rb")
        if u.password:
            self.command("AUTH", *( [u.username, u.password] if u.username else [u.password]))
        if u.path and u.path.strip("/"):
            self.command("SELECT", u.path.strip("/"))

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            data = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        return rest


def publish(redis, prefix, stream, event_type, payload, at):
    envelope = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "aggregate_id": payload.get("booking_id", "agg"),
        "occurred_at": at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "payload": payload,
    }
    redis.command("XADD", f"{prefix}:{stream}", "*", "event_id", envelope["event_id"],
                  "event_type", event_type, "envelope", json.dumps(envelope))


def booking(n, hospital, channel, fee, detail):
    return {
        "schema": 1, "booking_id": f"{hospital}-{n:05d}", "hospital_id": hospital,
        "slot_id": f"{hospital}-slot", "schedule_id": f"{hospital}-sched-{n % 3}",
        "patient_id": str(uuid.uuid4()), "channel": channel, "pool": "general", "status": "confirmed",
        "fee_fen": fee, "payment_method": "self_pay", "visit_date": "2026-12-01", "visit_number": 1,
        "segment_starts_at": "2026-12-01T00:30:00Z", "detail": detail,
    }


def seed(redis, prefix):
    """A morning of traffic; returns (bookings, WeChat payments)."""
    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    start = max(now - timedelta(minutes=40), now.astimezone(BEIJING).replace(hour=0, minute=0, second=1, microsecond=0))
    weights = [40, 33, 9, 6, 6, 3, 3]
    total, wechat_payments = 0, []
    for i, hospital in enumerate(HOSPITALS):
        count = max(2, 40 - i)
        for n in range(count):
            channel = rng.choices(CHANNELS, weights)[0]
            at = start + (now - start) * rng.random()
            fee = 0 if hospital.startswith("district") and n % 2 else 10_000
            ref = f"wx-{hospital}-{n}" if channel == "wechat" and fee else None
            publish(redis, prefix, "events:slot-inventory", "booking.confirmed",
                    booking(n, hospital, channel, fee, {"payment_reference": ref} if ref else {}), at)
            total += 1
            if ref:
                wechat_payments.append((ref, f"{hospital}-{n:05d}", fee))
            if n % 7 == 3:
                publish(redis, prefix, "events:slot-inventory", "booking.no_show", booking(n, hospital, channel, fee, {}), at)
            elif n % 3 == 0:
                publish(redis, prefix, "events:slot-inventory", "booking.checked_in", booking(n, hospital, channel, fee, {}), at)
        publish(redis, prefix, "events:slot-inventory", "waitlist.capacity_requested",
                {"schema": 1, "hospital_id": hospital, "schedule_id": f"{hospital}-sched-0", "waiting": 40 - i}, now)
        minute = now.replace(second=0, microsecond=0).isoformat()
        publish(redis, prefix, "events:slot-inventory", "attempts.tallied",
                {"schema": 1, "hospital_id": hospital, "channel": "wechat", "minute": minute,
                 "attempts": 300 - i, "sold_out": 250 - i}, now)
    return total, wechat_payments


def http(method, url, body=None, headers=None):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            text = res.read().decode()
            return res.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, (json.loads(text) if text else None)


def wait_until(what, check, seconds=30):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except (urllib.error.URLError, KeyError, RuntimeError) as e:
            last = e
        time.sleep(0.25)
    sys.exit(f"FAIL: timed out waiting for {what} (last: {last})")


class Browser:
    """A W3C WebDriver session on chromedriver."""

    def __init__(self, webdriver):
        self.base = webdriver
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1800", "--lang=zh-CN"],
            },
        }}}
        status, body = http("POST", f"{self.base}/session", json.dumps(caps), {"Content-Type": "application/json"})
        if status != 200:
            sys.exit(f"FAIL: could not start Chromium: {body}")
        self.session = f"{self.base}/session/{body['value']['sessionId']}"

    def call(self, method, path, payload=None):
        status, body = http(method, self.session + path, json.dumps(payload) if payload is not None else None,
                            {"Content-Type": "application/json"})
        if status != 200:
            raise RuntimeError(f"{method} {path}: {body}")
        return body["value"]

    def find(self, css):
        el = self.call("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(el.values()))

    def text(self, css):
        return self.call("GET", f"/element/{self.find(css)}/text")

    def type(self, css, text):
        self.call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css):
        self.call("POST", f"/element/{self.find(css)}/click", {})

    def script(self, source):
        return self.call("POST", "/execute/sync", {"script": source, "args": []})

    def quit(self):
        try:
            http("DELETE", self.session)
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    for arg in ["--base-url", "--redis-url", "--prefix", "--webdriver", "--screenshot"]:
        ap.add_argument(arg, required=True)
    a = ap.parse_args()

    redis = Redis(a.redis_url)
    bookings, payments = seed(redis, a.prefix)
    print(f"seeded {bookings} bookings at {len(HOSPITALS)} hospitals", flush=True)

    # Reconcile WeChat's day: drop one payment, change one amount.
    status, login = http("POST", a.base_url + "/v1/operators/login",
                         json.dumps({"login": "city", "password": "demo-city-password"}),
                         {"Content-Type": "application/json"})
    assert status == 200, login
    auth = {"Authorization": "Bearer " + login["token"]}
    today = datetime.now(BEIJING).date().isoformat()
    wait_until("bookings counted", lambda: http("GET", f"{a.base_url}/v1/console/overview?date={today}",
                                                  headers=auth)[1]["totals"]["bookings"] == bookings)
    lines = ["trade_time,channel_transaction_id,platform_order_id,amount_fen,status,refund_fen"]
    for i, (ref, order, fee) in enumerate(payments[1:]):
        lines.append(f"{today} 08:30:00,{ref},{order},{fee - 100 if i == 0 else fee},paid,0")
    status, report = http("POST", f"{a.base_url}/v1/reconciliation/statements?channel=wechat&date={today}",
                          "\r\n".join(lines) + "\r\n", dict(auth, **{"Content-Type": "text/csv"}))
    assert status == 200, report
    assert len(report["mismatches"]) == 2, report

    browser = Browser(a.webdriver)
    try:
        browser.call("POST", "/url", {"url": a.base_url + "/console"})
        browser.type("#login", "city")
        browser.type("#password", "demo-city-password")
        browser.click("#login-button")
        shown = f"{bookings:,}"
        wait_until(f"{shown} bookings on the page", lambda: browser.text("#total-bookings") == shown)
        rows = browser.script("return document.querySelectorAll('#hospitals tbody tr').length")
        assert rows == len(HOSPITALS), f"{rows} hospital rows"
        first = browser.text("#hospitals tbody tr:first-child td:first-child")
        assert first == "pumch", f"busiest hospital first, got {first}"
        recon = browser.text("#statements")
        assert "2 mismatches" in recon and "amount_differs" in recon and "missing_at_channel" in recon, recon
        painted = browser.script(
            "const c = document.getElementById('minutes-chart');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;")
        assert painted > 500, f"the bookings-per-minute chart is empty ({painted} pixels)"
        png = base64.b64decode(browser.call("GET", "/screenshot"))
        with open(a.screenshot, "wb") as f:
            f.write(png)
        print(f"console shows {shown} bookings at {rows} hospitals; screenshot {a.screenshot}", flush=True)
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
