// The admin page: list, filter, add, edit, test, delete providers; health, history, model discovery,
// export (plain, or portable under a passphrase) and restore. Uses only the public JSON API (api.js);
// builds DOM only from text (dom.js).
import { api, ApiError, ServerUnreachable, setTokenPrompt } from "./api.js";
import { latencyChart } from "./chart.js";
import { $, ago, clear, el, ms } from "./dom.js";
import { startAccessViews } from "./access.js";
import { startEventViews } from "./events.js";
import { startWebhookViews } from "./webhooks.js";
import { healthView, loadStrips, missingModelsView, stripSlot } from "./health.js";

const FIELDS = ["name", "type", "base_url", "api_key", "models", "is_active"];
let providers = [];
let editing = null;        // the provider being edited, or null when adding
let detailsFor = null;     // the provider whose details dialog is open

// -- feedback ---------------------------------------------------------------------------------

function showBanner(message, kind = "error") {
  const banner = $("#banner");
  banner.textContent = message;
  banner.className = kind;
  banner.hidden = !message;
}

function describe(error) {
  if (error instanceof ServerUnreachable) return error.message;
  if (error instanceof ApiError) return `${error.message} (HTTP ${error.status})`;
  return String(error);
}

/** Run an action, reporting a failure in the banner; returns undefined on failure. */
async function guarded(action) {
  try {
    const result = await action();
    if ($("#banner").className === "error") showBanner("");
    return result;
  } catch (error) {
    showBanner(describe(error));
    return undefined;
  }
}

async function busy(button, action) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = `${label}…`;
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

function statusView(result) {
  if (!result) return el("span", { class: "status status-none", text: "not tested" });
  const parts = [result.status, ms(result.latency_ms)];
  if (result.checked_at) parts.push(ago(result.checked_at));
  const view = el("span", { class: `status status-${result.status}`, title: result.detail || result.checked_at },
    parts.join(" · "));
  if (result.detail) return el("span", {}, view, el("br"), el("span", { class: "muted", text: result.detail }));
  return view;
}

// -- the table --------------------------------------------------------------------------------

function filters() {
  const params = new URLSearchParams();
  const q = $("#filter-q").value.trim();
  if (q) params.set("q", q);
  if ($("#filter-type").value) params.set("type", $("#filter-type").value);
  if ($("#filter-active").value) params.set("is_active", $("#filter-active").value);
  return params.toString();
}

async function refresh() {
  const query = filters();
  const response = await guarded(() => api("GET", `/api/providers${query ? `?${query}` : ""}`));
  if (!response) return;
  providers = response.data;
  render();
}

function render() {
  const body = clear($("#providers tbody"));
  for (const provider of providers) body.append(row(provider));
  loadStrips(providers);
  const filtered = filters() !== "";
  $("#empty").hidden = providers.length > 0 || filtered;
  const online = providers.filter((p) => p.last_test && p.last_test.status === "online").length;
  const down = providers.filter((p) => p.health && p.health.state === "down").length;
  $("#summary").textContent = `${providers.length} provider${providers.length === 1 ? "" : "s"}` +
    (filtered ? " match the filters" : "") + ` · ${online} online at their last test · ${down} down`;
}

function row(provider) {
  const cell = (label, content, className) => el("td", { "data-label": label, class: className }, content);
  const missing = missingModelsView(provider.last_test);
  const testButton = el("button", { type: "button", "aria-label": `Test ${provider.name}` }, "Test");
  testButton.addEventListener("click", () => busy(testButton, () => testOne(provider)));
  return el("tr", { "data-id": provider.id },
    cell("Name", el("strong", { text: provider.name })),
    cell("Type", provider.type),
    cell("Base URL", provider.base_url, "url"),
    cell("Models", el("span", {}, String(provider.models.length), missing && el("br"), missing), "models"),
    cell("Active", provider.is_active ? "yes" : "no"),
    cell("Key", provider.has_api_key ? (provider.api_key_preview || "cannot be decrypted") : "none", "key"),
    cell("Health", el("span", {}, healthView(provider.health), stripSlot(provider)), "health-cell"),
    cell("Last test", statusView(provider.last_test), "last-test"),
    cell("Actions", [
      el("button", { type: "button", "aria-label": `Edit ${provider.name}`, onclick: () => openForm(provider) }, "Edit"),
      testButton,
      el("button", { type: "button", "aria-label": `History and models of ${provider.name}`,
        onclick: () => openDetails(provider) }, "History"),
      el("button", { type: "button", "aria-label": `Delete ${provider.name}`, onclick: () => remove(provider) }, "Delete"),
    ], "actions"));
}

async function testOne(provider) {
  const response = await guarded(() => api("POST", `/api/providers/${provider.id}/test`));
  if (!response) return;
  provider.last_test = response.data;
  // The test may have changed the provider's health: read the provider as the server now has it.
  const fresh = await guarded(() => api("GET", `/api/providers/${provider.id}`));
  const index = providers.findIndex((p) => p.id === provider.id);
  if (fresh && index >= 0) providers[index] = fresh.data;
  render();
}

async function testAll(button) {
  await busy(button, async () => {
    for (const provider of providers.filter((p) => p.is_active)) {
      const cell = document.querySelector(`tr[data-id="${provider.id}"] td.last-test`);
      if (cell) cell.replaceChildren(el("span", { class: "status status-none", text: "testing…" }));
    }
    const response = await guarded(() => api("POST", "/api/providers/test"));
    if (!response) {
      render();
      return;
    }
    const results = response.data.results;
    const online = results.filter((r) => r.status === "online").length;
    showBanner(`Tested ${results.length} active provider${results.length === 1 ? "" : "s"}: ${online} online.`, "info");
    await refresh();
  });
}

// -- add / edit -------------------------------------------------------------------------------

function clearErrors() {
  for (const name of FIELDS) {
    const message = $(`#e-${name}`);
    message.hidden = true;
    message.textContent = "";
    const input = $(`#f-${name}`);
    if (input) input.removeAttribute("aria-invalid");
  }
  $("#form-error").hidden = true;
  $("#form-probe").hidden = true;
}

function openForm(provider) {
  editing = provider || null;
  const form = $("#provider-form");
  form.reset();
  clearErrors();
  $("#provider-dialog-title").textContent = editing ? `Edit ${editing.name}` : "Add provider";
  $("#f-name").value = editing ? editing.name : "";
  $("#f-type").value = editing ? editing.type : $("#f-type").options[0].value;
  $("#f-base_url").value = editing ? editing.base_url : "";
  showBaseUrlHint();
  $("#f-api_key").value = "";  // never pre-filled, never read back
  $("#f-api_key").placeholder = editing && editing.has_api_key ? "leave empty to keep the stored key" : "optional";
  $("#remove-key-label").hidden = !(editing && editing.has_api_key);
  $("#f-models").value = editing ? editing.models.join("\n") : "";
  $("#f-is_active").checked = editing ? editing.is_active : true;
  $("#provider-dialog").showModal();
  $("#f-name").focus();
}

/** The base URL field's placeholder: the chosen type's usual base URL (from the server's type table). */
function showBaseUrlHint() {
  const chosen = $("#f-type").selectedOptions[0];
  $("#f-base_url").placeholder = (chosen && chosen.dataset.baseUrlHint) || "https://api.example.com/v1";
}

function formBody({ forTest = false } = {}) {
  const body = {
    name: $("#f-name").value,
    type: $("#f-type").value,
    base_url: $("#f-base_url").value.trim(),
    models: $("#f-models").value.split(/[\n,]/).map((m) => m.trim()).filter(Boolean),
    is_active: $("#f-is_active").checked,
  };
  const key = $("#f-api_key").value;
  if (key) body.api_key = key;
  else if (!forTest && editing && $("#f-remove_key").checked) body.api_key = null;
  return body;
}

function showFieldErrors(error) {
  if (!(error instanceof ApiError)) {
    $("#form-error").textContent = describe(error);
    $("#form-error").hidden = false;
    return;
  }
  let placed = false;
  for (const { path, message } of error.errors) {
    const field = path.split("/")[1];
    const target = $(`#e-${field}`);
    if (target && FIELDS.includes(field)) {
      target.textContent = target.textContent ? `${target.textContent}; ${message}` : message;
      target.hidden = false;
      const input = $(`#f-${field}`);
      if (input) input.setAttribute("aria-invalid", "true");
      placed = true;
    }
  }
  if (!placed || error.status !== 422) {
    $("#form-error").textContent = error.message;
    $("#form-error").hidden = false;
  }
  const firstInvalid = document.querySelector("#provider-form [aria-invalid=true]");
  if (firstInvalid) firstInvalid.focus();
}

async function save(event) {
  event.preventDefault();
  clearErrors();
  const body = formBody();
  try {
    if (editing) await api("PATCH", `/api/providers/${editing.id}`, body);
    else await api("POST", "/api/providers", body);
  } catch (error) {
    showFieldErrors(error);
    return;
  }
  $("#provider-dialog").close();
  await refresh();
}

async function testBeforeSave(button) {
  clearErrors();
  const box = $("#form-probe");
  await busy(button, async () => {
    try {
      const { data } = await api("POST", "/api/providers/test-connection", formBody({ forTest: true }));
      const lines = [el("strong", { text: "Test before save: " }), statusView(data)];
      if (data.missing_models && data.missing_models.length) {
        lines.push(el("br"), `Not offered: ${data.missing_models.join(", ")}`);
      }
      if (editing && editing.has_api_key && !$("#f-api_key").value) {
        lines.push(el("br"), el("span", { class: "muted", text: "Tested without the stored key: type it to test with it." }));
      }
      box.replaceChildren(...lines);
      box.hidden = false;
    } catch (error) {
      showFieldErrors(error);
    }
  });
}

// -- delete -----------------------------------------------------------------------------------

function confirmAction(title, text, okLabel) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  $("#confirm-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

async function remove(provider) {
  if (!(await confirmAction("Delete provider", `Delete “${provider.name}”? Its key and history go with it.`, "Delete"))) return;
  await guarded(() => api("DELETE", `/api/providers/${provider.id}`));
  await refresh();
}

// -- history and models -------------------------------------------------------------------------

async function openDetails(provider) {
  detailsFor = provider;
  $("#details-title").textContent = provider.name;
  $("#history-summary").textContent = "Loading…";
  clear($("#history-chart"));
  clear($("#discovery"));
  $("#details-dialog").showModal();
  const response = await guarded(() => api("GET", `/api/providers/${provider.id}/tests?limit=50`));
  if (!response) return;
  const { results, summary } = response.data;
  $("#history-summary").textContent = summary.count === 0 ? "No tests yet." :
    `${summary.count} tests · ${summary.online_pct}% online · p50 ${ms(summary.p50_ms)} · p95 ${ms(summary.p95_ms)}`;
  $("#history-chart").replaceChildren(latencyChart(results));
}

async function discover(button) {
  const provider = detailsFor;
  const box = clear($("#discovery"));
  await busy(button, async () => {
    let data;
    try {
      ({ data } = await api("GET", `/api/providers/${provider.id}/models/discover`));
    } catch (error) {
      box.append(el("p", { class: "form-error", text: describe(error) }));
      return;
    }
    const list = (title, models) => [el("h4", { text: `${title} (${models.length})` }),
      models.length ? el("ul", { class: "models" }, models.map((m) => el("li", { text: m }))) : el("p", { class: "muted", text: "none" })];
    box.append(...list("Offered upstream", data.models), ...list("Configured but not offered", data.missing),
      ...list("Offered but not configured", data.new));
    const sync = el("button", { type: "button", class: "primary" }, "Apply sync: use the upstream list");
    sync.addEventListener("click", () => busy(sync, async () => {
      const synced = await guarded(() => api("POST", `/api/providers/${provider.id}/models/sync`));
      if (!synced) return;
      box.replaceChildren(el("p", { text: `Models set to the ${synced.data.models.length} offered upstream.` }));
      await refresh();
    }));
    box.append(sync);
  });
}

// -- export and restore -------------------------------------------------------------------------

const MIN_PASSPHRASE_LENGTH = 12;  // as the API's portable export requires

function saveDownload(text, filename) {
  const blob = new Blob([text], { type: "application/json" });
  const link = el("a", { href: URL.createObjectURL(blob), download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function downloadExport() {
  const response = await guarded(() => api("GET", "/api/admin/providers/export"));
  if (!response) return;
  saveDownload(response.text, "provider-registry-backup.json");
}

/** A message under `input` in `box` (the page's field-error style), or none for "". */
function fieldError(input, box, message) {
  box.textContent = message;
  box.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

/** Why the API would refuse `passphrase` for a portable export, or "". */
function passphraseProblem(passphrase) {
  if ([...passphrase].length < MIN_PASSPHRASE_LENGTH) {  // characters, not UTF-16 units, as the server counts
    return `The passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters long.`;
  }
  if (passphrase !== passphrase.trim()) return "The passphrase must not start or end with whitespace.";
  return "";
}

/** The X-Backup-Passphrase header. fetch sends a header's characters as Latin-1 bytes and the server
 * reads the bytes as UTF-8, so each UTF-8 byte of the passphrase goes as one character. */
function passphraseHeaders(passphrase) {
  return { "X-Backup-Passphrase": String.fromCharCode(...new TextEncoder().encode(passphrase)) };
}

function today() {
  const now = new Date();
  return [now.getFullYear(), now.getMonth() + 1, now.getDate()].map((n) => String(n).padStart(2, "0")).join("-");
}

function resetPortableForm() {
  $("#portable-form").reset();  // both passphrase fields
  fieldError($("#p-passphrase"), $("#pe-passphrase"), "");
  fieldError($("#p-confirm"), $("#pe-confirm"), "");
  $("#p-error").hidden = true;
}

function openPortableExport() {
  resetPortableForm();
  $("#portable-dialog").showModal();
  $("#p-passphrase").focus();
}

async function downloadPortableExport(event) {
  event.preventDefault();
  const input = $("#p-passphrase");
  const again = $("#p-confirm");
  const passphrase = input.value;
  fieldError(input, $("#pe-passphrase"), passphraseProblem(passphrase));
  fieldError(again, $("#pe-confirm"), again.value === passphrase ? "" : "The two passphrases do not match.");
  $("#p-error").hidden = true;
  const firstInvalid = document.querySelector("#portable-form [aria-invalid=true]");
  if (firstInvalid) {
    firstInvalid.focus();
    return;
  }
  const dialog = $("#portable-dialog");
  await busy($("#portable-download"), async () => {
    let response;
    try {
      response = await api("POST", "/api/admin/providers/export", { passphrase });
    } catch (error) {
      const atField = error instanceof ApiError && error.status === 422 ?
        error.errors.filter((e) => e.path === "/passphrase").map((e) => e.message) : [];
      if (atField.length) {
        fieldError(input, $("#pe-passphrase"), atField.join("; "));
        input.focus();
      } else {
        $("#p-error").textContent = describe(error);
        $("#p-error").hidden = false;
      }
      return;
    }
    if (!dialog.open) return;  // cancelled while the server was exporting
    dialog.close();
    saveDownload(response.text, `provider-registry-portable-${today()}.json`);
    const count = response.data.providers.length;
    showBanner(`Downloaded a portable export of ${count} provider${count === 1 ? "" : "s"}. ` +
      "Its keys open only with the passphrase: keep it safe.", "info");
  });
}

/** The restore under way while the restore dialog is open: the file's text, the passphrase of a
 * portable export once entered, and whether its dry run passed. Dropped, passphrase and all, when
 * the dialog closes. */
let restoring = null;

/** A document with a top-level `key_wrap` object is a portable export. */
function isPortable(text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    return false;  // not JSON: the dry run says why
  }
  const keyWrap = parsed && typeof parsed === "object" ? parsed.key_wrap : null;
  return Boolean(keyWrap) && typeof keyWrap === "object" && !Array.isArray(keyWrap);
}

function restoreOptions(current) {
  return current.passphrase === null ? {} : { headers: passphraseHeaders(current.passphrase) };
}

async function chooseRestoreFile(input) {
  const file = input.files[0];
  input.value = "";
  if (!file) return;
  const text = await file.text();
  const current = { text, portable: isPortable(text), passphrase: null, previewed: false };
  restoring = current;
  $("#restore-error").hidden = true;
  clear($("#restore-diff"));
  $("#restore-confirm").disabled = true;
  $("#restore-title").textContent = `Restore from ${file.name}`;
  $("#restore-unlock").hidden = !current.portable;
  $("#restore-dialog").showModal();
  if (current.portable) $("#r-passphrase").focus();
  else await previewRestore(current);
}

async function unlockRestore(event) {
  event.preventDefault();
  const current = restoring;
  const input = $("#r-passphrase");
  if (!current) return;
  if (!input.value) {
    fieldError(input, $("#re-passphrase"), "Enter the passphrase the file was exported with.");
    input.focus();
    return;
  }
  current.passphrase = input.value;
  await busy($("#r-unlock"), () => previewRestore(current));
}

async function previewRestore(current) {
  const error = $("#restore-error");
  const input = $("#r-passphrase");
  error.hidden = true;
  fieldError(input, $("#re-passphrase"), "");
  let data;
  try {
    ({ data } = await api("POST", "/api/admin/providers/restore?dry_run=true", current.text, restoreOptions(current)));
  } catch (err) {
    if (restoring !== current) return;  // the dialog was closed meanwhile
    current.passphrase = null;
    // A passphrase that does not open the keys is a 409 without field errors (duplicates have some).
    if (current.portable && err instanceof ApiError && err.status === 409 && err.errors.length === 0) {
      fieldError(input, $("#re-passphrase"), err.message);
      input.select();
      input.focus();
      return;
    }
    error.textContent = `This file cannot be restored: ${describe(err)}`;
    error.hidden = false;
    return;
  }
  if (restoring !== current) return;
  $("#restore-unlock").hidden = true;
  input.value = "";
  const section = (title, items) => [el("h3", { text: `${title} (${items.length})` }),
    items.length ? el("ul", {}, items) : el("p", { class: "muted", text: "none" })];
  $("#restore-diff").replaceChildren(el("div", { class: "diff" },
    el("p", { text: "Nothing has changed yet. Restoring replaces the whole inventory with the file's:" }),
    ...section("Will be added", data.added.map((n) => el("li", { text: n }))),
    ...section("Will be removed", data.removed.map((n) => el("li", { text: n }))),
    ...section("Will change", data.changed.map((c) => el("li", {}, el("strong", { text: c.name }),
      ` (${c.fields.join(", ")})`))),
    el("p", { text: `Unchanged: ${data.unchanged}` })));
  current.previewed = true;
  $("#restore-confirm").disabled = false;
  $("#restore-cancel").focus();  // not the destructive button: Enter must not replace the inventory
}

async function confirmRestore(button) {
  const current = restoring;
  if (!current || !current.previewed) return;
  await busy(button, async () => {
    try {
      const { data } = await api("POST", "/api/admin/providers/restore", current.text, restoreOptions(current));
      $("#restore-dialog").close();
      showBanner(`Restored ${data.restored} providers.`, "info");
      await refresh();
    } catch (error) {
      if (restoring !== current) return;
      $("#restore-error").textContent = describe(error);
      $("#restore-error").hidden = false;
    }
  });
}

function endRestore() {
  if (restoring) restoring.passphrase = null;  // also for an answer still on its way
  restoring = null;
  $("#r-passphrase").value = "";
  fieldError($("#r-passphrase"), $("#re-passphrase"), "");
  $("#restore-unlock").hidden = true;
}

// -- the token ----------------------------------------------------------------------------------

function askForToken(reason) {
  const dialog = $("#token-dialog");
  $("#token-reason").textContent = reason;
  $("#token-input").value = "";
  dialog.returnValue = "";
  if (!dialog.open) dialog.showModal();
  $("#token-input").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const token = $("#token-input").value.trim();
      $("#token-input").value = "";
      resolve(dialog.returnValue === "ok" && token ? token : null);
    }, { once: true });
  });
}

// -- wiring -------------------------------------------------------------------------------------

function start() {
  setTokenPrompt(askForToken);
  $("#add-provider").addEventListener("click", () => openForm(null));
  $("#f-type").addEventListener("change", showBaseUrlHint);
  startAccessViews(confirmAction);
  startEventViews(() => providers);
  startWebhookViews(confirmAction);
  $("#test-all").addEventListener("click", (event) => testAll(event.currentTarget));
  $("#export").addEventListener("click", downloadExport);
  $("#export-portable").addEventListener("click", openPortableExport);
  $("#portable-form").addEventListener("submit", downloadPortableExport);
  $("#portable-cancel").addEventListener("click", () => $("#portable-dialog").close());
  $("#portable-dialog").addEventListener("close", resetPortableForm);
  $("#restore-file").addEventListener("change", (event) => chooseRestoreFile(event.currentTarget));
  $("#restore-unlock").addEventListener("submit", unlockRestore);
  $("#restore-cancel").addEventListener("click", () => $("#restore-dialog").close());
  $("#restore-dialog").addEventListener("close", endRestore);
  $("#restore-confirm").addEventListener("click", (event) => confirmRestore(event.currentTarget));
  $("#provider-form").addEventListener("submit", save);
  $("#form-cancel").addEventListener("click", () => $("#provider-dialog").close());
  $("#form-test").addEventListener("click", (event) => testBeforeSave(event.currentTarget));
  $("#details-close").addEventListener("click", () => $("#details-dialog").close());
  $("#discover").addEventListener("click", (event) => discover(event.currentTarget));
  $("#token-cancel").addEventListener("click", () => $("#token-dialog").close("cancel"));
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("#token-dialog").close("ok");
  });
  let typing;
  $("#filter-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(refresh, 250); });
  $("#filter-type").addEventListener("change", refresh);
  $("#filter-active").addEventListener("change", refresh);
  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  refresh();
}

start();
