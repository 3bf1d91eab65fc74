// Makes GraphQL Inspector see a live server as completely as it sees an SDL file. Loaded with
// `graphql-inspector diff ... --require <this file>`, it changes two things in the URL loader
// (one shared instance), and nothing in the schemas compared:
// - Its introspection query gets the options of introspection-options.cjs (the CLI has no flag
//   for them), so the server is asked for `specifiedByURL`.
// - Inspector compares directive uses such as `@specifiedBy` through a schema's SDL nodes, which a
//   schema built from introspection does not have, so every use in the file would read as
//   "removed". The introspected schema is printed (graphql-js prints `specifiedByURL` as
//   `@specifiedBy`) and built again, which gives it those nodes from what the server reported.
const { buildSchema, printSchema } = require("graphql");
const introspection = require("./introspection-options.cjs");
const loader = require("@graphql-inspector/url-loader").default;

const load = loader.load.bind(loader);
loader.load = async (pointer, options) => {
  const sources = await load(pointer, { ...introspection, ...options });
  for (const source of sources) {
    if (source.schema && !source.document && !source.rawSDL) {
      source.schema = buildSchema(printSchema(source.schema));
    }
  }
  return sources;
};
