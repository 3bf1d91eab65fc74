// The introspection a schema tool must send to see what schema.graphql states: graphql-js's
// getIntrospectionQuery() leaves these out by default, and without `specifiedByUrl` the
// `@specifiedBy` on `scalar DateTime` is invisible. codegen.cjs and inspector-introspection.cjs
// hand them to each tool's URL loader.
//
// `schemaDescription` stays off (the tools' default): async-graphql 7.2.1 answers
// `__schema { description }` with the doc of its `__Schema` type ("A GraphQL Schema defines
// the capabilities of a GraphQL server...") rather than a description of this schema, and
// neither `catalog-api schema` nor schema.graphql has one.
module.exports = {
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  inputValueDeprecation: true,
};
