// The logic API's reference page (GET /docs): /openapi.json, rendered without any
// library. Every value from the description goes into the page as text, never as HTML.

const METHODS = ["get", "post", "put", "delete", "head"];

function element(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

// A schema, followed through its $refs, as a short JSON sketch of its shape.
function sketch(schema, spec, depth = 0) {
  if (!schema || depth > 6) return "…";
  if (schema.$ref) {
    const target = schema.$ref.replace("#/", "").split("/").reduce((o, k) => o?.[k], spec);
    return sketch(target, spec, depth + 1);
  }
  if (schema.example !== undefined) return schema.example;
  for (const key of ["oneOf", "anyOf"]) {
    if (schema[key]) return schema[key].map((s) => sketch(s, spec, depth + 1));
  }
  if (schema.type === "object" || schema.properties) {
    const out = {};
    for (const [name, prop] of Object.entries(schema.properties ?? {})) {
      out[name] = sketch(prop, spec, depth + 1);
    }
    return out;
  }
  if (schema.type === "array") return [sketch(schema.items, spec, depth + 1)];
  return schema.enum ? schema.enum.join(" | ") : schema.type ?? "any";
}

function parameters(op) {
  if (!op.parameters?.length) return "";
  const rows = op.parameters.map((p) =>
    element("tr", {}, element("td", {}, element("code", {}, p.name)), element("td", {}, p.in),
      element("td", {}, p.required ? "required" : ""), element("td", {}, p.description ?? "")));
  return element("table", {}, element("tr", {}, element("th", {}, "parameter"),
    element("th", {}, "in"), element("th", {}, ""), element("th", {}, "")), ...rows);
}

function body(op, spec) {
  const content = op.requestBody?.content;
  if (!content) return "";
  const blocks = Object.entries(content).map(([type, media]) =>
    element("div", {}, element("strong", {}, `body (${type})`),
      element("pre", {}, JSON.stringify(sketch(media.schema, spec), null, 2))));
  return element("div", {}, ...blocks);
}

function responses(op) {
  const rows = Object.entries(op.responses ?? {}).map(([status, r]) =>
    element("tr", {}, element("td", {}, element("code", {}, status)),
      element("td", {}, r.description ?? "")));
  return rows.length ? element("table", {}, element("tr", {}, element("th", {}, "status"),
    element("th", {}, "meaning")), ...rows) : "";
}

async function main() {
  const main = document.getElementById("operations");
  let spec;
  try {
    const response = await fetch("/openapi.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    spec = await response.json();
  } catch (error) {
    main.replaceChildren(element("p", { class: "error" }, `Could not read /openapi.json: ${error.message}`));
    return;
  }
  document.getElementById("version").textContent = spec.info?.version ?? "";
  const sections = [];
  const toc = document.getElementById("toc");
  for (const [path, item] of Object.entries(spec.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const id = `${method}-${path}`.replace(/[^A-Za-z0-9_-]/g, "_");
      const section = element("section", { class: "op", id },
        element("h2", {}, element("span", { class: `method ${method}` }, method.toUpperCase()),
          " ", path),
        element("p", { class: "summary" }, op.summary ?? ""),
        element("p", {}, op.description ?? ""),
        parameters(op), body(op, spec), responses(op));
      section.dataset.text = `${method} ${path} ${op.summary ?? ""} ${op.description ?? ""}`.toLowerCase();
      sections.push(section);
      toc.append(element("a", { href: `#${id}` }, `${method.toUpperCase()} ${path}`));
    }
  }
  main.replaceChildren(...sections);
  document.getElementById("filter").addEventListener("input", (event) => {
    const words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const section of sections) {
      section.classList.toggle("hidden", !words.every((w) => section.dataset.text.includes(w)));
    }
  });
  window.pushgateDocsReady = sections.length;  // for tests: how many operations it shows
}

main();
