// Building DOM without HTML strings: text always goes in as text nodes, never as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attributes, children) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function el(tag, attributes, ...children) {
  return build(document.createElement(tag), attributes, children);
}

export function svg(tag, attributes, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attributes, children);
}

export function byId(id) {
  return document.getElementById(id);
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

export function pngData(base64) {
  // Only base64 characters may reach the URL: anything else would be a different URL.
  if (typeof base64 !== "string" || !/^[A-Za-z0-9+/=]*$/.test(base64)) return "";
  return `data:image/png;base64,${base64}`;
}

// Save a blob as a file with this name (the browser's download, no navigation).
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  // Freed a minute later: the download has read the blob by then.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
