// The API reference: renders the sidecar's own /openapi.json, with no library and no network
// but the sidecar. Text from the document goes in with textContent only.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "className") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

// A short type text: "string", "integer | null", "array of ConnectionView", "ConnectionView".
function typeText(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  const alternatives = schema.anyOf || schema.oneOf;
  if (alternatives) return alternatives.map(typeText).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array") return `array of ${typeText(schema.items) || "any"}`;
  if (Array.isArray(schema.type)) return schema.type.join(" | ");
  return schema.type || "any";
}

function typeNode(schema) {
  const text = typeText(schema);
  if (schema && schema.$ref) return el("a", { href: `#schema-${refName(schema.$ref)}` }, text);
  if (schema && schema.type === "array" && schema.items && schema.items.$ref) {
    return el("span", {}, "array of ", typeNode(schema.items));
  }
  return el("code", {}, text);
}

function propertiesTable(schema) {
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const body = el("tbody");
  for (const [name, prop] of Object.entries(props)) {
    body.append(
      el("tr", {},
        el("td", {}, el("code", {}, name), required.has(name) ? " *" : ""),
        el("td", {}, typeNode(prop)),
        el("td", {}, prop.description || prop.title || ""),
      ),
    );
  }
  return el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Field"), el("th", {}, "Type"), el("th", {}, "Description"))), body);
}

function operation(path, method, op) {
  const details = el("details", { className: "operation", id: op.operationId || `${method}-${path}` });
  details.append(
    el("summary", {}, el("span", { className: `method method-${method}` }, method.toUpperCase()), " ",
      el("code", {}, path), " ", el("span", { className: "summary" }, op.summary || "")),
  );
  if (op.description) details.append(el("p", {}, op.description));
  if (op.security && op.security.length === 0) details.append(el("p", { className: "muted" }, "No token needed."));
  const params = op.parameters || [];
  if (params.length) {
    const body = el("tbody");
    for (const p of params) {
      body.append(el("tr", {}, el("td", {}, el("code", {}, p.name), p.required ? " *" : ""), el("td", {}, p.in),
        el("td", {}, typeNode(p.schema)), el("td", {}, p.description || "")));
    }
    details.append(el("h4", {}, "Parameters"), el("table", {}, body));
  }
  const request = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (request) details.append(el("h4", {}, "Request body"), el("p", {}, typeNode(request.schema)));
  const responses = el("tbody");
  for (const [code, response] of Object.entries(op.responses || {})) {
    const content = response.content || {};
    const media = Object.keys(content)[0];
    responses.append(el("tr", {}, el("td", {}, el("code", {}, code)), el("td", {}, response.description || ""),
      el("td", {}, media && content[media].schema ? typeNode(content[media].schema) : "")));
  }
  details.append(el("h4", {}, "Responses"), el("table", {}, responses));
  return details;
}

async function main() {
  const notice = document.getElementById("notice");
  let doc;
  try {
    const response = await fetch("openapi.json", { cache: "no-store" });
    doc = await response.json();
  } catch (error) {
    notice.textContent = `Could not load openapi.json: ${error.message}`;
    return;
  }
  const info = doc.info || {};
  document.getElementById("title").textContent = info.title || "API";
  document.getElementById("version").textContent = `${info.version || ""} · OpenAPI ${doc.openapi || ""}`;
  if (info.description) document.getElementById("intro").append(el("p", {}, info.description));
  const operations = document.getElementById("operations");
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) if (item[method]) operations.append(operation(path, method, item[method]));
  }
  const webhooks = Object.entries(doc.webhooks || {});
  if (webhooks.length) {
    const section = el("section", { id: "webhooks" }, el("h2", {}, "Webhooks (the sidecar calls the host)"));
    for (const [name, item] of webhooks) {
      for (const method of METHODS) if (item[method]) section.append(operation(name, method, item[method]));
    }
    operations.after(section);
  }
  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries((doc.components || {}).schemas || {})) {
    const details = el("details", { id: `schema-${name}` }, el("summary", {}, el("code", {}, name), " ", typeText(schema) === "object" ? "" : typeText(schema)));
    if (schema.description) details.append(el("p", {}, schema.description));
    if (schema.properties) details.append(propertiesTable(schema));
    else if (schema.enum || schema.anyOf || schema.oneOf) details.append(el("p", {}, typeNode(schema)));
    schemas.append(details);
  }
  // A link to #schema-X opens that schema.
  const open = () => {
    const target = location.hash && document.getElementById(location.hash.slice(1));
    if (target && target.tagName === "DETAILS") target.open = true;
  };
  window.addEventListener("hashchange", open);
  open();
}

document.addEventListener("DOMContentLoaded", main);
