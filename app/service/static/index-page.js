"use strict";
// The index page: the manifest of the served index, laid out for a person.

function factList(object) {
  const list = el("dl");
  for (const [key, value] of Object.entries(object || {})) {
    let shown;
    if (value === null || value === undefined || value === "") shown = el("span", {class: "muted", text: "—"});
    else if (Array.isArray(value) && value.every((v) => typeof v !== "object")) shown = value.length > 6
      ? `${value.slice(0, 5).join(", ")} … (${value.length} in all)` : value.join(", ");
    else if (typeof value === "object") shown = el("pre", {text: JSON.stringify(value, null, 2)});
    else shown = String(value);
    list.append(el("dt", {text: key}), el("dd", {}, shown));
  }
  return list;
}

function section(title, object, note) {
  return el("section", {class: "card"}, el("h2", {text: title}), note ? el("p", {class: "muted", text: note}) : null,
            factList(object));
}

async function main() {
  const target = document.getElementById("index");
  const manifest = await showSummary();
  if (!manifest) {
    target.replaceChildren(el("p", {class: "error"}, "The index could not be read."));
    return;
  }
  let health = null;
  try { health = await apiJson("/v1/health"); } catch (_) { health = null; }
  const faiss = {...manifest.index};
  const tuning = faiss.tuning;
  delete faiss.tuning;
  const size = {...manifest.counts};
  if (health) size["searchable now"] = health.images;
  const version = {version: manifest.version, format: manifest.format, created: manifest.created,
                   updated: manifest.updated, "PDQ hashes in the catalog": manifest.pdq ? "yes" : "no",
                   source: manifest.source};
  target.replaceChildren(
    section("Model", manifest.model, "The descriptor every query is embedded with."),
    section("Size", size),
    section("Search (FAISS)", faiss),
    section("Tuning", tuning || {tuning: null}, tuning ? "What the search parameters were tuned on and reached." : "Not tuned: the defaults for this size."),
    section("Version", version),
    section("Built with", manifest.versions || {}),
  );
}

main();
