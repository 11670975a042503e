#!/usr/bin/env python3
"""End-to-end test of the operators' console in headless Chromium.

Standard library only: events go into the Redis streams over a raw RESP
socket (as the outbox relay writes them), a statement is imported over
HTTP, and Chromium is driven through chromedriver's W3C WebDriver HTTP API.
scripts/browser-test.sh starts channel-accounting and chromedriver first.

Every page (overview, surge, 加号 requests, audit trail) is visited at 34
hospitals, as the city operator and as one hospital's operator (who must
never see another hospital), and screenshotted into --screenshots; the
screenshots are checked: CJK text is drawn as glyphs, not as boxes.

With --city (the JSON line tests/examples/console_city.rs prints: a console
wired to a real gateway, hospitals and card-issuing), it also works the
relay's pages: an appeal waived with a reason, 加号 from a capacity request,
the dead letters, and the audit trail naming the operator.

usage: console_test.py --base-url URL --redis-url URL --prefix P
                       --webdriver URL --screenshots DIR
                       --hospital-login LOGIN --hospital-password PW [--city JSON]
"""

import argparse
import base64
import csv
import io
import json
import os
import random
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
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


def seed(redis, prefix, release):
    """A morning of traffic, with a release burst in the minute `release`;
    returns (bookings, WeChat payments)."""
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
                {"schema": 1, "hospital_id": hospital, "schedule_id": f"{hospital}-sched-0", "waiting": 40 - i,
                 "schedule": {"external_id": f"S{i:03d}-AM", "doctor_external_id": f"D{i:03d}",
                              "visit_date": now.astimezone(BEIJING).date().isoformat(), "session": "am"},
                 "segment_ids": [str(uuid.uuid4())]}, now)
        minute = release
        # The release instant: a burst of attempts in the minute's first
        # seconds, wechat and kiosk, fading out.
        for channel, share in (("wechat", 1.0), ("kiosk", 0.6)):
            seconds = [[s, int((300 - i * 5) * share / (1 + s)), int((250 - i * 5) * share / (1 + s))] for s in range(0, 40)]
            publish(redis, prefix, "events:slot-inventory", "attempts.tallied",
                    {"schema": 1, "hospital_id": hospital, "channel": channel, "minute": minute.isoformat(),
                     "attempts": sum(x[1] for x in seconds), "sold_out": sum(x[2] for x in seconds),
                     "seconds": seconds}, now)
    return total, wechat_payments


def seed_surge_and_audit(redis, prefix, release):
    """Seats taken in the seconds after `release`, 加号 answers and the
    audit trail's changes; returns the pumch slot whose provenance is asked."""
    rng = random.Random(11)
    for i, hospital in enumerate(HOSPITALS):
        for n in range(max(1, 12 - i // 3)):
            at = release + timedelta(seconds=rng.choice([0, 0, 0, 1, 1, 2, 3, 5]))
            channel = rng.choice(["wechat", "kiosk"])
            publish(redis, prefix, "events:slot-inventory", "booking.held",
                    booking(90000 + n, hospital, channel, 10_000, {}), at)
    pumch_slot = None
    for i, hospital in enumerate(HOSPITALS[:8]):
        schedule = f"{hospital}-sched-0"
        segment = str(uuid.uuid4())
        slot = f"{hospital}-{segment}"
        pumch_slot = pumch_slot or slot
        # After the requests (made "now" by seed()), so that they answer them.
        at = datetime.now(timezone.utc) + timedelta(seconds=i)
        # Half the hospitals answer their 加号 request.
        if i % 2 == 0:
            publish(redis, prefix, "events:slot-inventory", "segment.capacity_changed",
                    {"schema": 1, "hospital_id": hospital, "schedule_id": schedule, "segment_id": segment,
                     "slot_id": slot, "capacity_before": 20, "capacity": 26,
                     "actor": f"gateway/hospital-key:{hospital}-his"}, at)
        if i == 0:
            publish(redis, prefix, "events:slot-inventory", "schedule.stopped",
                    {"schema": 1, "hospital_id": hospital, "schedule_id": schedule, "reason": "专家临时出诊任务",
                     "stopped_bookings": 3, "slot_ids": [slot], "actor": f"gateway/hospital-key:{hospital}-his"},
                    at + timedelta(seconds=30))
        publish(redis, prefix, "events:card-issuing", "standing.waived",
                {"person_id": str(uuid.uuid4()), "hospital_id": hospital, "no_show_event_id": str(uuid.uuid4()),
                 "reason": "医院停诊导致爽约", "actor": "operator:city"}, at + timedelta(seconds=40))
    return pumch_slot


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


def png_pixels(data):
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)
    into (width, height, rows of (r, g, b) tuples)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and colour in (2, 6) and interlace == 0, "unexpected PNG format"
            channels = 4 if colour == 6 else 3
        elif kind == b"IDAT":
            idat += chunk
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, channels)])
        prev = line
    return width, height, rows


def ink(rows):
    """The set of dark pixel positions: where a glyph was drawn."""
    return frozenset((x, y) for y, row in enumerate(rows) for x, (r, g, b) in enumerate(row) if r + g + b < 384)


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

    def script(self, source, *args):
        return self.call("POST", "/execute/sync", {"script": source, "args": list(args)})

    def script_async(self, source):
        return self.call("POST", "/execute/async", {"script": source, "args": []})

    def clear(self, css):
        self.call("POST", f"/element/{self.find(css)}/clear", {})

    def screenshot(self, path):
        png = base64.b64decode(self.call("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)
        return png

    def element_png(self, css):
        return base64.b64decode(self.call("GET", f"/element/{self.find(css)}/screenshot"))

    def quit(self):
        try:
            http("DELETE", self.session)
        except OSError:
            pass


def check_glyphs(browser):
    """CJK fonts are installed and used: 京, 医 and 通, drawn in the
    console's own font stack, are each inked, differ from one another and
    from the box a font without the character draws (a private-use code
    point, which no font has)."""
    browser.script(
        "const d = document.createElement('div'); d.id = 'glyph-probe';"
        "d.style.cssText = 'position:fixed;top:0;left:0;font-size:40px;background:#fff;color:#000;z-index:99';"
        "for (const [i, c] of ['京', '医', '通', '\\ue000'].entries()) {"
        "  const s = document.createElement('span'); s.id = 'glyph-' + i; s.textContent = c; d.appendChild(s); }"
        "document.body.appendChild(d);")
    try:
        shots = [browser.element_png(f"#glyph-{i}") for i in range(4)]
    finally:
        browser.script("document.getElementById('glyph-probe').remove();")
    inks = [ink(png_pixels(png)[2]) for png in shots]
    for char, glyph in zip("京医通", inks[:3]):
        assert len(glyph) > 40, f"{char} has no ink ({len(glyph)} dark pixels)"
        assert glyph != inks[3], f"{char} is drawn as the missing-glyph box: no CJK font"
    assert len({inks[0], inks[1], inks[2]}) == 3, "京, 医 and 通 look the same: boxes, not glyphs"
    print(f"CJK glyphs drawn: {[len(g) for g in inks[:3]]} dark pixels; the box has {len(inks[3])}", flush=True)


def brand_inked(browser, png):
    """The page screenshot's own 京医通 heading has ink where the heading is."""
    rect = browser.script(
        "const r = document.getElementById('brand').getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height, window.devicePixelRatio];")
    width, height, rows = png_pixels(png)
    left, top, w, h = (int(v * rect[4]) for v in rect[:4])
    crop = [row[left:left + w] for row in rows[top:top + h]]
    dark = len(ink(crop))
    assert w > 20 and dark > 60, f"the 京医通 heading is blank in the screenshot ({dark} dark pixels in {w}x{h})"


def visit(browser, page, ready, out, name):
    browser.script(f"location.hash = '#{page}';")
    wait_until(f"the {page} page", ready)
    path = os.path.join(out, f"{name}.png")
    png = browser.screenshot(path)
    brand_inked(browser, png)
    return png


def rows_of(browser, table):
    return browser.script(
        f"return [...document.querySelectorAll('#{table} tbody tr')].map(tr => [...tr.cells].map(td => td.textContent));")


def log_in(browser, base_url, login, password):
    browser.call("POST", "/url", {"url": base_url + "/console"})
    browser.script("sessionStorage.clear();")
    browser.call("POST", "/url", {"url": base_url + "/console#overview"})
    browser.type("#login", login)
    browser.type("#password", password)
    browser.click("#login-button")
    wait_until(f"{login} logged in", lambda: browser.script("return !document.getElementById('pages').hidden;"))


def main():
    ap = argparse.ArgumentParser()
    for arg in ["--base-url", "--redis-url", "--prefix", "--webdriver", "--screenshots",
                "--hospital-login", "--hospital-password"]:
        ap.add_argument(arg, required=True)
    ap.add_argument("--city")
    a = ap.parse_args()
    os.makedirs(a.screenshots, exist_ok=True)

    redis = Redis(a.redis_url)
    release = (datetime.now(timezone.utc) - timedelta(minutes=1)).replace(second=0, microsecond=0)
    bookings, payments = seed(redis, a.prefix, release)
    pumch_slot = seed_surge_and_audit(redis, a.prefix, release)
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
    wait_until("the audit trail filled", lambda: len(http("GET", f"{a.base_url}/v1/console/audit?kind=waiver",
                                                           headers=auth)[1]["entries"]) == 8)
    lines = ["trade_time,channel_transaction_id,platform_order_id,amount_fen,status,refund_fen"]
    for i, (ref, order, fee) in enumerate(payments[1:]):
        lines.append(f"{today} 08:30:00,{ref},{order},{fee - 100 if i == 0 else fee},paid,0")
    status, report = http("POST", f"{a.base_url}/v1/reconciliation/statements?channel=wechat&date={today}",
                          "\r\n".join(lines) + "\r\n", dict(auth, **{"Content-Type": "text/csv"}))
    assert status == 200, report
    assert len(report["mismatches"]) == 2, report

    browser = Browser(a.webdriver)
    try:
        city_pages(browser, a, bookings, pumch_slot, release)
        hospital_pages(browser, a, release)
        if a.city:
            relay_pages(browser, a, json.loads(a.city), redis)
    finally:
        browser.quit()


def city_pages(browser, a, bookings, pumch_slot, release):
    log_in(browser, a.base_url, "city", "demo-city-password")
    check_glyphs(browser)

    # Overview.
    shown = f"{bookings:,}"
    visit(browser, "overview", lambda: browser.text("#total-bookings") == shown, a.screenshots, "overview")
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

    # Surge: every hospital, busiest first, refreshed from the server. The
    # window is pinned to the release minute, which may have left the live
    # last two minutes by the time the page is seen.
    until = (release + timedelta(seconds=90)).astimezone(BEIJING).strftime("%Y-%m-%dT%H:%M:%S")
    browser.script("document.getElementById('surge-until').value = arguments[0];", until)
    visit(browser, "surge", lambda: len(rows_of(browser, "surge-table")) == len(HOSPITALS), a.screenshots, "surge")
    table = rows_of(browser, "surge-table")
    assert table[0][0] == "pumch", table[0]
    assert "wechat" in table[0][5] and "kiosk" in table[0][5], table[0]
    assert int(browser.text("#surge-bookings").replace(",", "")) > 0
    # Thirty-four rows stay readable: each row is at most one line high.
    heights = browser.script("return [...document.querySelectorAll('#surge-table tbody tr')].map(r => r.getBoundingClientRect().height);")
    assert max(heights) < 40, f"surge rows wrap: {max(heights)} px"
    before = browser.text("#surge-updated")
    wait_until("the surge page refreshing itself", lambda: browser.text("#surge-updated") != before, seconds=10)
    # Bad input names the field and marks it.
    browser.clear("#surge-seconds")
    browser.type("#surge-seconds", "5")
    browser.click("#surge-form button[type=submit]")
    wait_until("the seconds refusal", lambda: browser.text("#surge-error").startswith("seconds:"))
    assert browser.script("return document.getElementById('surge-seconds').getAttribute('aria-invalid');") == "true"
    browser.clear("#surge-seconds")
    browser.type("#surge-seconds", "120")

    # 加号 requests: open ones first, answered ones on request.
    visit(browser, "capacity", lambda: len(rows_of(browser, "capacity-table")) == len(HOSPITALS) - 4,
          a.screenshots, "capacity-requests")
    open_rows = rows_of(browser, "capacity-table")
    assert all(r[5] == "–" for r in open_rows), open_rows[:2]
    browser.script("document.getElementById('capacity-status').value = 'answered';")
    browser.click("#capacity-form button[type=submit]")
    wait_until("answered requests", lambda: len(rows_of(browser, "capacity-table")) == 4)
    answered = rows_of(browser, "capacity-table")
    assert all(r[6].startswith("gateway/hospital-key:") and r[7] == "+6" for r in answered), answered

    # Audit trail: everything, one slot's provenance, bad input, CSV.
    visit(browser, "audit", lambda: len(rows_of(browser, "audit-table")) == 4 + 1 + 8, a.screenshots, "audit")
    browser.type("#audit-slot", pumch_slot)
    browser.click("#audit-form button[type=submit]")
    wait_until("the slot's provenance", lambda: [r[2] for r in rows_of(browser, "audit-table")] == ["capacity", "stop"])
    browser.screenshot(os.path.join(a.screenshots, "audit-slot.png"))
    browser.clear("#audit-slot")
    browser.type("#audit-slot", "not-a-slot")
    browser.click("#audit-form button[type=submit]")
    wait_until("the slot refusal", lambda: browser.text("#audit-error").startswith("slot:"))
    assert browser.script("return document.getElementById('audit-slot').getAttribute('aria-invalid');") == "true"
    browser.clear("#audit-slot")
    exported = browser.script_async(
        "const done = arguments[arguments.length - 1];"
        "fetch('/v1/console/audit?format=csv&kind=capacity', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('jyt-accounting-token')}})"
        ".then(r => r.text()).then(done, e => done('error ' + e));")
    records = list(csv.reader(io.StringIO(exported)))
    assert records[0][:5] == ["occurred_at_utc", "occurred_at_beijing", "hospital_id", "kind", "actor"], records[0]
    assert len(records) == 1 + 4 and all(r[3] == "capacity" for r in records[1:]), records
    print(f"city operator: {len(HOSPITALS)} hospitals on every page; audit CSV {len(records) - 1} rows", flush=True)
    seed_system_pages(browser, a)


def api_status(browser, path):
    """The status the console's own session gets for `path`."""
    return browser.script_async(
        "const done = arguments[arguments.length - 1];"
        f"fetch('{path}', {{headers: {{Authorization: 'Bearer ' + sessionStorage.getItem('jyt-accounting-token')}}}})"
        ".then(r => done(r.status), e => done('error ' + e));")


def seed_system_pages(browser, a):
    """The pages of the seed documents' systems (issue 23) load for a city
    operator: their API answers 200, the page shows no refusal, and each
    page's own marker is drawn (their figures are checked exactly by the
    system tests: precise_appointment, family_doctor, lottery, survey)."""
    pages = [
        ("precise", "/v1/console/precise", lambda: True),
        ("family-doctor", "/v1/console/family-doctor", lambda: browser.text("#fd-active") != ""),
        ("draws", "/v1/console/draws", lambda: browser.text("#draws-count") != ""),
        ("satisfaction", "/v1/console/satisfaction", lambda: browser.text("#satisfaction-range") != ""),
    ]
    errors = {"precise": "#precise-error", "family-doctor": "#fd-error", "draws": "#draws-error",
              "satisfaction": "#satisfaction-error"}
    for page, path, drawn in pages:
        status = api_status(browser, path)
        assert status == 200, f"{path} answered {status}"
        visit(browser, page, lambda: drawn() and browser.text(errors[page]) == "", a.screenshots, page)
    print("seed-system pages: 精准预约, 家医签约, 抽签放号, 满意度 drawn without a refusal", flush=True)


def hospital_pages(browser, a, release):
    """pumch's operator sees pumch only, on every page."""
    browser.click("#logout")
    log_in(browser, a.base_url, a.hospital_login, a.hospital_password)
    until = (release + timedelta(seconds=90)).astimezone(BEIJING).strftime("%Y-%m-%dT%H:%M:%S")
    browser.script("document.getElementById('surge-until').value = arguments[0];", until)
    visit(browser, "surge", lambda: len(rows_of(browser, "surge-table")) == 1, a.screenshots, "surge-hospital")
    assert rows_of(browser, "surge-table")[0][0] == "pumch"
    assert browser.script("return document.getElementById('surge-hospital').closest('label').hidden;")
    visit(browser, "capacity", lambda: browser.text("#capacity-count") != "", a.screenshots, "capacity-hospital")
    assert {r[0] for r in rows_of(browser, "capacity-table")} <= {"pumch"}
    visit(browser, "audit", lambda: len(rows_of(browser, "audit-table")) == 3, a.screenshots, "audit-hospital")
    assert {r[1] for r in rows_of(browser, "audit-table")} == {"pumch"}
    # Asking for another hospital's slot is refused, naming the hospital.
    browser.type("#audit-slot", f"tongren-{uuid.uuid4()}")
    browser.click("#audit-form button[type=submit]")
    wait_until("the other hospital refused", lambda: browser.text("#audit-error").startswith("hospital:"))
    print("hospital operator: pumch only on every page", flush=True)


def relay_pages(browser, a, city, redis):
    """The pages behind the gateway's relay, on a real city."""
    base, password = city["console_url"], city["password"]
    browser.click("#logout")
    log_in(browser, base, "city_ops", password)

    # An appeal: refused without a reason, then waived with one.
    visit(browser, "appeals", lambda: len(rows_of(browser, "appeals-table")) == 1, a.screenshots, "appeals")
    row = rows_of(browser, "appeals-table")[0]
    assert row[1] == "pumch" and row[4] == "pending", row
    browser.click("#appeals-table tbody tr:first-child button")
    wait_until("the reason refusal", lambda: browser.text("#appeals-error").startswith("reason:"))
    assert browser.script("return document.querySelector('#appeals-table input[name=reason]').getAttribute('aria-invalid');") == "true"
    browser.type("#appeals-table input[name=reason]", "交通管制，有证明")
    browser.click("#appeals-table tbody tr:first-child button")
    wait_until("the appeal waived", lambda: len(rows_of(browser, "appeals-table")) == 0)
    assert browser.text("#appeals-result").startswith("waived"), browser.text("#appeals-result")

    # 加号: a waitlist's request for one of pumch's real schedules.
    status, token = http("POST", base + "/v1/operators/login",
                         json.dumps({"login": "city_ops", "password": password}), {"Content-Type": "application/json"})
    assert status == 200, token
    auth = {"Authorization": "Bearer " + token["token"]}
    status, day = http("GET", f"{base}/v1/console/hospitals/pumch/schedules?date={city['visit_date']}", headers=auth)
    assert status == 200 and day["schedules"], day
    schedule = day["schedules"][-1]
    publish(redis, city["redis_prefix"], "events:slot-inventory", "waitlist.capacity_requested",
            {"schema": 1, "hospital_id": "pumch", "schedule_id": schedule["schedule_id"], "waiting": 9,
             "schedule": {"external_id": schedule["doctor_id"] + "-" + schedule["session"],
                          "doctor_external_id": schedule["doctor_id"], "visit_date": city["visit_date"],
                          "session": schedule["session"]},
             "segment_ids": [s["slot_id"].split("-", 1)[1] for s in schedule["slots"]]},
            datetime.now(timezone.utc))
    visit(browser, "capacity", lambda: len(rows_of(browser, "capacity-table")) == 1, a.screenshots, "capacity-open")
    browser.click("#capacity-table button.jiahao")
    wait_until("the segments loaded", lambda: browser.script("return document.getElementById('jiahao-segment').options.length;") > 0)
    before = schedule["slots"][0]["capacity"]
    browser.clear("#jiahao-capacity")
    browser.type("#jiahao-capacity", "-1")
    browser.click("#jiahao-form button[type=submit]")
    wait_until("the capacity refusal", lambda: browser.text("#jiahao-error").startswith("capacity:"))
    browser.clear("#jiahao-capacity")
    browser.type("#jiahao-capacity", str(before + 3))
    browser.click("#jiahao-form button[type=submit]")
    wait_until("加号 done", lambda: browser.text("#jiahao-result").startswith(f"capacity now {before + 3}"))
    browser.screenshot(os.path.join(a.screenshots, "capacity-jiahao.png"))
    wait_until("the request answered", lambda: (browser.click("#capacity-form button[type=submit]") or True)
               and len(rows_of(browser, "capacity-table")) == 0)

    # 医院与放号规则: pumch's policy; a bad window is refused naming the
    # field, then a longer window is saved through the relay.
    browser.script("location.hash = '#policy';")
    browser.clear("#policy-hospital-input")
    browser.type("#policy-hospital-input", "pumch")
    browser.click("#policy-open-form button[type=submit]")
    wait_until("pumch's policy", lambda: browser.script(
        "return !document.getElementById('policy-form').hidden && document.getElementById('policy-window_days').value;"))
    window = int(browser.script("return document.getElementById('policy-window_days').value;"))
    browser.clear("#policy-window_days")
    browser.type("#policy-window_days", "0")
    browser.click("#policy-form button[type=submit]")
    def policy_state():
        return browser.script("return [document.getElementById('policy-error').textContent, "
                              "document.getElementById('policy-result').textContent, "
                              "document.getElementById('policy-window_days').value, policyHospital];")
    wait_until("the window refusal", lambda: policy_state()[0].startswith("window_days:") or sys.stdout.write(
        f"policy page: {policy_state()}\n") and False, seconds=10)
    assert browser.script("return document.getElementById('policy-window_days').getAttribute('aria-invalid');") == "true"
    browser.clear("#policy-window_days")
    browser.type("#policy-window_days", str(window + 1))
    browser.click("#policy-form button[type=submit]")
    wait_until("the policy saved", lambda: browser.text("#policy-result").startswith("saved: version 2"))
    assert browser.text("#policy-error") == "", browser.text("#policy-error")
    browser.screenshot(os.path.join(a.screenshots, "policy.png"))

    # The audit trail names the operator for the 加号, the appeal, the
    # waiver and the policy change.
    def trail():
        browser.click("#audit-form button[type=submit]")
        return {(r[2], r[3]) for r in rows_of(browser, "audit-table")} >= {
            ("capacity", "gateway/operator:city_ops"), ("appeal", "gateway/operator:city_ops"),
            ("waiver", "gateway/operator:city_ops"), ("policy", "gateway/operator:city_ops")}
    browser.script("location.hash = '#audit';")
    wait_until("the operator's changes audited", trail)
    browser.screenshot(os.path.join(a.screenshots, "audit-operator.png"))

    # Dead letters: none in this city; the page answers for the city.
    visit(browser, "dead-letters", lambda: browser.text("#dead-count") == "(0)", a.screenshots, "dead-letters")

    # pumch's operator: their hospital's appeals, no decisions, no dead letters.
    browser.click("#logout")
    log_in(browser, base, "pumch_ops", password)
    browser.script("document.getElementById('appeals-status').value = 'all';")
    visit(browser, "appeals", lambda: len(rows_of(browser, "appeals-table")) == 1, a.screenshots, "appeals-hospital")
    assert browser.script("return document.querySelectorAll('#appeals-table button').length;") == 0
    assert browser.script("return document.querySelector('#pages a[data-page=\"dead-letters\"]').hidden;")
    browser.script("location.hash = '#dead-letters';")
    wait_until("dead letters refused", lambda: browser.text("#dead-error").startswith("role:"))
    print("relay pages: appeal waived, 加号 answered, policy changed, audit names the operator, dead letters city-only", flush=True)


if __name__ == "__main__":
    main()
