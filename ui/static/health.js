// A provider's health in its table row: the state (up / down / unknown) since when, the strip of
// its last 20 results (oldest left, newest right) and the configured models the last test missed.
// Strips are fetched after the table is drawn, a few at a time, and kept until a newer test.

import { api } from "./api.js";
import { ago, clear, el, ms } from "./dom.js";

export const STRIP_LENGTH = 20;
const STRIP_CONCURRENCY = 6;
const MISSING_SHOWN = 3;

const strips = new Map();  // provider id -> {checkedAt, data}: the last history fetched for that test
let queue = [];            // providers whose strips wait for a free fetch, for the table as last drawn
let running = 0;

/** The health cell: the state as colour and word, since when, and why when down. */
export function healthView(health) {
  const state = (health && health.state) || "unknown";
  const since = health && health.since;
  const reason = state === "down" ? health.reason : null;
  const title = [since ? `${state} since ${since}` : state, reason].filter(Boolean).join(": ");
  const view = [el("span", { class: `health health-${state}`, title, text: state })];
  if (since) view.push(" ", el("span", { class: "muted", title: since, text: `since ${ago(since)}` }));
  if (reason) view.push(el("br"), el("span", { class: "muted reason", text: reason }));
  return view;
}

/** "missing: a, b +2 more" when the last test found configured models the provider does not offer. */
export function missingModelsView(lastTest) {
  const missing = (lastTest && lastTest.missing_models) || [];
  if (missing.length === 0) return null;
  const shown = missing.slice(0, MISSING_SHOWN).join(", ");
  const more = missing.length > MISSING_SHOWN ? ` +${missing.length - MISSING_SHOWN} more` : "";
  return el("span", { class: "missing", title: `Not offered at the last test: ${missing.join(", ")}` },
    `missing: ${shown}${more}`);
}

function resultLabel(result) {
  return `${result.status} ${ms(result.latency_ms)} at ${result.checked_at}`;
}

/** The blocks of the last results (given newest first, as the API lists them), each with a text alternative. */
export function stripView(results) {
  const oldestFirst = [...results].reverse();
  const online = results.filter((r) => r.status === "online").length;
  const summary = results.length === 0 ? "no tests yet" : `${online} of ${results.length} online`;
  return el("span", { class: results.length ? "strip" : "strip strip-empty", role: "group",
    "aria-label": `Last ${STRIP_LENGTH} tests` },
    el("span", { class: "visually-hidden strip-summary", text: summary }),
    oldestFirst.map((result) => el("span", {
      class: `block block-${result.status}`, role: "img", title: resultLabel(result), "aria-label": resultLabel(result),
    })));
}

function checkedAt(provider) {
  return provider.last_test ? provider.last_test.checked_at : null;
}

function stripCell(providerId) {
  return document.querySelector(`#providers tr[data-id="${providerId}"] .strip-slot`);
}

/** A placeholder for the row's strip: the one already fetched for this test, or one to be fetched. */
export function stripSlot(provider) {
  const slot = el("span", { class: "strip-slot" });
  const known = strips.get(provider.id);
  if (known && known.checkedAt === checkedAt(provider)) slot.append(stripView(known.data.results));
  else slot.append(el("span", { class: "muted strip-loading", text: "loading history…" }));
  return slot;
}

/** Fetch the strips the rows just drawn lack, at most STRIP_CONCURRENCY at a time. Rows drawn
 * earlier and not yet fetched are dropped from the queue: only the table on the page counts. */
export function loadStrips(providers) {
  queue = providers.filter((p) => {
    const known = strips.get(p.id);
    return !(known && known.checkedAt === checkedAt(p));
  });
  while (running < STRIP_CONCURRENCY && queue.length) fetchNext();
}

async function fetchNext() {
  const provider = queue.shift();
  if (!provider) return;
  running += 1;
  const wanted = checkedAt(provider);
  try {
    const { data } = await api("GET", `/api/providers/${provider.id}/tests?limit=${STRIP_LENGTH}`);
    const latest = data.results.length ? data.results[0].checked_at : null;
    strips.set(provider.id, { checkedAt: latest === wanted ? wanted : latest, data });
    const slot = stripCell(provider.id);
    if (slot) clear(slot).append(stripView(data.results));
  } catch (error) {
    const slot = stripCell(provider.id);
    if (slot) clear(slot).append(el("span", { class: "muted", title: String(error.message || error),
      text: "history unavailable" }));
  } finally {
    running -= 1;
    if (queue.length) fetchNext();
  }
}
