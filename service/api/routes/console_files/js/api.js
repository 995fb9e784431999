// The service's JSON APIs. The admin token lives in this module's memory only.

let adminToken = null;

export class ApiError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

export function setToken(token) {
  adminToken = token ? token : null;
}

export function hasToken() {
  return adminToken !== null;
}

async function call(method, path, { body, contentType, admin = false } = {}) {
  const headers = { Accept: "application/json" };
  if (contentType) headers["Content-Type"] = contentType;
  if (admin) {
    if (!adminToken) throw new ApiError(0, "no_token", "enter the admin token first");
    headers.Authorization = `Bearer ${adminToken}`;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "network", `the service did not answer (${error.message})`);
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const reason = payload && typeof payload.reason === "string" ? payload.reason : "http_error";
    const text = payload && typeof payload.error === "string" ? payload.error : response.statusText;
    throw new ApiError(response.status, reason, text);
  }
  return payload;
}

export function describeError(error) {
  if (error instanceof ApiError) {
    return error.status ? `${error.status} ${error.reason}: ${error.message}` : error.message;
  }
  return String(error);
}

export const api = {
  models: () => call("GET", "/models"),
  classify: (model, blob) => {
    const query = new URLSearchParams({ include_quantized: "true", include_input: "true" });
    if (model) query.set("model", model);
    return call("POST", `/classify?${query}`, {
      body: blob,
      contentType: blob.type || "application/octet-stream",
    });
  },
  jobs: (status) => {
    const query = new URLSearchParams({ limit: "100" });
    if (status) query.set("status", status);
    return call("GET", `/robustness-check?${query}`, { admin: true });
  },
  job: (id) => call("GET", `/robustness-check/${encodeURIComponent(id)}`, { admin: true }),
  submit: (request) =>
    call("POST", "/robustness-check", {
      body: JSON.stringify(request),
      contentType: "application/json",
      admin: true,
    }),
  cancel: (id) => call("DELETE", `/robustness-check/${encodeURIComponent(id)}`, { admin: true }),
};
