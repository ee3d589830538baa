// The Tokens and Audit views: API tokens (created with a one-time reveal, revoked after a
// confirmation) and the audit log (filtered, newest first, paged with "Older records").

import { api, ApiError } from "./api.js";
import { $, ago, clear, el } from "./dom.js";

let confirmAction = null;
let olderThan = null;

function scope(token) {
  return token.providers === null ? "all" : token.providers.join(", ");
}

async function loadTokens() {
  const { data } = await api("GET", "/api/tokens");
  const body = clear($("#tokens tbody"));
  for (const token of data) {
    const revoke = el("button", { type: "button", class: "danger", text: "Revoke" });
    revoke.addEventListener("click", async () => {
      if (!(await confirmAction("Revoke token", `Revoke “${token.name}”? Applications using it stop at once.`,
        "Revoke"))) return;
      try {
        await api("DELETE", `/api/tokens/${token.id}`);
      } catch (error) {
        showError(error);
      }
      await loadTokens();
    });
    body.append(el("tr", {},
      el("td", { text: token.name }), el("td", { text: token.role }), el("td", { text: scope(token) }),
      el("td", { text: token.last_used_at ? ago(token.last_used_at) : "never", title: token.last_used_at || "" }),
      el("td", { text: token.expires_at || "never" }), el("td", {}, revoke)));
  }
}

function showError(error) {
  const box = $("#t-error");
  box.textContent = error instanceof ApiError ? error.message : String(error);
  box.hidden = false;
}

async function createToken(event) {
  event.preventDefault();
  $("#t-error").hidden = true;
  const body = { name: $("#t-name").value, role: $("#t-role").value };
  const providers = $("#t-providers").value.trim();
  if (providers) body.providers = providers.split(",").map((id) => Number(id.trim()));
  if ($("#t-expires").value) body.expires_in_days = Number($("#t-expires").value);
  try {
    const { data } = await api("POST", "/api/tokens", body);
    $("#t-secret").value = data.token;
    $("#t-copied").textContent = "";
    $("#t-reveal").hidden = false;
    $("#token-create").reset();
  } catch (error) {
    showError(error);
  }
  await loadTokens();
}

async function copySecret() {
  const secret = $("#t-secret");
  secret.select();
  try {
    await navigator.clipboard.writeText(secret.value);
    $("#t-copied").textContent = "Copied.";
  } catch {
    $("#t-copied").textContent = "Selected: press Ctrl+C to copy.";
  }
}

async function loadAudit({ more = false } = {}) {
  const params = new URLSearchParams({ limit: "50" });
  if ($("#a-action").value) params.set("action", $("#a-action").value);
  if ($("#a-actor").value.trim()) params.set("actor", $("#a-actor").value.trim());
  if ($("#a-target").value) params.set("target_id", $("#a-target").value);
  if (more && olderThan !== null) params.set("before", String(olderThan));
  const { data } = await api("GET", `/api/audit?${params}`);
  const body = $("#audit tbody");
  if (!more) clear(body);
  for (const event of data.events) {
    const target = [event.target_type, event.target_id, event.target_name].filter((v) => v !== null).join(" ");
    body.append(el("tr", {},
      el("td", { text: ago(event.at), title: event.at }),
      el("td", { text: `${event.actor} (${event.role})` }),
      el("td", { text: event.count > 1 ? `${event.action} ×${event.count}` : event.action }),
      el("td", { text: target }), el("td", { text: event.fields.join(", ") }), el("td", { text: event.client || "" })));
  }
  olderThan = data.next_before;
  $("#a-older").hidden = olderThan === null;
}

/** `confirm(title, text, okLabel)` resolves true when the person confirms (the page's own dialog). */
export function startAccessViews(confirm) {
  confirmAction = confirm;
  $("#open-tokens").addEventListener("click", async () => {
    $("#t-reveal").hidden = true;
    $("#t-secret").value = "";
    $("#tokens-dialog").showModal();
    await loadTokens();
  });
  $("#tokens-close").addEventListener("click", () => {
    $("#t-secret").value = "";  // the secret does not stay on the page
    $("#tokens-dialog").close();
  });
  $("#token-create").addEventListener("submit", createToken);
  $("#t-copy").addEventListener("click", copySecret);
  $("#open-audit").addEventListener("click", async () => {
    $("#audit-dialog").showModal();
    await loadAudit();
  });
  $("#audit-close").addEventListener("click", () => $("#audit-dialog").close());
  $("#audit-filters").addEventListener("submit", (event) => { event.preventDefault(); loadAudit(); });
  $("#a-older").addEventListener("click", () => loadAudit({ more: true }));
}
