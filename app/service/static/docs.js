"use strict";
// The JSON API's documentation, rendered here from the service's own /openapi.json (no CDN).

function ref(schema, spec) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
  return schema;
}

function typeOf(schema, spec) {
  schema = schema || {};
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(s, spec)).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.type === "array") return `${typeOf(schema.items, spec)}[]`;
  return schema.type || "any";
}

function nestedRef(prop) {
  if (prop.$ref) return prop.$ref;
  if (prop.type === "array" && prop.items && prop.items.$ref) return prop.items.$ref;
  return null;
}

function fieldsTable(schema, spec, depth) {
  schema = ref(schema, spec);
  if (!schema || !schema.properties) return null;
  const nested = depth ? [] : Object.values(schema.properties).map(nestedRef).filter(Boolean)
    .map((r) => el("details", {}, el("summary", {text: `fields of ${r.split("/").pop()}`}),
                   fieldsTable({$ref: r}, spec, 1)));
  const rows = Object.entries(schema.properties).map(([name, prop]) => el("tr", {},
    el("td", {}, el("code", {text: name})), el("td", {text: typeOf(prop, spec)}),
    el("td", {text: prop.description || ""})));
  const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", {text: "field"}), el("th", {text: "type"}),
                                                   el("th", {text: "meaning"}))), el("tbody", {}, rows));
  return nested.length ? el("div", {}, table, nested) : table;
}

function operation(path, method, op, spec) {
  const params = (op.parameters || []).map((p) => el("tr", {},
    el("td", {}, el("code", {text: p.name})), el("td", {text: p.in}),
    el("td", {text: typeOf(p.schema, spec) + (p.schema && p.schema.default !== undefined ? ` = ${p.schema.default}` : "")}),
    el("td", {text: p.description || (p.required ? "required" : "")})));
  const responses = Object.entries(op.responses || {}).map(([status, response]) => {
    const content = response.content || {};
    const json = content["application/json"];
    const schema = json ? ref(json.schema, spec) : null;
    const example = schema && schema.examples ? schema.examples[0] : null;
    return el("div", {class: "response"},
      el("h4", {}, el("span", {class: `status s${status[0]}`, text: status}), " ",
         response.description || "", schema && json.schema.$ref ? ` — ${typeOf(json.schema, spec)}` : "",
         Object.keys(content).filter((t) => t !== "application/json").map((t) => ` (${t})`).join("")),
      status.startsWith("2") ? fieldsTable(json && json.schema, spec, 0) : null,
      example ? el("details", {}, el("summary", {text: "example"}), el("pre", {text: JSON.stringify(example, null, 2)})) : null);
  });
  const body = op.requestBody ? el("p", {}, "Body: ", Object.keys(op.requestBody.content || {}).join(", "),
                                   " — the image file's bytes.") : null;
  return el("section", {class: "card op", id: `${method}-${path}`},
    el("h2", {}, el("span", {class: `method ${method}`, text: method.toUpperCase()}), " ", el("code", {text: path})),
    op.description ? el("p", {class: "desc", text: op.description}) : op.summary ? el("p", {text: op.summary}) : null,
    body,
    params.length ? el("table", {}, el("thead", {}, el("tr", {}, ["name", "in", "type", "meaning"].map((h) => el("th", {text: h})))),
                      el("tbody", {}, params)) : null,
    responses);
}

async function main() {
  const target = document.getElementById("api");
  let spec;
  try {
    spec = await apiJson("/openapi.json");
  } catch (error) {
    target.replaceChildren(el("p", {class: "error"}, signInHint(error)));
    return;
  }
  document.getElementById("api-intro").textContent = spec.info.description.replace(/\[\/\]\(\/\)/, "/");
  const sections = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) sections.push(operation(path, method, op, spec));
  }
  target.replaceChildren(...sections);
}

main();
