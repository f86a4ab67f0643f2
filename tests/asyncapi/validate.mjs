// Validate an AsyncAPI document with the official parser: node validate.mjs FILE
// Prints {"valid": bool, "diagnostics": [...]} and exits 1 when the document has errors.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(process.argv[2], "utf8"));
const report = diagnostics.map((d) => ({
  code: d.code,
  message: d.message,
  path: d.path.join("/"),
  severity: d.severity, // 0 error, 1 warning, 2 info, 3 hint
}));
const errors = report.filter((d) => d.severity === 0);
console.log(JSON.stringify({ valid: document !== undefined && errors.length === 0, diagnostics: report }, null, 2));
process.exit(document !== undefined && errors.length === 0 ? 0 : 1);
