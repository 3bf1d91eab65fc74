// graphql-codegen's schema-ast plugin against a live catalog-api: the SDL a client's codegen
// builds on. tests/api/schema_file_matches_client_tools.rs sets the two variables and compares the output with
// the checked-in schema.graphql.
const introspection = require("./introspection-options.cjs");

const url = process.env.CATALOG_GRAPHQL_URL;
const output = process.env.CATALOG_CODEGEN_OUTPUT;
if (!url || !output) {
  throw new Error("set CATALOG_GRAPHQL_URL (the server's /graphql) and CATALOG_CODEGEN_OUTPUT (a file)");
}

/** @type {import("@graphql-codegen/cli").CodegenConfig} */
module.exports = {
  overwrite: true,
  silent: true,
  // The URL loader passes per-pointer options on to its introspection query.
  schema: [{ [url]: introspection }],
  generates: { [output]: { plugins: ["schema-ast"] } },
};
