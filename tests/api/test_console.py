"""The responder console at /admin/ui: its security headers and markup, the admin job cancel it uses,
and a responder's session in headless Chromium against a live gateway.

The browser tests drive Debian's ``chromium`` through Playwright (no browser download); they save
screenshots to tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from gateway.api.ui import CSP
from tests.conftest import ADMIN_KEY, BATCH_KEY, CLIENT_KEY
from tests.support.gateway_proc import GatewayProcess
from tests.support.jobs import get_job, namespace, submit_job
from tests.support.modes import admin, audit, degradation_config, modes, wait_for
from tests.support.net import free_port, wait_http

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PAGES = {"/admin/ui": "text/html", "/admin/ui/console.js": "text/javascript", "/admin/ui/console.css": "text/css"}
SCOPES = ("global", "primary", "secondary")
XSS = "<script>alert(1)</script> & <img src=x onerror=alert(2)>"

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                    "(apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def gateway(make_module_gateway, upstream_server, redis_server):
    """One gateway with no drainer, so a deferred job stays queued until someone cancels it."""
    config = degradation_config(upstream_server, redis_server.url, min_samples=1000)  # operator control only
    return make_module_gateway(config, args=("--no-worker",))


@pytest.fixture(autouse=True)
def _clear_overrides(request):
    yield
    if "gateway" in request.fixturenames:
        gw = request.getfixturevalue("gateway")
        for scope in SCOPES:
            admin(gw, "DELETE", "/admin/mode", json={"provider": scope, "reason": "test cleanup"})


# -- headers and markup


@pytest.mark.parametrize("path", list(PAGES))
def test_the_page_and_its_assets_carry_a_strict_csp_and_need_no_key(gateway, path):
    r = httpx.get(gateway.url + path, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["content-type"].startswith(PAGES[path])
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in r.headers


class Markup(HTMLParser):
    """Every tag with its attributes, and the text inside <script> and <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[tuple[str, str]] = []
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open and data.strip():
            self.inline.append((self._open, data))


def test_the_page_has_no_inline_script_style_or_handlers(gateway):
    html = httpx.get(gateway.url + "/admin/ui", timeout=10).text
    markup = Markup()
    markup.feed(html)
    assert markup.inline == []  # no inline <script> or <style> content
    scripts = [attrs for tag, attrs in markup.tags if tag == "script"]
    assert scripts and all(a.get("src", "").startswith("/admin/ui/") for a in scripts)
    assert [tag for tag, _ in markup.tags if tag == "style"] == []
    for tag, attrs in markup.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert "style" not in attrs, (tag, attrs)
        for name in ("href", "src", "action"):
            assert not (attrs.get(name) or "").lower().startswith("javascript:"), (tag, attrs)
    assert not re.search(r"\son\w+\s*=", html, re.IGNORECASE)
    assert not re.search(r"\sstyle\s*=", html, re.IGNORECASE)
    # Labels for every input and select; tables with column headers.
    ids = {attrs["id"] for tag, attrs in markup.tags if tag in ("input", "select") and "id" in attrs}
    labelled = {attrs.get("for") for tag, attrs in markup.tags if tag == "label"}
    assert ids and ids <= labelled
    assert all(attrs.get("scope") == "col" for tag, attrs in markup.tags if tag == "th")


def test_the_script_never_evaluates_text_or_writes_html(gateway):
    js = httpx.get(gateway.url + "/admin/ui/console.js", timeout=10).text
    for banned in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                   "document.cookie", "localStorage"):
        assert banned not in js, banned
    assert not re.search(r"setTimeout\(\s*[\"'`]", js)
    assert "sessionStorage" in js and "textContent" in js


# -- the data endpoints and the admin cancel


@pytest.mark.parametrize("key", [None, "sk-wrong", CLIENT_KEY])
@pytest.mark.parametrize("method,path", [("GET", "/admin/status"), ("GET", "/admin/audit"), ("GET", "/admin/mode"),
                                         ("DELETE", "/admin/jobs/job_nope")])
def test_a_wrong_key_gets_401_and_no_data(gateway, key, method, path):
    r = admin(gateway, method, path, key=key)
    assert r.status_code == 401
    assert set(r.json()) == {"error"}
    assert r.json()["error"]["type"] == "authentication_error"


def test_an_admin_cancels_any_clients_queued_job_and_it_is_audited(gateway):
    job_id = submit_job(gateway, CLIENT_KEY, "chat", tier="standard")
    # Another client cannot touch it; the admin can, with the same 404/409 answers as the client API.
    assert httpx.delete(f"{gateway.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {BATCH_KEY}"},
                        timeout=10).status_code == 404
    assert admin(gateway, "DELETE", f"/admin/jobs/{job_id}", key=CLIENT_KEY).status_code == 401
    assert get_job(gateway, CLIENT_KEY, job_id).json()["status"] == "queued"
    r = admin(gateway, "DELETE", f"/admin/jobs/{job_id}", json={"reason": "runaway client"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == job_id and r.json()["status"] == "cancelled"
    assert get_job(gateway, CLIENT_KEY, job_id).json()["status"] == "cancelled"
    r = admin(gateway, "DELETE", f"/admin/jobs/{job_id}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_cancellable"
    r = admin(gateway, "DELETE", "/admin/jobs/job_doesnotexist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    mine = [e for e in audit(gateway) if e.get("action") == "job.cancel" and e["details"]["job_id"] == job_id]
    assert len(mine) == 1
    assert mine[0]["actor"] == "oncall" and mine[0]["reason"] == "runaway client"
    assert mine[0]["details"] == {"job_id": job_id, "tier": "standard", "model": "chat", "client": "web"}


def test_status_shows_models_queues_and_provider_batches(gateway):
    job_id = submit_job(gateway, CLIENT_KEY, "chat", tier="standard")
    s = admin(gateway, "GET", "/admin/status").json()
    assert s["models"] == {"chat": "normal", "embed": "normal"}
    assert s["queue"]["standard"]["depth"] >= 1
    assert s["provider_batches"] == []
    assert admin(gateway, "DELETE", f"/admin/jobs/{job_id}").status_code == 200


# -- the browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Seen:
    """What a page did besides rendering: native dialogs (alert, confirm, prompt) and script errors."""

    def __init__(self, page) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", self._console)

    def _console(self, message) -> None:
        # Chromium logs every 4xx answer as "Failed to load resource"; the API's refusals are expected here.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    p = context.new_page()
    p.set_default_timeout(5000)
    yield p
    context.close()


@pytest.fixture
def seen(page) -> Seen:
    return Seen(page)


def cli(gw, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_URL": gw.url, "GATEWAY_ADMIN_KEY": ADMIN_KEY, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "gateway", *args], check=False, env=env, text=True,
                          capture_output=True, timeout=30)


def cell(page, table: str, key: str, value: str, cls: str):
    return page.locator(f'#{table} tbody tr[data-{key}="{value}"] td.{cls}')


def sign_in(page, gw, key: str = ADMIN_KEY) -> None:
    from playwright.sync_api import expect

    page.goto(gw.url + "/admin/ui")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#admin-key", key)
    page.press("#admin-key", "Enter")


def confirm(page, expected: str) -> None:
    from playwright.sync_api import expect

    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text(expected)
    page.click("#confirm-yes")
    expect(dialog).to_be_hidden()


@needs_chromium
def test_a_responder_session_in_the_browser(gateway, page, seen):
    from playwright.sync_api import expect

    # 1. Sign in with the admin key and see normal everywhere.
    sign_in(page, gateway)
    expect(cell(page, "modes", "scope", "global", "mode")).to_have_text("normal")
    expect(page.locator("#data")).to_be_visible()
    expect(page.locator("#login")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('gateway.adminKey')") == ADMIN_KEY
    assert page.context.cookies() == []
    expect(page.locator("#health tbody tr[data-provider='primary'] th")).to_have_text("primary")
    expect(page.locator("#health tfoot")).to_contain_text("enter above")
    expect(page.locator("#admission tbody tr[data-provider='primary'][data-tier='interactive'] td").nth(2)).to_have_text("2")
    expect(cell(page, "queue", "tier", "standard", "depth")).to_have_text("0")
    expect(page.locator("#batches tbody")).to_contain_text("None in flight")

    # 2. Set degraded with a reason and a TTL, confirming first.
    page.select_option("#set-scope", "global")
    page.select_option("#set-mode", "degraded")
    page.fill("#set-ttl", "10m")
    page.fill("#set-reason", "INC-42 upstream latency")
    page.click("#set-form button[type=submit]")
    confirm(page, "Set global to degraded for 10m 00s? Reason: INC-42 upstream latency")
    expect(page.locator("#result-line")).to_have_text("Set global to degraded for 10m 00s → 200 OK")

    # 3. The API and the CLI agree that it took effect.
    item = modes(gateway)["scopes"]["global"]
    assert (item["mode"], item["source"]) == ("degraded", "operator")
    assert item["override"]["reason"] == "INC-42 upstream latency" and item["override"]["actor"] == "oncall"
    assert item["override"]["expires_at"] - item["override"]["set_at"] == pytest.approx(600)
    shown = cli(gateway, "mode", "show")
    assert shown.returncode == 0, shown.stderr
    line = next(ln for ln in shown.stdout.splitlines() if ln.startswith("global"))
    assert re.split(r"\s{2,}", line)[:5] == ["global", "degraded", "operator", "INC-42 upstream latency", "oncall"]

    # 4. The console reflects it, and also a change made elsewhere (the CLI) within 3 s of polling.
    expect(cell(page, "modes", "scope", "global", "mode")).to_have_text("degraded", timeout=3000)
    expect(cell(page, "modes", "scope", "global", "reason")).to_have_text("INC-42 upstream latency")
    expect(cell(page, "modes", "scope", "global", "actor")).to_have_text("oncall")
    expect(cell(page, "modes", "scope", "global", "ttl")).to_have_text(re.compile(r"^(9m \d\ds|10m 00s)$"))
    expect(page.locator("#models li[data-model='chat'] .badge")).to_have_text("degraded")
    expect(page.locator("#audit tbody tr").first).to_contain_text("INC-42 upstream latency")
    expect(page.locator("#audit tbody tr").first).to_contain_text("oncall")
    done = cli(gateway, "mode", "set", "shed", "--provider", "secondary", "--ttl", "5m", "--reason", "from the CLI")
    assert done.returncode == 0, done.stderr
    expect(cell(page, "modes", "scope", "secondary", "mode")).to_have_text("shed", timeout=3000)

    # 5. Clear it from the row's own button.
    page.click("#modes tbody tr[data-scope='global'] td.actions button")
    confirm(page, "Clear the override on global?")
    expect(page.locator("#result-line")).to_have_text("Clear the override on global → 200 OK")
    expect(cell(page, "modes", "scope", "global", "mode")).to_have_text("normal", timeout=3000)
    item = modes(gateway)["scopes"]["global"]
    assert (item["mode"], item["source"], item["override"]) == ("normal", "auto", None)

    # A hostile reason is shown as text and never runs.
    page.select_option("#set-scope", "primary")
    page.fill("#set-reason", XSS)
    page.click("#set-form button[type=submit]")
    confirm(page, XSS)
    expect(cell(page, "modes", "scope", "primary", "reason")).to_have_text(XSS, timeout=3000)
    expect(cell(page, "modes", "scope", "primary", "reason")).to_be_visible()
    expect(page.locator("#audit tbody tr").first.locator("td.reason")).to_have_text(XSS)
    assert page.locator("#main script, #main img").count() == 0
    assert modes(gateway)["scopes"]["primary"]["override"]["reason"] == XSS
    page.wait_for_timeout(300)
    assert seen.dialogs == []

    # Cancel a queued job by id.
    job_id = submit_job(gateway, CLIENT_KEY, "chat", tier="standard")
    expect(cell(page, "queue", "tier", "standard", "depth")).to_have_text("1", timeout=3000)
    page.fill("#cancel-id", job_id)
    page.fill("#cancel-reason", "stuck job")
    page.click("#cancel-form button[type=submit]")
    confirm(page, f"Cancel job {job_id}?")
    expect(page.locator("#result-line")).to_have_text(f"Cancel job {job_id} → 200 OK")
    expect(page.locator("#result-body")).to_contain_text('"status": "cancelled"')
    assert get_job(gateway, CLIENT_KEY, job_id).json()["status"] == "cancelled"
    expect(page.locator("#audit tbody tr").first).to_contain_text(f"cancelled job {job_id} (standard)")
    expect(page.locator("#audit tbody tr").first).to_contain_text("oncall")
    expect(cell(page, "queue", "tier", "standard", "depth")).to_have_text("0", timeout=3000)
    entry = next(e for e in reversed(audit(gateway)) if e.get("action") == "job.cancel")
    assert entry["actor"] == "oncall" and entry["details"]["job_id"] == job_id

    # The API's refusals are shown as they come: cancelling it again is a 409.
    page.fill("#cancel-id", job_id)
    page.click("#cancel-form button[type=submit]")
    confirm(page, job_id)
    expect(page.locator("#result-line")).to_contain_text("→ 409: The job is cancelled")
    expect(page.locator("#result")).to_have_class(re.compile(r"is-error"))

    # Screenshots with live data: one queued job, two overrides, a filled audit log.
    waiting = submit_job(gateway, CLIENT_KEY, "chat", tier="standard")
    expect(cell(page, "queue", "tier", "standard", "depth")).to_have_text("1", timeout=3000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-desktop-light.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(ARTIFACTS / "console-desktop-dark.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "console-phone-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    page.screenshot(path=str(ARTIFACTS / "console-phone-light.png"), full_page=True)
    # Nothing on the phone layout is wider than the screen, except inside the scrolling table regions.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert seen.errors == [] and seen.dialogs == []
    assert admin(gateway, "DELETE", f"/admin/jobs/{waiting}").status_code == 200


@needs_chromium
def test_the_controls_work_from_the_keyboard_and_ask_before_acting(gateway, page, seen):
    from playwright.sync_api import expect

    sign_in(page, gateway)
    expect(cell(page, "modes", "scope", "global", "mode")).to_have_text("normal")
    # A missing reason is refused before anything is asked or sent.
    page.fill("#set-reason", "")
    page.focus("#set-form button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.locator("#set-reason-error")).to_have_text("A reason is required.")
    expect(page.locator("#set-reason")).to_be_focused()
    expect(page.locator("#confirm")).to_be_hidden()
    page.fill("#set-ttl", "forever")
    page.fill("#set-reason", "keyboard only")
    page.press("#set-reason", "Enter")
    expect(page.locator("#set-ttl-error")).to_contain_text("90s, 30m or 2h")
    page.fill("#set-ttl", "2h")
    page.press("#set-reason", "Enter")
    # The dialog opens on Cancel; Escape backs out and nothing is sent.
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-no")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#confirm")).to_be_hidden()
    expect(page.locator("#result-line")).to_have_text("Set global to degraded for 2h 00m: not confirmed")
    assert modes(gateway)["scopes"]["global"]["override"] is None
    # Tab to Confirm and press Enter: now it is sent.
    page.press("#set-reason", "Enter")
    expect(page.locator("#confirm-no")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("#confirm-yes")).to_be_focused()
    page.keyboard.press("Enter")
    expect(cell(page, "modes", "scope", "global", "mode")).to_have_text("degraded", timeout=3000)
    assert modes(gateway)["scopes"]["global"]["override"]["reason"] == "keyboard only"
    # Signing out forgets the key and hides the data.
    page.click("#signout")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#data")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('gateway.adminKey')") is None
    assert seen.errors == [] and seen.dialogs == []


@needs_chromium
def test_a_wrong_key_shows_an_error_and_no_data(gateway, page):
    from playwright.sync_api import expect

    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((r.url, r.status)) if "/admin/" in r.url and "/admin/ui" not in r.url
            else None)
    sign_in(page, gateway, key="sk-wrong-key")
    expect(page.locator("#login-error")).to_have_text("Incorrect admin key provided.")
    expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("#freshness")).to_contain_text("Not signed in")
    expect(page.locator("#data")).to_be_hidden()
    assert page.locator("#data tbody tr").count() == 0
    assert page.locator("#models li").count() == 0
    assert page.evaluate("sessionStorage.getItem('gateway.adminKey')") is None
    assert answers and all(status == 401 for _, status in answers)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-wrong-key.png"))
    # No polling goes on with a refused key.
    seen = len(answers)
    page.wait_for_timeout(2500)
    assert len(answers) == seen


def test_with_an_admin_port_the_console_moves_there_and_loopback_needs_no_key(make_gateway, upstream, redis_server,
                                                                             request):
    config = degradation_config(upstream, redis_server.url)
    config["auth"]["admin_keys"] = []  # no admin key: the admin API answers on loopback only
    port = free_port()
    config["server"]["admin_port"] = port
    gw = make_gateway(config)
    admin_url = f"http://127.0.0.1:{port}"
    wait_http(admin_url + "/healthz")
    assert httpx.get(gw.url + "/admin/ui", timeout=10).status_code == 404
    for path in PAGES:
        r = httpx.get(admin_url + path, timeout=10)
        assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import expect

    page = request.getfixturevalue("page")
    page.goto(admin_url + "/admin/ui")
    expect(cell(page, "modes", "scope", "global", "mode")).to_have_text("normal")
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#signout")).to_be_hidden()
    page.fill("#set-reason", "local drill")
    page.click("#set-form button[type=submit]")
    confirm(page, "local drill")
    expect(cell(page, "modes", "scope", "global", "actor")).to_have_text("loopback", timeout=3000)


def test_status_and_console_list_provider_batches_in_flight(make_gateway, redis_server, tmp_path, request):
    sim = GatewayProcess(tmp_path, None, command="simulator", args=("--latency-ms", "1")).start(wait="/v1/models")
    try:
        httpx.put(sim.url + "/_sim/behaviour", json={"batch_latency_ms": 60_000}, timeout=5).raise_for_status()
        gw = make_gateway({
            "server": {"log_format": "json"},
            "redis": {"url": redis_server.url, "private": "never"},
            "auth": {"admin_keys": [{"name": "oncall", "key": ADMIN_KEY}],
                     "clients": [{"name": "batch", "key": BATCH_KEY, "tiers": ["background"],
                                  "default_tier": "background"}]},
            "providers": {"up": {"kind": "openai", "base_url": sim.url + "/v1", "api_key": "sk-sim", "batch": True,
                                 "batch_window_s": 600}},
            "models": {"m": {"targets": [{"provider": "up", "model": "sim-1"}]}},
            "tiers": {"background": {"priority": 2, "async": True, "max_delay_s": 3600, "provider_batch": True}},
            "queue": {"namespace": namespace("console"), "provider_batch_min_items": 2, "provider_batch_poll_s": 30,
                      "mini_batch_wait_s": 0.05},
        })
        for _ in range(2):
            submit_job(gw, BATCH_KEY, "m")

        def batches():
            return admin(gw, "GET", "/admin/status").json()["provider_batches"]

        listed = wait_for(batches, 10, "a provider batch in /admin/status")
        assert len(listed) == 1
        b = listed[0]
        assert (b["provider"], b["model"], b["route"], b["items"], b["polls"]) == ("up", "sim-1", "chat/completions", 2, 0)
        assert b["upstream_id"] and b["age_s"] >= 0 and b["submitted_at"] <= time.time()
        if not CHROMIUM.exists():
            return
        from playwright.sync_api import expect

        page = request.getfixturevalue("page")
        sign_in(page, gw)
        row = page.locator("#batches tbody tr").first
        expect(row.locator("th")).to_have_text("up")
        expect(row).to_contain_text("sim-1")
        expect(row).to_contain_text(b["upstream_id"])
    finally:
        sim.stop()
