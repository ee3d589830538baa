// The Events view: providers going down, coming back up and certificates about to expire, newest
// first, filtered by provider and type. The feed is read forward from the last event seen
// (GET /api/events?after=ID), a bounded number of pages per opening, and the latest FEED_KEEP kept.

import { api } from "./api.js";
import { $, ago, clear, el, ms } from "./dom.js";

/** The tone each event type's badge is shown in; the types themselves come from the server's table,
 * rendered into the page (the type filter's options and the webhook form's checkboxes). */
const TONES = { "provider.down": "bad", "provider.up": "good", "provider.cert_expiring": "warn" };

export function eventTypes() {
  return [...document.querySelectorAll("#ev-type option")].map((option) => option.value).filter(Boolean);
}

const FEED_PAGE = 1000;
const FEED_PAGES = 5;   // pages read per opening; "Newer events" reads on
const FEED_KEEP = 200;
const PROVIDER_LIMIT = 200;

let feed = [];          // the latest events of the feed, oldest first
let feedAfter = 0;      // the feed's cursor: the id after which the next page starts
let feedReading = null; // the read in progress, shared so two loads never append the same page twice
let shownLoad = 0;      // only the latest load fills the table
let getProviders = () => [];

/** A colour-plus-text badge; `tone` is good, warn, bad or none. */
export function badge(text, tone) {
  return el("span", { class: `badge tone-${tone}`, text });
}

export function eventBadge(type) {
  return badge(type, TONES[type] || "none");
}

function resultView(result) {
  if (!result || typeof result !== "object") return result ? String(result) : "–";
  const parts = [result.status, result.status_code ? `HTTP ${result.status_code}` : null, ms(result.latency_ms)];
  return el("span", { title: result.detail || result.checked_at || "" }, parts.filter(Boolean).join(" · "));
}

function eventRow(event) {
  const provider = event.provider_name ? `${event.provider_name} (#${event.provider_id})` : `#${event.provider_id}`;
  const change = event.from || event.to ? `${event.from || "–"} → ${event.to || "–"}` : "";
  return el("tr", { "data-id": event.id, "data-type": event.type },
    el("td", { "data-label": "When", text: ago(event.at), title: event.at }),
    el("td", { "data-label": "Provider", text: provider }),
    el("td", { "data-label": "Event" }, eventBadge(event.type)),
    el("td", { "data-label": "Change", text: change }),
    el("td", { "data-label": "Reason", class: "reason", text: event.reason || "" }),
    el("td", { "data-label": "Result" }, resultView(event.result)));
}

/** Reads the feed on from its cursor; resolves true when it reached the newest event. */
function readFeed() {
  if (!feedReading) feedReading = readFeedPages().finally(() => { feedReading = null; });
  return feedReading;
}

async function readFeedPages() {
  for (let page = 0; page < FEED_PAGES; page += 1) {
    const { data } = await api("GET", `/api/events?after=${feedAfter}&limit=${FEED_PAGE}`);
    feed = feed.concat(data.events).slice(-FEED_KEEP);
    const last = data.events.length ? data.events[data.events.length - 1].id : feedAfter;
    feedAfter = data.next_after === null || data.next_after === undefined ? last : data.next_after;
    if (data.events.length < FEED_PAGE) return true;
  }
  return false;
}

function fillProviderChoices() {
  const select = $("#ev-provider");
  const chosen = select.value;
  const options = [el("option", { value: "", text: "any" })];
  for (const provider of [...getProviders()].sort((a, b) => a.name.localeCompare(b.name))) {
    options.push(el("option", { value: provider.id, text: provider.name }));
  }
  select.replaceChildren(...options);
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

async function loadEvents() {
  const summary = $("#ev-summary");
  const providerId = $("#ev-provider").value;
  const type = $("#ev-type").value;
  summary.textContent = "Loading…";
  const load = ++shownLoad;
  let events;
  let complete = true;
  try {
    if (providerId) {
      ({ data: { events } } = await api("GET", `/api/providers/${providerId}/events?limit=${PROVIDER_LIMIT}`));
    } else {
      complete = await readFeed();
      events = [...feed].reverse();
    }
  } catch (error) {
    if (load === shownLoad) summary.textContent = `The events cannot be read: ${error.message}`;
    return;
  }
  if (load !== shownLoad) return;
  const shown = type ? events.filter((e) => e.type === type) : events;
  clear($("#events tbody")).append(...shown.map(eventRow));
  summary.textContent = `${shown.length} event${shown.length === 1 ? "" : "s"}, newest first` +
    (providerId || type ? " (filtered)" : "") + (complete ? "" : " · newer events remain to be read");
  $("#ev-newer").hidden = complete;
}

/** `providers()` returns the providers the page has loaded (for the provider filter). */
export function startEventViews(providers) {
  getProviders = providers;
  $("#open-events").addEventListener("click", async () => {
    fillProviderChoices();
    $("#events-dialog").showModal();
    await loadEvents();
  });
  $("#events-close").addEventListener("click", () => $("#events-dialog").close());
  $("#ev-provider").addEventListener("change", loadEvents);
  $("#ev-type").addEventListener("change", loadEvents);
  $("#events-filters").addEventListener("submit", (event) => { event.preventDefault(); loadEvents(); });
  $("#ev-newer").addEventListener("click", loadEvents);
}
