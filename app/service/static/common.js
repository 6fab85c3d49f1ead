"use strict";
// Shared helpers of the copytrace pages: safe DOM building (text only, never HTML from data),
// JSON fetches that say what went wrong, the header's one-line index summary.

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

async function apiJson(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail
                                          : JSON.stringify(body.detail)) : response.statusText;
    throw new ApiError(response.status, detail);
  }
  return body;
}

function signInHint(error) {
  if (error instanceof ApiError && error.status === 401) {
    return el("span", {}, "Not signed in or the token changed: ", el("a", {href: "/login"}, "sign in"), ".");
  }
  return error.message || String(error);
}

function fmt(value, digits) {
  return typeof value === "number" ? value.toFixed(digits === undefined ? 3 : digits) : String(value);
}

async function showSummary() {
  const target = document.getElementById("summary");
  try {
    const manifest = await apiJson("/v1/index");
    const count = manifest.counts && (manifest.counts.indexed ?? manifest.counts.inputs);
    target.textContent = `${count} images · model ${manifest.model.id} · ${manifest.index.spec} · version ${manifest.version}`;
    return manifest;
  } catch (error) {
    target.replaceChildren(signInHint(error));
    return null;
  }
}
