// Shared by the grounding page and the A/B study page: the API token, API calls and small formatting helpers.
"use strict";

const TOKEN_KEY = "mgsv-api-token";

const mgsv = {
  token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },

  setToken(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },

  headers(extra = {}) {
    const headers = { ...extra };
    const token = mgsv.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  },

  // fetch() with the token; a non-2xx answer becomes an Error carrying the server's message and status.
  async call(path, options = {}) {
    const response = await fetch(path, { ...options, headers: mgsv.headers(options.headers || {}) });
    if (!response.ok) throw await mgsv.errorFrom(response.status, () => response.json(), response.headers);
    return response;
  },

  async errorFrom(status, readJson, headers) {
    let message = `the server answered ${status}`;
    let code = "http_error";
    try {
      const body = await readJson();
      if (body && body.message) message = body.message;
      if (body && body.error) code = body.error;
    } catch (ignored) {
      // not JSON (a proxy's error page): keep the status line
    }
    const error = new Error(message);
    error.status = status;
    error.code = code;
    error.retryAfter = headers && headers.get ? headers.get("Retry-After") : null;
    return error;
  },

  // The JSON body of a successful API call.
  async json(path, options = {}) {
    const response = await mgsv.call(path, options);
    return response.json();
  },

  async blobUrl(path, options = {}) {
    const response = await mgsv.call(path, options);
    const blob = await response.blob();
    return { url: URL.createObjectURL(blob), response };
  },

  seconds(value) {
    const minutes = Math.floor(value / 60);
    const rest = value - minutes * 60;
    return `${minutes}:${rest.toFixed(1).padStart(4, "0")}`;
  },

  show(element, visible) {
    element.hidden = !visible;
  },

  // The token panel: shown on 401, hides itself and calls `onToken` when a token is entered.
  wireTokenPanel(onToken) {
    const panel = document.getElementById("token-panel");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      mgsv.setToken(input.value.trim());
      input.value = "";
      panel.hidden = true;
      onToken();
    });
    return (message) => {
      document.getElementById("token-message").textContent = message;
      panel.hidden = false;
      input.focus();
    };
  },
};
