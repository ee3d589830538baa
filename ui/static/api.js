// The page talks to the server only through its public JSON API. The admin token, when the server
// asks for one, lives in sessionStorage (this tab only) and nowhere else.

const TOKEN_KEY = "provider-registry-admin-token";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.errors = (body && body.errors) || [];
  }
}

export class ServerUnreachable extends Error {
  constructor() {
    super("The server cannot be reached. Is it running?");
  }
}

let tokenPrompt = null;

/** `prompt(reason)` resolves to a token, or null when the person cancels. */
export function setTokenPrompt(prompt) {
  tokenPrompt = prompt;
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Calls the API; resolves to the parsed JSON (or null for an empty body). On 401 it asks for the
 * token and tries again. Throws ApiError (with `errors` for 422) or ServerUnreachable.
 * `options.headers` adds request headers (their values as Latin-1 strings, as fetch sends them). */
export async function api(method, path, body, options = {}) {
  for (let attempt = 0; attempt < 4; attempt += 1) {
    const headers = { ...options.headers, Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ServerUnreachable();
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (response.status === 401 && tokenPrompt) {
      const reason = token ? "That token was refused. Enter the admin token again." :
        "This server requires an admin token (BACKEND_ADMIN_TOKEN or an admin API token).";
      const entered = await tokenPrompt(reason);
      if (entered === null) throw new ApiError(401, data);
      sessionStorage.setItem(TOKEN_KEY, entered);
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, headers: response.headers, text };
  }
  throw new ApiError(401, { detail: "The admin token was refused." });
}
