// Validates the Prometheus Operator resources (monitoring.coreos.com/v1 ServiceMonitor
// and PrometheusRule) in rendered manifests, which kubeconform has no schema for here.
// The validators come from @kubernetes-models/prometheus-operator (generated from the
// operator's Go API types): they check types, enums and required fields; unlike
// kubeconform -strict they do not reject unknown fields.
//
//   node validate.mjs MODULES_DIR [--expect Kind,Kind] FILE...
//
// MODULES_DIR is the node_modules that `npm ci` filled from this folder's lock file.
// Exits 1 when a resource is invalid, when another monitoring.coreos.com kind shows up,
// or when an --expect kind is missing.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, ...rest] = process.argv.slice(2);
let expect = [];
const files = [];
for (let i = 0; i < rest.length; i++) {
  if (rest[i] === "--expect") expect = rest[++i].split(",").filter(Boolean);
  else files.push(rest[i]);
}
if (!modules || files.length === 0) {
  console.error("usage: node validate.mjs MODULES_DIR [--expect Kind,Kind] FILE...");
  process.exit(2);
}
const load = (path) => import(pathToFileURL(join(modules, path)).href);
const yaml = (await load("js-yaml/dist/js-yaml.mjs")).default;
const models = {
  ServiceMonitor: (await load("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js")).ServiceMonitor,
  PrometheusRule: (await load("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js")).PrometheusRule,
};

let valid = 0;
let invalid = 0;
const seen = new Set();
for (const file of files) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc || typeof doc !== "object" || !String(doc.apiVersion ?? "").startsWith("monitoring.coreos.com/")) continue;
    const name = `${doc.kind} ${doc.metadata?.name}`;
    const Model = doc.apiVersion === "monitoring.coreos.com/v1" ? models[doc.kind] : undefined;
    if (!Model) {
      console.log(`${file} - ${name}: no validator for ${doc.apiVersion} ${doc.kind}`);
      invalid++;
      continue;
    }
    seen.add(doc.kind);
    try {
      new Model(doc).validate();
      valid++;
    } catch (e) {
      console.log(`${file} - ${name} is invalid: ${e.message}`);
      invalid++;
    }
  }
}
for (const kind of expect) {
  if (!seen.has(kind)) {
    console.log(`expected a ${kind}, found none`);
    invalid++;
  }
}
console.log(`CRD summary: ${valid + invalid} monitoring.coreos.com resources - Valid: ${valid}, Invalid: ${invalid}`);
process.exit(invalid > 0 ? 1 : 0);
