// Prints a GraphQL SDL file in graphql-js's canonical layout, so that two files are compared on
// what they say, not how they are laid out. It erases presentation only:
// - indentation, blank lines and a description's quoting (parse, then print the document);
// - what the specification lets an SDL document leave out because every schema has it: the
//   definitions of the built-in directives ("any built-in directive may be omitted for
//   brevity") and a `schema { ... }` block without description or directives that names the
//   default root types. Their descriptions are not a client's to see through codegen; the
//   Inspector diff and the schema_file_matches_introspection test compare them.
// Every type, field, argument, default value, directive use and description stays, in the
// order the file gives it. Usage: node print-sdl.mjs FILE
import { readFileSync } from "node:fs";
import { Kind, parse, print, specifiedDirectives } from "graphql";

const [file] = process.argv.slice(2);
if (!file) {
  console.error("usage: node print-sdl.mjs FILE");
  process.exit(2);
}

const builtInDirectives = new Set(specifiedDirectives.map((directive) => directive.name));
const defaultRootNames = { query: "Query", mutation: "Mutation", subscription: "Subscription" };

const document = parse(readFileSync(file, "utf8"));
const objectTypeNames = new Set(
  document.definitions
    .filter((definition) => definition.kind === Kind.OBJECT_TYPE_DEFINITION)
    .map((definition) => definition.name.value),
);

// Whether leaving the definition out changes nothing: a built-in directive, or a schema block
// that names exactly the roots the default names would give (so `schema { query: Query }`
// beside a `type Mutation` is kept: without it, Mutation would become a root).
function implied(definition) {
  if (definition.kind === Kind.DIRECTIVE_DEFINITION) {
    return builtInDirectives.has(definition.name.value);
  }
  if (definition.kind === Kind.SCHEMA_DEFINITION) {
    const named = Object.fromEntries(
      definition.operationTypes.map((operation) => [operation.operation, operation.type.name.value]),
    );
    const defaults = Object.fromEntries(
      Object.entries(defaultRootNames).filter(([, name]) => objectTypeNames.has(name)),
    );
    return (
      !definition.description &&
      !definition.directives?.length &&
      JSON.stringify(Object.entries(named).sort()) === JSON.stringify(Object.entries(defaults).sort())
    );
  }
  return false;
}

const kept = { ...document, definitions: document.definitions.filter((definition) => !implied(definition)) };
process.stdout.write(print(kept) + "\n");
