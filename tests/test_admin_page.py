"""The admin page in a real browser: Debian's Chromium driven by Playwright, against `server.py`
and a fake provider. Screenshots of the main views go to artifacts/screenshots/ (not committed).

Chromium comes from Debian (`apt-get install chromium`, which .ci/run does); Playwright never
downloads a browser here.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from support.api import http_json
from support.processes import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
TOKEN = "ui-admin-token-0123456789"
SECRET = {"BACKEND_API_KEY_SECRET": "ui-secret"}


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Chromium is needed for the admin page tests: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.dialogs = []
    page.errors = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert page.errors == [], page.errors


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def row(page, name: str):
    return page.locator("#providers tbody tr").filter(has_text=name)


def fill_form(page, name: str, base_url: str, api_key: str = "", models: str = "") -> None:
    page.fill("#f-name", name)
    page.fill("#f-base_url", base_url)
    if api_key:
        page.fill("#f-api_key", api_key)
    if models:
        page.fill("#f-models", models)


def test_add_then_test_shows_online_with_latency(page, run_server, threaded_fake_provider):
    server = run_server(SECRET)
    page.goto(server.url + "/")
    expect(page.locator("#empty")).to_be_visible()
    page.get_by_role("button", name="Add provider").click()
    fill_form(page, "Fake OpenAI", threaded_fake_provider.url + "/v1", "sk-ui-key-0123456789", "model-a\nmodel-z")
    page.get_by_role("button", name="Test before save").click()
    expect(page.locator("#form-probe")).to_contain_text("online")
    screenshot(page, "add-provider-form")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#provider-dialog")).not_to_be_visible()
    provider = row(page, "Fake OpenAI")
    expect(provider).to_contain_text("…6789")
    expect(provider).to_contain_text("not tested")
    page.get_by_role("button", name="Test Fake OpenAI").click()
    expect(provider.locator("td.last-test")).to_contain_text("online")
    expect(provider.locator("td.last-test")).to_contain_text(" ms")
    assert threaded_fake_provider.requests[-1].headers["authorization"] == "Bearer sk-ui-key-0123456789"
    stored = http_json("GET", server.url + "/api/providers")[1]
    assert stored[0]["models"] == ["model-a", "model-z"] and stored[0]["last_test"]["status"] == "online"
    screenshot(page, "providers")


def test_validation_errors_show_beside_their_fields(page, run_server):
    server = run_server(SECRET)
    page.goto(server.url + "/ui/")
    page.get_by_role("button", name="Add provider").click()
    fill_form(page, "   ", "ftp://not-http.example.com")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#e-base_url")).to_be_visible()
    expect(page.locator("#e-base_url")).to_contain_text("http")
    expect(page.locator("#e-name")).to_contain_text("1 to 100 characters")
    expect(page.locator("#f-base_url")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#e-models")).to_be_hidden()
    expect(page.locator("#provider-dialog")).to_be_visible()
    screenshot(page, "form-validation")
    assert http_json("GET", server.url + "/api/providers")[1] == []


def test_markup_in_names_is_shown_as_text(page, run_server):
    server = run_server(SECRET)
    name = '<img src=x onerror="window.__xss=1;alert(1)">'
    assert http_json("POST", server.url + "/api/providers",
                     {"name": name, "base_url": "https://x.example.com", "models": ["<b>bold</b>"]})[0] == 201
    page.goto(server.url + "/ui/")
    cell = row(page, "onerror").locator("td").first
    expect(cell).to_have_text(name)
    assert page.locator("#providers img").count() == 0
    page.get_by_role("button", name=f"Edit {name}").click()
    expect(page.locator("#f-models")).to_have_value("<b>bold</b>")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []


def test_page_is_served_with_a_strict_content_security_policy(run_server):
    import urllib.request
    server = run_server(SECRET)
    with urllib.request.urlopen(server.url + "/ui/") as response:
        csp = response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert "<script>" not in page  # no inline script
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing loaded from elsewhere
    assert "/ui/static/app.js?v=" in page  # versioned asset URLs
    with urllib.request.urlopen(server.url + "/ui/static/app.js") as response:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "javascript" in response.headers["Content-Type"]


def test_token_is_asked_for_and_kept_in_session_storage_only(page, run_server):
    server = run_server({**SECRET, "BACKEND_ADMIN_TOKEN": TOKEN})
    http_json("POST", server.url + "/api/providers", {"name": "Behind a token", "base_url": "https://t.example.com"},
              token=TOKEN)
    page.goto(server.url + "/ui/")
    expect(page.locator("#token-dialog")).to_be_visible()
    expect(page.locator("#token-input")).to_have_attribute("type", "password")
    page.fill("#token-input", "wrong-token")
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#token-reason")).to_contain_text("refused")
    page.fill("#token-input", TOKEN)
    page.get_by_role("button", name="Use token").click()
    expect(row(page, "Behind a token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('provider-registry-admin-token')") == TOKEN
    assert page.evaluate("localStorage.length") == 0
    assert TOKEN not in page.content()


def test_restore_shows_the_dry_run_diff_then_restores_on_confirm(page, run_server, tmp_path):
    server = run_server(SECRET)
    for name in ("Kept", "Deleted later"):
        http_json("POST", server.url + "/api/providers", {"name": name, "base_url": "https://r.example.com"})
    backup = tmp_path / "saved-backup.json"
    backup.write_text(json.dumps(http_json("GET", server.url + "/api/admin/providers/export")[1]))
    deleted = [p for p in http_json("GET", server.url + "/api/providers")[1] if p["name"] == "Deleted later"][0]
    http_json("DELETE", f"{server.url}/api/providers/{deleted['id']}")
    http_json("POST", server.url + "/api/providers", {"name": "Added later", "base_url": "https://r.example.com"})

    sent = restore_requests(page)
    page.goto(server.url + "/ui/")
    expect(row(page, "Added later")).to_be_visible()
    page.set_input_files("#restore-file", str(backup))
    diff = page.locator("#restore-diff")
    expect(diff).to_contain_text("Will be added (1)")
    expect(diff).to_contain_text("Deleted later")
    expect(diff).to_contain_text("Will be removed (1)")
    expect(diff).to_contain_text("Added later")
    expect(diff).to_contain_text("Unchanged: 1")
    expect(page.locator("#restore-unlock")).to_be_hidden()  # a plain backup asks for no passphrase
    screenshot(page, "restore-preview")
    assert {p["name"] for p in http_json("GET", server.url + "/api/providers")[1]} == {"Kept", "Added later"}
    page.get_by_role("button", name="Replace the inventory").click()
    expect(page.locator("#restore-dialog")).not_to_be_visible()
    expect(row(page, "Deleted later")).to_be_visible()
    expect(row(page, "Added later")).to_have_count(0)
    assert {p["name"] for p in http_json("GET", server.url + "/api/providers")[1]} == {"Kept", "Deleted later"}
    assert len(sent) == 2 and all(request.header_value("x-backup-passphrase") is None for request in sent)


def test_an_invalid_backup_file_is_refused_without_a_confirm_step(page, run_server, tmp_path):
    server = run_server(SECRET)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    page.goto(server.url + "/ui/")
    page.set_input_files("#restore-file", str(bad))
    expect(page.locator("#restore-error")).to_contain_text("cannot be restored")
    expect(page.get_by_role("button", name="Replace the inventory")).to_be_disabled()


def test_delete_asks_for_confirmation(page, run_server):
    server = run_server(SECRET)
    http_json("POST", server.url + "/api/providers", {"name": "Doomed", "base_url": "https://d.example.com"})
    page.goto(server.url + "/ui/")
    page.get_by_role("button", name="Delete Doomed").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("Doomed")
    page.locator("#confirm-cancel").click()
    expect(row(page, "Doomed")).to_be_visible()
    page.get_by_role("button", name="Delete Doomed").click()
    page.locator("#confirm-ok").click()
    expect(row(page, "Doomed")).to_have_count(0)
    assert http_json("GET", server.url + "/api/providers")[1] == []


def test_history_chart_discovery_and_sync(page, run_server, threaded_fake_provider):
    server = run_server(SECRET)
    status, created = http_json("POST", server.url + "/api/providers", {
        "name": "Charted", "base_url": threaded_fake_provider.url + "/v1", "models": ["model-a", "model-b"]})
    for _ in range(3):
        http_json("POST", f"{server.url}/api/providers/{created['id']}/test")
    page.goto(server.url + "/ui/")
    page.get_by_role("button", name="History and models of Charted").click()
    expect(page.locator("#history-summary")).to_contain_text("3 tests · 100% online")
    expect(page.locator("#history-chart circle")).to_have_count(3)
    page.get_by_role("button", name="Discover models").click()
    discovery = page.locator("#discovery")
    expect(discovery).to_contain_text("Configured but not offered (1)")
    expect(discovery).to_contain_text("model-c")
    screenshot(page, "history-and-models")
    page.get_by_role("button", name="Apply sync: use the upstream list").click()
    expect(discovery).to_contain_text("Models set to the 2 offered upstream")
    assert http_json("GET", f"{server.url}/api/providers/{created['id']}")[1]["models"] == ["model-a", "model-c"]


def test_test_all_and_filters(page, run_server, threaded_fake_provider):
    server = run_server(SECRET)
    for name, provider_type in (("Alpha", "openai"), ("Beta", "anthropic")):
        http_json("POST", server.url + "/api/providers", {"name": name, "type": provider_type,
                                                          "base_url": threaded_fake_provider.url + "/v1"})
    threaded_fake_provider.answer("/v1/models", body={"data": [{"id": "model-a"}]}, delay=0.5)
    page.goto(server.url + "/ui/")
    page.get_by_role("button", name="Test all", exact=True).click()
    expect(page.locator("#providers td.last-test").first).to_contain_text("testing…")
    expect(page.locator("#banner")).to_contain_text("Tested 2 active providers: 2 online")
    expect(page.locator("#providers td.last-test").first).to_contain_text("online")
    page.select_option("#filter-type", "anthropic")
    expect(page.locator("#providers tbody tr")).to_have_count(1)
    expect(row(page, "Beta")).to_be_visible()
    page.select_option("#filter-type", "")
    page.fill("#filter-q", "alp")
    expect(page.locator("#providers tbody tr")).to_have_count(1)
    expect(row(page, "Alpha")).to_be_visible()


def test_export_downloads_the_backup_document(page, run_server):
    server = run_server(SECRET)
    http_json("POST", server.url + "/api/providers", {"name": "Exported", "base_url": "https://e.example.com",
                                                      "api_key": "sk-exported-0123456789"})
    page.goto(server.url + "/ui/")
    expect(row(page, "Exported")).to_be_visible()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download export").click()
    download = download_info.value
    assert download.suggested_filename == "provider-registry-backup.json"
    document = json.loads(Path(download.path()).read_text())
    assert document["format"] == "provider-registry-backup"
    assert document["providers"][0]["name"] == "Exported"
    assert "sk-exported" not in Path(download.path()).read_text()


def test_unreachable_server_is_reported(page, run_server):
    server = run_server(SECRET)
    page.goto(server.url + "/ui/")
    expect(page.locator("#summary")).to_contain_text("0 providers")
    server.stop()
    page.select_option("#filter-active", "true")
    expect(page.locator("#banner")).to_contain_text("cannot be reached")


def test_phone_layout_and_keyboard_reachable_controls(browser, run_server):
    server = run_server(SECRET)
    http_json("POST", server.url + "/api/providers", {"name": "On a phone", "base_url": "https://p.example.com/v1",
                                                      "api_key": "sk-phone-0123456789"})
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    page.goto(server.url + "/ui/")
    expect(row(page, "On a phone")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    screenshot(page, "providers-phone")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Add provider"
    page.keyboard.press("Enter")
    expect(page.locator("#provider-dialog")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "f-name"
    for field in ("f-name", "f-type", "f-base_url", "f-api_key", "f-models", "f-is_active"):
        assert page.locator(f"label[for={field}], label:has(#{field})").count() >= 1, field
    context.close()


def test_the_type_choices_come_from_the_provider_type_table(page, run_server):
    from registry.provider_types import PROVIDER_TYPES

    server = run_server(SECRET)
    page.goto(server.url + "/ui/")
    page.click("#add-provider")
    options = page.locator("#f-type option")
    assert options.evaluate_all("(os) => os.map((o) => [o.value, o.textContent])") == [
        [t.name, t.label] for t in PROVIDER_TYPES.values()]
    assert page.locator("#filter-type option").count() == len(PROVIDER_TYPES) + 1  # and "any"
    for provider_type in PROVIDER_TYPES.values():
        page.select_option("#f-type", provider_type.name)
        assert page.get_attribute("#f-base_url", "placeholder") == provider_type.base_url_hint


def test_tokens_view_creates_with_a_one_time_reveal_and_revokes_after_confirmation(page, run_server):
    server = run_server({**SECRET, "BACKEND_ADMIN_TOKEN": TOKEN})
    page.goto(server.url + "/ui/")
    page.fill("#token-input", TOKEN)
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("button", name="Tokens").click()
    expect(page.locator("#tokens-dialog")).to_be_visible()
    page.fill("#t-name", "billing-service")
    page.select_option("#t-role", "consumer")
    page.fill("#t-providers", "3, 7")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#t-reveal")).to_be_visible()
    secret = page.input_value("#t-secret")
    assert re.fullmatch(r"prt_[A-Za-z0-9_-]{43}", secret)
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#t-copied")).not_to_be_empty()
    listed = page.locator("#tokens tbody tr").filter(has_text="billing-service")
    expect(listed).to_contain_text("consumer")
    expect(listed).to_contain_text("3, 7")
    expect(listed).to_contain_text("never")
    assert http_json("GET", server.url + "/api/tokens/self", token=secret)[1]["name"] == "billing-service"
    screenshot(page, "tokens")

    listed.get_by_role("button", name="Revoke").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.locator("#confirm-cancel").click()
    expect(listed).to_be_visible()
    listed.get_by_role("button", name="Revoke").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#tokens tbody tr").filter(has_text="billing-service")).to_have_count(0)
    assert http_json("GET", server.url + "/api/tokens/self", token=secret)[0] == 401
    page.locator("#tokens-close").click()
    assert page.input_value("#t-secret") == ""  # the secret does not stay on the page


def test_audit_view_filters_and_pages_newest_first(page, run_server):
    server = run_server({**SECRET, "BACKEND_ADMIN_TOKEN": TOKEN})
    for i in range(55):
        http_json("POST", server.url + "/api/providers", {"name": f"Audited {i}", "base_url": "https://a.example.com"},
                  token=TOKEN)
    http_json("POST", server.url + "/api/tokens", {"name": "viewer-1", "role": "viewer"}, token=TOKEN)
    page.goto(server.url + "/ui/")
    page.fill("#token-input", TOKEN)
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("button", name="Audit log").click()
    rows = page.locator("#audit tbody tr")
    expect(rows.first).to_contain_text("auth.denied")  # the page's first request, before the token
    expect(rows.nth(1)).to_contain_text("token.create")
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Older records").click()
    expect(rows).to_have_count(57)
    expect(page.get_by_role("button", name="Older records")).to_be_hidden()
    expect(rows.last).to_contain_text("Audited 0")
    page.select_option("#a-action", "token.create")
    page.locator("#audit-filters").get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("BACKEND_ADMIN_TOKEN (admin)")
    screenshot(page, "audit")


# -- health, events and webhooks ---------------------------------------------------------------------

def create_provider(server, name: str, base_url: str, **fields) -> dict:
    status, created = http_json("POST", server.url + "/api/providers", {"name": name, "base_url": base_url, **fields})
    assert status == 201, created
    return created


def test_health_is_up_after_an_online_test_and_down_after_two_failing_ones_with_a_strip(
        page, run_server, threaded_fake_provider):
    server = run_server(SECRET)
    created = create_provider(server, "Watched", threaded_fake_provider.url + "/v1")
    page.goto(server.url + "/ui/")
    health = row(page, "Watched").locator("td.health-cell")
    expect(health.locator(".health")).to_have_text("unknown")
    expect(health.locator(".strip-summary")).to_have_text("no tests yet")

    page.get_by_role("button", name="Test Watched").click()
    expect(health.locator(".health")).to_have_text("up")
    expect(health.locator(".health")).to_have_class(re.compile(r"\bhealth-up\b"))
    expect(health).to_contain_text("since just now")
    since = http_json("GET", f"{server.url}/api/providers/{created['id']}")[1]["health"]["since"]
    expect(health.get_by_text("since just now")).to_have_attribute("title", since)
    blocks = health.locator(".strip .block")
    expect(blocks).to_have_count(1)
    expect(blocks.first).to_have_attribute("aria-label", re.compile(r"^online \d+ ms at 20\d\d-\d\d-\d\dT"))

    threaded_fake_provider.answer("/v1/models", status=500)
    page.get_by_role("button", name="Test Watched").click()
    expect(blocks).to_have_count(2)
    expect(health.locator(".health")).to_have_text("up")  # one failure is not enough (BACKEND_DOWN_AFTER=2)
    page.get_by_role("button", name="Test Watched").click()
    expect(health.locator(".health")).to_have_text("down")
    expect(health.locator(".health")).to_have_class(re.compile(r"\bhealth-down\b"))
    expect(health.locator(".health")).to_have_attribute("title", re.compile("HTTP 500"))
    expect(health.locator(".reason")).to_have_text("HTTP 500 Internal Server Error")
    expect(blocks).to_have_count(3)
    expect(health.locator(".strip-summary")).to_have_text("1 of 3 online")
    labels = blocks.evaluate_all("(bs) => bs.map((b) => [b.getAttribute('aria-label'), b.getAttribute('title')])")
    assert [label.split(" ")[0] for label, _ in labels] == ["online", "error", "error"]  # oldest left
    assert all(label == title for label, title in labels)
    history = http_json("GET", f"{server.url}/api/providers/{created['id']}/tests?limit=20")[1]["results"]
    assert labels[-1][0].endswith(history[0]["checked_at"])  # newest right
    expect(blocks.nth(2)).to_have_class(re.compile(r"\bblock-error\b"))
    assert http_json("GET", f"{server.url}/api/providers/{created['id']}")[1]["health"]["state"] == "down"
    screenshot(page, "providers-health")


def test_strips_load_after_the_table_at_most_six_at_a_time(page, run_server):
    server = run_server(SECRET)
    for i in range(8):
        create_provider(server, f"Striped {i}", "https://s.example.com/v1")
    held = []
    page.route(re.compile(r"/api/providers/\d+/tests\?limit=20$"), lambda route: held.append(route))
    page.goto(server.url + "/ui/")
    expect(page.locator("#providers tbody tr")).to_have_count(8)  # drawn before any strip arrived
    expect(page.locator(".strip-loading")).to_have_count(8)

    def wait_for_held(count: int) -> None:
        for _ in range(50):  # 5 s at most
            if len(held) >= count:
                break
            page.wait_for_timeout(100)
        assert len(held) == count, f"{len(held)} history requests in flight, expected {count}"

    wait_for_held(6)
    page.wait_for_timeout(300)
    assert len(held) == 6  # the other two wait for a free slot
    held[0].continue_()
    wait_for_held(7)
    for route in held[1:]:
        route.continue_()
    wait_for_held(8)
    held[7].continue_()
    expect(page.locator(".strip-loading")).to_have_count(0)
    expect(page.locator(".strip-summary")).to_have_count(8)
    expect(page.locator(".strip-summary").first).to_have_text("no tests yet")


def test_missing_models_are_shown_in_the_row(page, run_server, threaded_fake_provider):
    server = run_server(SECRET)
    missing = ["model-b", "model-x", "model-y", "model-z"]
    many = create_provider(server, "Many missing", threaded_fake_provider.url + "/v1", models=["model-a", *missing])
    few = create_provider(server, "One missing", threaded_fake_provider.url + "/v1", models=["model-a", "model-q"])
    complete = create_provider(server, "All offered", threaded_fake_provider.url + "/v1", models=["model-a"])
    for provider in (many, few, complete):
        assert http_json("POST", f"{server.url}/api/providers/{provider['id']}/test")[0] == 200
    page.goto(server.url + "/ui/")
    models = row(page, "Many missing").locator("td.models")
    expect(models.locator(".missing")).to_have_text("missing: model-b, model-x, model-y +1 more")
    expect(models.locator(".missing")).to_have_attribute("title", "Not offered at the last test: " + ", ".join(missing))
    expect(row(page, "One missing").locator(".missing")).to_have_text("missing: model-q")
    expect(row(page, "All offered").locator("td.models")).to_have_text("1")
    expect(row(page, "All offered").locator(".missing")).to_have_count(0)


def test_events_view_lists_the_down_event_with_its_reason_newest_first(page, run_server, threaded_fake_provider):
    server = run_server(SECRET)
    flaky = create_provider(server, "Flaky", threaded_fake_provider.url + "/v1")
    create_provider(server, "Quiet", "https://quiet.example.com/v1")
    test = f"{server.url}/api/providers/{flaky['id']}/test"
    http_json("POST", test)
    threaded_fake_provider.answer("/v1/models", status=500)
    http_json("POST", test)
    http_json("POST", test)
    page.goto(server.url + "/ui/")
    expect(row(page, "Flaky").locator(".health")).to_have_text("down")
    page.get_by_role("button", name="Events").click()
    rows = page.locator("#events tbody tr")
    expect(rows).to_have_count(2)
    newest = rows.first
    expect(newest.locator(".badge")).to_have_text("provider.down")
    expect(newest.locator(".badge")).to_have_class(re.compile(r"\btone-bad\b"))
    expect(newest).to_contain_text("Flaky")
    expect(newest).to_contain_text("up → down")
    expect(newest.locator("td.reason")).to_have_text("HTTP 500 Internal Server Error")
    expect(newest).to_contain_text("error · HTTP 500")
    expect(rows.nth(1).locator(".badge")).to_have_text("provider.up")
    expect(rows.nth(1).locator(".badge")).to_have_class(re.compile(r"\btone-good\b"))
    expect(page.locator("#ev-summary")).to_contain_text("2 events, newest first")
    screenshot(page, "events")

    page.select_option("#ev-type", "provider.up")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("provider.up")
    page.select_option("#ev-type", "")
    page.select_option("#ev-provider", label="Quiet")
    expect(page.locator("#ev-summary")).to_contain_text("0 events")
    expect(rows).to_have_count(0)
    page.select_option("#ev-provider", label="Flaky")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("provider.down")


def test_webhook_secret_is_shown_once_and_ping_and_deliveries_show_the_outcome(
        page, run_server, threaded_fake_provider):
    server = run_server(SECRET)
    hook_url = threaded_fake_provider.url + "/hooks/registry"
    page.goto(server.url + "/ui/")
    page.get_by_role("button", name="Webhooks").click()
    dialog = page.locator("#webhooks-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#w-empty")).to_be_visible()

    page.fill("#w-url", "ftp://not-http.example.com")
    for box in page.locator("#w-events input[type=checkbox]").all():
        box.uncheck()
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#we-url")).to_contain_text("http")
    expect(page.locator("#w-url")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#we-events")).to_contain_text("event types")
    assert http_json("GET", server.url + "/api/webhooks")[1] == []

    page.fill("#w-url", hook_url)
    page.get_by_role("checkbox", name="provider.down").check()
    page.fill("#w-description", '<img src=x onerror="window.__xss=1">')
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#w-reveal")).to_be_visible()
    expect(page.locator("#we-url")).to_be_hidden()
    secret = page.input_value("#w-secret")
    assert re.fullmatch(r"whsec_\S{20,}", secret), secret
    page.locator("#w-copy").click()
    expect(page.locator("#w-copied")).not_to_be_empty()
    listed = page.locator("#webhooks tbody tr").filter(has_text=hook_url)
    expect(listed).to_contain_text("provider.down")
    expect(listed).to_contain_text('<img src=x onerror="window.__xss=1">')
    expect(listed.locator(".badge")).to_have_text("active")
    assert page.locator("#webhooks img").count() == 0
    webhooks = http_json("GET", server.url + "/api/webhooks")[1]
    assert len(webhooks) == 1 and webhooks[0]["events"] == ["provider.down"]
    assert "secret" not in webhooks[0] and secret not in json.dumps(webhooks)
    assert secret not in page.locator("#webhooks").inner_text()

    page.get_by_role("button", name=f"Ping {hook_url}").click()
    status = page.locator("#w-status")
    expect(status.locator(".badge")).to_have_text("delivered")
    expect(status.locator(".badge")).to_have_class(re.compile(r"\btone-good\b"))
    expect(status).to_contain_text("HTTP 200")
    pings = [r for r in threaded_fake_provider.requests if r.path == "/hooks/registry"]
    assert len(pings) == 1 and pings[0].method == "POST"

    deliveries_button = page.get_by_role("button", name=f"Deliveries to {hook_url}")
    deliveries_button.click()
    expect(deliveries_button).to_have_attribute("aria-expanded", "true")
    deliveries = page.locator("#deliveries tbody tr")
    expect(deliveries).to_have_count(1)
    expect(deliveries.first).to_contain_text("webhook.ping")
    expect(deliveries.first.locator(".badge")).to_have_text("delivered")
    expect(deliveries.first.locator("td").nth(2)).to_have_text("1")    # attempt
    expect(deliveries.first.locator("td").nth(4)).to_have_text("200")  # status code
    expect(deliveries.first.locator("td").nth(5)).to_contain_text(" ms")
    screenshot(page, "webhooks")

    page.locator("#webhooks-close").click()
    expect(page.locator("#w-secret")).to_have_value("")  # the secret does not stay on the page
    page.get_by_role("button", name="Webhooks").click()
    expect(page.locator("#webhooks tbody tr")).to_have_count(1)
    expect(page.locator("#w-reveal")).to_be_hidden()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.reload()
    page.get_by_role("button", name="Webhooks").click()
    expect(page.locator("#webhooks tbody tr")).to_have_count(1)
    expect(page.locator("#w-reveal")).to_be_hidden()
    assert secret not in page.content()
    assert page.evaluate("window.__xss") is None


def test_webhook_ping_that_fails_shows_the_outcome_and_the_error(page, run_server, threaded_fake_provider):
    server = run_server(SECRET)
    hook_url = threaded_fake_provider.url + "/hooks/broken"
    threaded_fake_provider.answer("/hooks/broken", status=500)
    assert http_json("POST", server.url + "/api/webhooks", {"url": hook_url})[0] == 201
    page.goto(server.url + "/ui/")
    page.get_by_role("button", name="Webhooks").click()
    listed = page.locator("#webhooks tbody tr").filter(has_text=hook_url)
    expect(listed.locator("td").nth(1)).to_have_text("provider.downprovider.upprovider.cert_expiring")
    page.get_by_role("button", name=f"Ping {hook_url}").click()
    status = page.locator("#w-status")
    expect(status.locator(".badge")).to_have_text("failed")  # a ping is not retried
    expect(status.locator(".badge")).to_have_class(re.compile(r"\btone-bad\b"))
    expect(status).to_contain_text("HTTP 500")
    page.get_by_role("button", name=f"Deliveries to {hook_url}").click()
    delivery = page.locator("#deliveries tbody tr")
    expect(delivery).to_have_count(1)
    expect(delivery.first.locator(".badge")).to_have_text("failed")
    expect(delivery.first.locator("td").nth(4)).to_have_text("500")
    expect(delivery.first.locator("td.reason")).to_have_text("HTTP 500 Internal Server Error")
    expect(delivery.first.locator("td").nth(7)).to_have_text("–")  # no next attempt
    screenshot(page, "webhook-deliveries-failed")


def test_webhook_is_deactivated_and_deleted_after_confirmation(page, run_server):
    server = run_server(SECRET)
    hook_url = "https://hooks.example.com/registry"
    status, created = http_json("POST", server.url + "/api/webhooks", {"url": hook_url, "description": "on call"})
    assert status == 201 and created["secret"].startswith("whsec_")
    page.goto(server.url + "/ui/")
    page.get_by_role("button", name="Webhooks").click()
    listed = page.locator("#webhooks tbody tr").filter(has_text=hook_url)
    page.get_by_role("button", name=f"Deactivate {hook_url}").click()
    expect(listed.locator(".badge")).to_have_text("inactive")
    assert http_json("GET", server.url + "/api/webhooks")[1][0]["is_active"] is False
    page.get_by_role("button", name=f"Activate {hook_url}").click()
    expect(listed.locator(".badge")).to_have_text("active")
    assert http_json("GET", server.url + "/api/webhooks")[1][0]["is_active"] is True

    page.get_by_role("button", name=f"Delete {hook_url}").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text(hook_url)
    page.locator("#confirm-cancel").click()
    expect(listed).to_be_visible()
    page.get_by_role("button", name=f"Delete {hook_url}").click()
    page.locator("#confirm-ok").click()
    expect(listed).to_have_count(0)
    expect(page.locator("#w-empty")).to_be_visible()
    assert http_json("GET", server.url + "/api/webhooks")[1] == []


def test_deliveries_list_the_provider_event_sent_to_a_webhook(page, run_server, threaded_fake_provider):
    server = run_server({**SECRET, "BACKEND_DOWN_AFTER": "1"})
    hook_url = threaded_fake_provider.url + "/hooks/events"
    assert http_json("POST", server.url + "/api/webhooks", {"url": hook_url, "events": ["provider.down"]})[0] == 201
    threaded_fake_provider.answer("/v1/models", status=500)
    provider = create_provider(server, "Falls over", threaded_fake_provider.url + "/v1")
    http_json("POST", f"{server.url}/api/providers/{provider['id']}/test")
    page.goto(server.url + "/ui/")
    expect(row(page, "Falls over").locator(".health")).to_have_text("down")  # after one failure here
    page.get_by_role("button", name="Webhooks").click()
    page.get_by_role("button", name=f"Deliveries to {hook_url}").click()
    deliveries = page.locator("#deliveries tbody tr")
    for _ in range(50):  # delivery is asynchronous: refresh for 5 s at most
        if deliveries.count() > 0:
            break
        page.wait_for_timeout(100)
        page.get_by_role("button", name="Refresh deliveries").click()
    expect(deliveries).to_have_count(1)
    expect(deliveries.first.locator("td").nth(1)).to_have_text("provider.down")
    expect(deliveries.first.locator(".badge")).to_have_text("delivered")
    sent = [r for r in threaded_fake_provider.requests if r.path == "/hooks/events"]
    assert len(sent) == 1 and json.loads(sent[0].body)["type"] == "provider.down"


def test_events_and_webhooks_views_fit_a_phone(browser, run_server, threaded_fake_provider):
    server = run_server({**SECRET, "BACKEND_DOWN_AFTER": "1"})
    threaded_fake_provider.answer("/v1/models", status=500)
    provider = create_provider(server, "Small screen", threaded_fake_provider.url + "/v1")
    http_json("POST", f"{server.url}/api/providers/{provider['id']}/test")
    status, hook = http_json("POST", server.url + "/api/webhooks", {"url": threaded_fake_provider.url + "/hooks/p"})
    assert status == 201
    assert http_json("POST", f"{server.url}/api/webhooks/{hook['id']}/ping")[1]["outcome"] == "delivered"
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    page.goto(server.url + "/ui/")
    expect(row(page, "Small screen").locator(".strip .block")).to_have_count(1)
    for view, dialog, content in (("Events", "#events-dialog", "#events tbody tr"),
                                  ("Webhooks", "#webhooks-dialog", "#webhooks tbody tr")):
        page.get_by_role("button", name=view, exact=True).click()
        expect(page.locator(content)).to_have_count(1)
        if view == "Webhooks":
            page.get_by_role("button", name=re.compile("^Deliveries to ")).click()
            expect(page.locator("#deliveries tbody tr")).to_have_count(1)
        sideways = page.locator(dialog).evaluate("(d) => d.scrollWidth - d.clientWidth")
        assert sideways <= 0, f"the {view} view scrolls sideways on a phone ({sideways} px)"
        screenshot(page, f"{view.lower()}-phone")
        page.keyboard.press("Escape")
        expect(page.locator(dialog)).to_be_hidden()
    context.close()


# -- portable exports ------------------------------------------------------------------------------

PASSPHRASE = "Grüße aus Köln ☃ 2024"  # not ASCII: its UTF-8 bytes travel in the X-Backup-Passphrase header
PORTABLE_FILE = re.compile(r"provider-registry-portable-\d{4}-\d{2}-\d{2}\.json")


def export_requests(page) -> list:
    """Every request the page sends to the export endpoint, as it sends it."""
    sent: list = []
    page.on("request", lambda request: sent.append(request) if "/api/admin/providers/export" in request.url else None)
    return sent


def restore_requests(page) -> list:
    sent: list = []
    page.on("request", lambda request: sent.append(request) if "/api/admin/providers/restore" in request.url else None)
    return sent


def download_portable_export(page, passphrase: str) -> tuple[str, str]:
    """Through the page's dialog: (the suggested file name, the file's text)."""
    page.get_by_role("button", name="Download portable export…").click()
    page.fill("#p-passphrase", passphrase)
    page.fill("#p-confirm", passphrase)
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download", exact=True).click()
    download = download_info.value
    return download.suggested_filename, Path(download.path()).read_text(encoding="utf-8")


def test_portable_export_checks_the_passphrase_at_the_field_then_downloads(page, run_server):
    server = run_server(SECRET)
    keys = {"Portable one": "sk-portable-one-0123456789", "Portable two": "sk-portable-two-9876543210"}
    for name, key in keys.items():
        create_provider(server, name, "https://pe.example.com/v1", api_key=key)
    sent = export_requests(page)
    page.goto(server.url + "/ui/")
    expect(row(page, "Portable two")).to_be_visible()
    page.get_by_role("button", name="Download portable export…").click()
    dialog = page.locator("#portable-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#portable-hint")).to_contain_text("instead of this server's secret")
    expect(page.locator("#portable-hint")).to_contain_text("not stored anywhere")
    assert page.evaluate("document.activeElement.id") == "p-passphrase"
    for field in ("#p-passphrase", "#p-confirm"):
        expect(page.locator(field)).to_have_attribute("type", "password")

    page.fill("#p-passphrase", "a long enough passphrase")
    page.fill("#p-confirm", "a long enough passphrasf")
    page.get_by_role("button", name="Download", exact=True).click()
    expect(page.locator("#pe-confirm")).to_have_text("The two passphrases do not match.")
    expect(page.locator("#p-confirm")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#pe-passphrase")).to_be_hidden()
    screenshot(page, "portable-export-mismatch")

    page.fill("#p-passphrase", "too short")
    page.fill("#p-confirm", "too short")
    page.locator("#p-confirm").press("Enter")  # the keyboard submits too
    expect(page.locator("#pe-passphrase")).to_contain_text("at least 12 characters")
    expect(page.locator("#p-passphrase")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#pe-confirm")).to_be_hidden()
    page.fill("#p-passphrase", " space in front of it")
    page.fill("#p-confirm", " space in front of it")
    page.get_by_role("button", name="Download", exact=True).click()
    expect(page.locator("#pe-passphrase")).to_contain_text("whitespace")
    page.wait_for_timeout(200)
    assert sent == [], "a refused passphrase was sent"
    assert dialog.is_visible()

    too_long = "x" * 1025  # the page leaves the upper bound to the API: its 422 shows at the field
    page.fill("#p-passphrase", too_long)
    page.fill("#p-confirm", too_long)
    page.get_by_role("button", name="Download", exact=True).click()
    expect(page.locator("#pe-passphrase")).to_contain_text("12 to 1024 characters")
    assert len(sent) == 1 and sent[0].method == "POST"
    assert too_long not in page.locator("#pe-passphrase").inner_text()

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Download portable export…").click()
    expect(page.locator("#p-passphrase")).to_have_value("")  # closing cleared both fields and the errors
    expect(page.locator("#p-confirm")).to_have_value("")
    expect(page.locator("#pe-passphrase")).to_be_hidden()
    page.locator("#portable-cancel").click()

    filename, text = download_portable_export(page, PASSPHRASE)
    expect(dialog).to_be_hidden()
    assert PORTABLE_FILE.fullmatch(filename), filename
    assert json.loads(sent[-1].post_data) == {"passphrase": PASSPHRASE}
    document = json.loads(text)
    assert document["format"] == "provider-registry-backup"
    assert isinstance(document["key_wrap"], dict) and document["key_wrap"]["kdf"] == "scrypt"
    wrapped = {record["name"]: record["api_key"] for record in document["providers"]}
    assert set(wrapped) == set(keys)
    assert all(wrapped[name] and wrapped[name] != key for name, key in keys.items())
    assert not any(key in text or key[-12:] in text for key in keys.values())
    plain = http_json("GET", server.url + "/api/admin/providers/export")[1]
    assert {r["name"]: r["api_key"] for r in plain["providers"]}.keys() == wrapped.keys()
    assert all(r["api_key"] != wrapped[r["name"]] for r in plain["providers"])  # not under the server's secret
    expect(page.locator("#banner")).to_contain_text("portable export of 2 providers")
    page.get_by_role("button", name="Download portable export…").click()
    expect(page.locator("#p-passphrase")).to_have_value("")
    expect(page.locator("#p-confirm")).to_have_value("")
    assert PASSPHRASE not in page.content()


def test_portable_export_restores_into_a_server_with_another_secret(
        page, run_server, threaded_fake_provider, tmp_path):
    source = run_server(SECRET)
    probed = create_provider(source, "Probed after the move", threaded_fake_provider.url + "/v1",
                             api_key="sk-moved-0123456789")
    create_provider(source, "Second moved", "https://m.example.com/v1", api_key="sk-second-moved-abcdef")
    create_provider(source, "Without a key", "https://n.example.com/v1")
    originals = {p["name"]: p for p in http_json("GET", source.url + "/api/providers")[1]}
    page.goto(source.url + "/ui/")
    expect(row(page, "Without a key")).to_be_visible()
    filename, text = download_portable_export(page, PASSPHRASE)
    portable = tmp_path / filename
    portable.write_text(text, encoding="utf-8")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = run_server({"BACKEND_API_KEY_SECRET": "another-registry-secret"}, cwd=elsewhere)
    create_provider(target, "Only on the target", "https://t.example.com/v1", api_key="sk-target-0123456789")
    before = http_json("GET", target.url + "/api/providers")[1]
    sent = restore_requests(page)
    page.goto(target.url + "/ui/")
    expect(row(page, "Only on the target")).to_be_visible()

    page.set_input_files("#restore-file", str(portable))
    dialog = page.locator("#restore-dialog")
    expect(page.locator("#restore-unlock")).to_be_visible()
    expect(page.locator("#r-passphrase")).to_have_attribute("type", "password")
    expect(page.locator("#r-passphrase")).to_be_focused()
    expect(page.get_by_role("button", name="Replace the inventory")).to_be_disabled()
    expect(page.locator("#restore-diff")).to_be_empty()
    screenshot(page, "restore-portable-passphrase")
    page.wait_for_timeout(200)
    assert sent == [], "the page previewed a portable export before asking for its passphrase"

    page.fill("#r-passphrase", "not the passphrase at all")
    page.get_by_role("button", name="Preview the restore").click()
    wrong = page.locator("#re-passphrase")
    expect(wrong).to_have_text("The passphrase does not open this export's keys; nothing was changed.")
    expect(page.locator("#r-passphrase")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("button", name="Replace the inventory")).to_be_disabled()
    screenshot(page, "restore-portable-wrong-passphrase")
    assert len(sent) == 1 and "dry_run=true" in sent[0].url
    assert sent[0].header_value("x-backup-passphrase") is not None
    assert http_json("GET", target.url + "/api/providers")[1] == before
    expect(page.locator("#providers tbody tr")).to_have_count(1)

    page.keyboard.press("Escape")  # closing forgets the passphrase; choosing the file again asks again
    expect(dialog).to_be_hidden()
    expect(page.locator("#r-passphrase")).to_have_value("")
    page.set_input_files("#restore-file", str(portable))
    expect(page.locator("#restore-unlock")).to_be_visible()
    expect(page.locator("#r-passphrase")).to_have_value("")
    expect(wrong).to_be_hidden()

    page.fill("#r-passphrase", PASSPHRASE)
    page.locator("#r-passphrase").press("Enter")
    diff = page.locator("#restore-diff")
    expect(diff).to_contain_text("Will be added (2)")  # restore keeps ids: the target's id 1 changes
    expect(diff).to_contain_text("Second moved")
    expect(diff).to_contain_text("Will change (1)")
    expect(diff).to_contain_text("Probed after the move (name, base_url, api_key")
    expect(page.locator("#restore-unlock")).to_be_hidden()
    expect(page.locator("#r-passphrase")).to_have_value("")
    expect(page.locator("#restore-cancel")).to_be_focused()  # Enter does not replace the inventory
    screenshot(page, "restore-portable-preview")
    assert http_json("GET", target.url + "/api/providers")[1] == before  # a dry run changes nothing
    page.get_by_role("button", name="Replace the inventory").click()
    expect(dialog).to_be_hidden()
    expect(row(page, "Only on the target")).to_have_count(0)
    for name, original in originals.items():
        expected = original["api_key_preview"] if original["has_api_key"] else "none"
        expect(row(page, name).locator("td.key")).to_have_text(expected)
    previews = [sent_request.header_value("x-backup-passphrase") is not None for sent_request in sent]
    assert len(sent) == 3 and all(previews)  # wrong dry run, right dry run, restore: each with the header
    assert "dry_run" not in sent[-1].url

    restored = {p["name"]: p for p in http_json("GET", target.url + "/api/providers")[1]}
    assert set(restored) == set(originals)
    for name, original in originals.items():
        assert (restored[name]["has_api_key"], restored[name]["api_key_preview"]) == (
            original["has_api_key"], original["api_key_preview"]), name
    # The key was encrypted again under the target's own secret: the target can use it.
    assert http_json("POST", f"{target.url}/api/providers/{probed['id']}/test")[1]["status"] == "online"
    assert threaded_fake_provider.requests[-1].headers["authorization"] == "Bearer sk-moved-0123456789"
    assert PASSPHRASE not in page.content()
