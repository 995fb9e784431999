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

async function send(
  method, path, { body, contentType, admin = false, accept = "application/json", signal } = {},
) {
  const headers = { Accept: accept };
  if (contentType) headers["Content-Type"] = contentType;
  if (admin) {
    if (!adminToken) throw new ApiError(0, "no_token", "enter the admin token first");
    headers.Authorization = `Bearer ${adminToken}`;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store", signal });
  } catch (error) {
    if (signal?.aborted) throw error; // the caller cancelled it: not the service's failure
    throw new ApiError(0, "network", `the service did not answer (${error.message})`);
  }
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
    const reason = payload && typeof payload.reason === "string" ? payload.reason : "http_error";
    const text = payload && typeof payload.error === "string" ? payload.error : response.statusText;
    throw new ApiError(response.status, reason, text);
  }
  return response;
}

async function call(method, path, options) {
  const response = await send(method, path, options);
  try {
    return await response.json();
  } catch {
    return null;
  }
}

export function describeError(error) {
  if (error instanceof ApiError) {
    return error.status ? `${error.status} ${error.reason}: ${error.message}` : error.message;
  }
  return String(error);
}

// The file name the service gave a download (Content-Disposition), or the fallback.
function fileName(response, fallback) {
  const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  return match ? match[1] : fallback;
}

const jobPath = (id) => `/robustness-check/${encodeURIComponent(id)}`;
const modelPath = (name) => `/admin/models/${encodeURIComponent(name)}`;

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
  jobs: ({ status, model, limit = 500, signal } = {}) => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (status) query.set("status", status);
    if (model) query.set("model", model);
    return call("GET", `/robustness-check?${query}`, { admin: true, signal });
  },
  job: (id) => call("GET", jobPath(id), { admin: true }),
  // Each model with its manifest and a summary of the report published with its weights.
  adminModels: () => call("GET", "/admin/models", { admin: true }),
  publishedReport: (name) => call("GET", `${modelPath(name)}/published-report`, { admin: true }),
  submit: (request, samples) => {
    if (!samples) {
      return call("POST", "/robustness-check", {
        body: JSON.stringify(request),
        contentType: "application/json",
        admin: true,
      });
    }
    // A labelled set: a form with the request and the file (the browser sets the boundary).
    const form = new FormData();
    form.append("request", JSON.stringify(request));
    form.append("samples", samples, samples.name || "samples.npz");
    return call("POST", "/robustness-check", { body: form, admin: true });
  },
  cancel: (id) => call("DELETE", jobPath(id), { admin: true }),
  // The report as a file to save: "json" or "html"; resolves to { blob, name }.
  reportFile: async (id, kind) => {
    const accept = kind === "html" ? "text/html" : "application/json";
    const response = await send("GET", `${jobPath(id)}/report.${kind}`, { admin: true, accept });
    return { blob: await response.blob(), name: fileName(response, `report-${id}.${kind}`) };
  },
};
