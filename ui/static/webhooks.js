// The Webhooks view: add a webhook (its signing secret shown this once), ping it, switch it off and
// on, delete it after a confirmation, and read its deliveries (newest first) in a details panel.

import { api, ApiError } from "./api.js";
import { $, ago, clear, el, ms } from "./dom.js";
import { badge, eventTypes } from "./events.js";

const FIELDS = ["url", "events", "description"];
const OUTCOME_TONES = { delivered: "good", retry: "warn", failed: "bad" };
const DELIVERIES_LIMIT = 50;

let confirmAction = null;
let deliveriesFor = null;  // the webhook whose deliveries the panel shows, or null

function outcomeBadge(outcome) {
  return badge(outcome, OUTCOME_TONES[outcome] || "none");
}

function attemptSummary(delivery) {
  const parts = [delivery.status_code ? `HTTP ${delivery.status_code}` : null, ms(delivery.latency_ms), delivery.error];
  return parts.filter(Boolean).join(" · ");
}

// -- errors -----------------------------------------------------------------------------------------

function clearErrors() {
  for (const name of FIELDS) {
    const message = $(`#we-${name}`);
    message.hidden = true;
    message.textContent = "";
    const input = $(`#w-${name}`);
    if (input) input.removeAttribute("aria-invalid");
  }
  $("#w-error").hidden = true;
}

function showError(error) {
  $("#w-error").textContent = error instanceof ApiError ? `${error.message} (HTTP ${error.status})` : String(error.message || error);
  $("#w-error").hidden = false;
}

/** 422 messages go beside their fields (by JSON-pointer path); anything else above the form. */
function showFieldErrors(error) {
  let placed = false;
  for (const { path, message } of (error instanceof ApiError && error.status === 422 ? error.errors : [])) {
    const field = (path || "").split("/")[1];
    if (!FIELDS.includes(field)) continue;
    const target = $(`#we-${field}`);
    target.textContent = target.textContent ? `${target.textContent}; ${message}` : message;
    target.hidden = false;
    $(`#w-${field}`).setAttribute("aria-invalid", "true");
    placed = true;
  }
  if (!placed) showError(error);
  const firstInvalid = document.querySelector("#webhook-create [aria-invalid=true]");
  if (firstInvalid) firstInvalid.focus();
}

// -- the list ---------------------------------------------------------------------------------------

async function loadWebhooks() {
  let webhooks;
  try {
    ({ data: webhooks } = await api("GET", "/api/webhooks"));
  } catch (error) {
    showError(error);
    return;
  }
  clear($("#webhooks tbody")).append(...webhooks.map(webhookRow));
  $("#w-empty").hidden = webhooks.length > 0;
  if (deliveriesFor && !webhooks.some((w) => w.id === deliveriesFor.id)) closeDeliveries();
}

function webhookRow(webhook) {
  const name = webhook.url;
  const button = (label, ariaLabel, action, className) => {
    const node = el("button", { type: "button", class: className, "aria-label": ariaLabel, text: label });
    node.addEventListener("click", () => action(node));
    return node;
  };
  const showing = deliveriesFor && deliveriesFor.id === webhook.id;
  const deliveries = button("Deliveries", `Deliveries to ${name}`, () => openDeliveries(webhook));
  deliveries.setAttribute("aria-expanded", showing ? "true" : "false");
  deliveries.setAttribute("aria-controls", "w-deliveries");
  return el("tr", { "data-id": webhook.id },
    el("td", { "data-label": "URL", class: "url" }, el("span", {}, webhook.url,
      webhook.description && el("br"), webhook.description && el("span", { class: "muted", text: webhook.description }))),
    el("td", { "data-label": "Events" }, el("span", {}, (webhook.events || ["all"]).flatMap((type, i) =>
      [i ? el("br") : null, type]))),
    el("td", { "data-label": "Active" }, webhook.is_active ? badge("active", "good") : badge("inactive", "none")),
    el("td", { "data-label": "Created", text: ago(webhook.created_at), title: webhook.created_at }),
    el("td", { "data-label": "Actions", class: "actions" },
      button("Ping", `Ping ${name}`, (node) => ping(webhook, node)),
      deliveries,
      button(webhook.is_active ? "Deactivate" : "Activate", `${webhook.is_active ? "Deactivate" : "Activate"} ${name}`,
        () => setActive(webhook, !webhook.is_active)),
      button("Delete", `Delete ${name}`, () => remove(webhook), "danger")));
}

// -- create -----------------------------------------------------------------------------------------

async function createWebhook(event) {
  event.preventDefault();
  clearErrors();
  $("#w-reveal").hidden = true;
  $("#w-secret").value = "";
  const body = { url: $("#w-url").value.trim() };
  const events = [...document.querySelectorAll("#w-events input:checked")].map((box) => box.value);
  // Every type ticked is the API's default (absent: all of them, types added later too).
  if (events.length < eventTypes().length) body.events = events;
  const description = $("#w-description").value.trim();
  if (description) body.description = description;
  try {
    const { data } = await api("POST", "/api/webhooks", body);
    $("#w-secret").value = data.secret;
    $("#w-copied").textContent = "";
    $("#w-reveal").hidden = false;
    $("#webhook-create").reset();
  } catch (error) {
    showFieldErrors(error);
    return;
  }
  await loadWebhooks();
}

async function copySecret() {
  const secret = $("#w-secret");
  secret.select();
  try {
    await navigator.clipboard.writeText(secret.value);
    $("#w-copied").textContent = "Copied.";
  } catch {
    $("#w-copied").textContent = "Selected: press Ctrl+C to copy.";
  }
}

// -- actions ----------------------------------------------------------------------------------------

async function ping(webhook, button) {
  const status = $("#w-status");
  button.disabled = true;
  status.replaceChildren(`Pinging ${webhook.url}…`);
  try {
    const { data } = await api("POST", `/api/webhooks/${webhook.id}/ping`);
    status.replaceChildren(`Ping to ${webhook.url}: `, outcomeBadge(data.outcome), ` ${attemptSummary(data)}`);
    if (deliveriesFor && deliveriesFor.id === webhook.id) await loadDeliveries();
  } catch (error) {
    status.replaceChildren(`Ping to ${webhook.url} could not be sent: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

async function setActive(webhook, isActive) {
  try {
    await api("PATCH", `/api/webhooks/${webhook.id}`, { is_active: isActive });
    $("#w-status").textContent = `${webhook.url} is now ${isActive ? "active" : "inactive"}.`;
  } catch (error) {
    showError(error);
  }
  await loadWebhooks();
}

async function remove(webhook) {
  if (!(await confirmAction("Delete webhook", `Delete the webhook to “${webhook.url}”? It receives no more events.`,
    "Delete"))) return;
  try {
    await api("DELETE", `/api/webhooks/${webhook.id}`);
    $("#w-status").textContent = `Deleted the webhook to ${webhook.url}.`;
  } catch (error) {
    showError(error);
  }
  await loadWebhooks();
}

// -- deliveries -------------------------------------------------------------------------------------

async function openDeliveries(webhook) {
  deliveriesFor = webhook;
  for (const button of document.querySelectorAll("#webhooks [aria-controls=w-deliveries]")) {
    button.setAttribute("aria-expanded", button.closest("tr").dataset.id === String(webhook.id) ? "true" : "false");
  }
  $("#w-deliveries-title").textContent = `Deliveries to ${webhook.url}`;
  $("#w-deliveries").hidden = false;
  await loadDeliveries();
  $("#w-deliveries-title").focus();
}

function closeDeliveries() {
  deliveriesFor = null;
  $("#w-deliveries").hidden = true;
  clear($("#deliveries tbody"));
  for (const button of document.querySelectorAll("#webhooks [aria-controls=w-deliveries]")) {
    button.setAttribute("aria-expanded", "false");
  }
}

function deliveryRow(delivery) {
  return el("tr", { "data-id": delivery.id },
    el("td", { "data-label": "When", text: ago(delivery.at), title: delivery.at }),
    el("td", { "data-label": "Type", text: delivery.type }),
    el("td", { "data-label": "Attempt", text: String(delivery.attempt) }),
    el("td", { "data-label": "Outcome" }, outcomeBadge(delivery.outcome)),
    el("td", { "data-label": "Status", text: delivery.status_code === null ? "–" : String(delivery.status_code) }),
    el("td", { "data-label": "Latency", text: ms(delivery.latency_ms) }),
    el("td", { "data-label": "Error", class: "reason", text: delivery.error || "" }),
    el("td", { "data-label": "Next attempt", text: delivery.next_attempt_at ? ago(delivery.next_attempt_at) : "–",
      title: delivery.next_attempt_at || "" }));
}

async function loadDeliveries() {
  const webhook = deliveriesFor;
  const summary = $("#w-deliveries-summary");
  summary.textContent = "Loading…";
  let deliveries;
  try {
    ({ data: { deliveries } } = await api("GET", `/api/webhooks/${webhook.id}/deliveries?limit=${DELIVERIES_LIMIT}`));
  } catch (error) {
    summary.textContent = `The deliveries cannot be read: ${error.message}`;
    return;
  }
  if (deliveriesFor !== webhook) return;
  clear($("#deliveries tbody")).append(...deliveries.map(deliveryRow));
  summary.textContent = deliveries.length === 0 ? "No deliveries yet." :
    `The last ${deliveries.length} deliver${deliveries.length === 1 ? "y" : "ies"}, newest first.`;
}

// -- wiring -----------------------------------------------------------------------------------------

/** `confirm(title, text, okLabel)` resolves true when the person confirms (the page's own dialog). */
export function startWebhookViews(confirm) {
  confirmAction = confirm;
  $("#open-webhooks").addEventListener("click", async () => {
    clearErrors();
    $("#w-reveal").hidden = true;
    $("#w-secret").value = "";
    $("#w-status").textContent = "";
    closeDeliveries();
    $("#webhooks-dialog").showModal();
    await loadWebhooks();
  });
  const forgetSecret = () => { $("#w-secret").value = ""; };  // the secret does not stay on the page
  $("#webhooks-close").addEventListener("click", () => { forgetSecret(); $("#webhooks-dialog").close(); });
  $("#webhooks-dialog").addEventListener("close", forgetSecret);  // closed with Escape too
  $("#webhook-create").addEventListener("submit", createWebhook);
  $("#w-copy").addEventListener("click", copySecret);
  $("#w-deliveries-refresh").addEventListener("click", loadDeliveries);
  $("#w-deliveries-close").addEventListener("click", closeDeliveries);
}
