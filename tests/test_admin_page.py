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

    page.goto(server.url + "/ui/")
    expect(row(page, "Added later")).to_be_visible()
    page.set_input_files("#restore-file", str(backup))
    diff = page.locator("#restore-diff")
    expect(diff).to_contain_text("Will be added (1)")
    expect(diff).to_contain_text("Deleted later")
    expect(diff).to_contain_text("Will be removed (1)")
    expect(diff).to_contain_text("Added later")
    expect(diff).to_contain_text("Unchanged: 1")
    screenshot(page, "restore-preview")
    assert {p["name"] for p in http_json("GET", server.url + "/api/providers")[1]} == {"Kept", "Added later"}
    page.get_by_role("button", name="Replace the inventory").click()
    expect(page.locator("#restore-dialog")).not_to_be_visible()
    expect(row(page, "Deleted later")).to_be_visible()
    expect(row(page, "Added later")).to_have_count(0)
    assert {p["name"] for p in http_json("GET", server.url + "/api/providers")[1]} == {"Kept", "Deleted later"}


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
