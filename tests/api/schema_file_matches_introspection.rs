//! `schema.graphql` must say what introspection tells a client: the same types, fields,
//! arguments (with type references and default values), input fields, enum values,
//! descriptions, deprecations, interfaces, union members, `@oneOf`, `@specifiedBy` URLs and
//! directives. Both are flattened to one line per fact and every differing fact is reported.
//! Built-in scalars and the spec's own directives may be left out of the file (as graphql-js'
//! `printSchema` does); when the file declares them they must match too.

use std::collections::BTreeMap;

use async_graphql::parser::types::{
    ConstDirective, DirectiveLocation, InputValueDefinition, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Positioned, Value as ConstValue};
use serde_json::{Value, json};

use crate::introspection::{EVERY_OPTION, introspection_query};
use crate::support::helpers::TestApp;

const BUILT_IN_SCALARS: [&str; 5] = ["String", "Int", "Float", "Boolean", "ID"];
const BUILT_IN_DIRECTIVES: [&str; 5] = ["include", "skip", "deprecated", "specifiedBy", "oneOf"];

/// Facts, one per line: `type Product field price` -> `Decimal!`.
type Facts = BTreeMap<String, String>;

/// What `@deprecated` without a reason means (the spec's default argument).
const DEFAULT_DEPRECATION: &str = "No longer supported";

fn directive<'a>(
    directives: &'a [Positioned<ConstDirective>],
    name: &str,
) -> Option<&'a ConstDirective> {
    directives
        .iter()
        .map(|directive| &directive.node)
        .find(|directive| directive.name.node == name)
}

fn string_argument(directive: &ConstDirective, name: &str) -> Option<String> {
    match directive.get_argument(name).map(|value| &value.node) {
        Some(ConstValue::String(text)) => Some(text.clone()),
        _ => None,
    }
}

fn deprecation(directives: &[Positioned<ConstDirective>]) -> Option<String> {
    directive(directives, "deprecated").map(|deprecated| {
        string_argument(deprecated, "reason").unwrap_or_else(|| DEFAULT_DEPRECATION.to_owned())
    })
}

/// `FragmentSpread` -> `FRAGMENT_SPREAD`, the introspection spelling.
fn location_name(location: &DirectiveLocation) -> String {
    let mut name = String::new();
    for (index, character) in format!("{location:?}").chars().enumerate() {
        if character.is_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    name
}

fn sdl_input_values(facts: &mut Facts, prefix: &str, values: &[Positioned<InputValueDefinition>]) {
    for value in values {
        let value = &value.node;
        let at = format!("{prefix} {}", value.name.node);
        facts.insert(at.clone(), value.ty.node.to_string());
        if let Some(description) = &value.description {
            facts.insert(format!("{at} description"), description.node.clone());
        }
        if let Some(default) = &value.default_value {
            facts.insert(format!("{at} default"), default.node.to_string());
        }
        if let Some(reason) = deprecation(&value.directives) {
            facts.insert(format!("{at} deprecated"), reason);
        }
    }
}

/// Whether the definition of `@name` says `repeatable` before its locations.
fn repeatable_in_text(sdl: &str, name: &str) -> bool {
    let start = format!("directive @{name}");
    sdl.split("directive @")
        .skip(1)
        .map(|definition| format!("directive @{definition}"))
        .find(|definition| {
            definition
                .strip_prefix(&start)
                .is_some_and(|rest| rest.starts_with(['(', ' ', '\n']))
        })
        .and_then(|definition| {
            let head = definition.split(" on ").next()?.to_owned();
            let after_arguments = head.rsplit(')').next().unwrap_or(&head).to_owned();
            Some(
                after_arguments
                    .split_whitespace()
                    .any(|word| word == "repeatable"),
            )
        })
        .unwrap_or(false)
}

/// The facts `schema.graphql` states.
fn sdl_facts(sdl: &str) -> Facts {
    let document = async_graphql::parser::parse_schema(sdl).expect("schema.graphql parses");
    let mut facts = Facts::new();
    let mut roots = BTreeMap::from([
        ("query", "Query"),
        ("mutation", "Mutation"),
        ("subscription", "Subscription"),
    ]);
    let mut declared_roots = None;
    let mut type_names = Vec::new();
    for definition in &document.definitions {
        match definition {
            TypeSystemDefinition::Schema(schema) => {
                let schema = &schema.node;
                declared_roots = Some([
                    (
                        "query",
                        schema.query.as_ref().map(|name| name.node.to_string()),
                    ),
                    (
                        "mutation",
                        schema.mutation.as_ref().map(|name| name.node.to_string()),
                    ),
                    (
                        "subscription",
                        schema
                            .subscription
                            .as_ref()
                            .map(|name| name.node.to_string()),
                    ),
                ]);
            }
            TypeSystemDefinition::Type(definition) => {
                let definition = &definition.node;
                let name = definition.name.node.as_str();
                type_names.push(name.to_owned());
                let (kind, at) = match &definition.kind {
                    TypeKind::Scalar => ("SCALAR", format!("scalar {name}")),
                    TypeKind::Object(_) => ("OBJECT", format!("type {name}")),
                    TypeKind::Interface(_) => ("INTERFACE", format!("interface {name}")),
                    TypeKind::Union(_) => ("UNION", format!("union {name}")),
                    TypeKind::Enum(_) => ("ENUM", format!("enum {name}")),
                    TypeKind::InputObject(_) => ("INPUT_OBJECT", format!("input {name}")),
                };
                facts.insert(at.clone(), kind.to_owned());
                if let Some(description) = &definition.description {
                    facts.insert(format!("{at} description"), description.node.clone());
                }
                if let Some(url) = directive(&definition.directives, "specifiedBy")
                    .and_then(|specified_by| string_argument(specified_by, "url"))
                {
                    facts.insert(format!("{at} specifiedBy"), url);
                }
                if directive(&definition.directives, "oneOf").is_some() {
                    facts.insert(format!("{at} oneOf"), "true".to_owned());
                }
                let (fields, implements) = match &definition.kind {
                    TypeKind::Object(object) => (&object.fields, &object.implements),
                    TypeKind::Interface(interface) => (&interface.fields, &interface.implements),
                    _ => (&Vec::new(), &Vec::new()),
                };
                for interface in implements {
                    facts.insert(format!("{at} implements {}", interface.node), String::new());
                }
                for field in fields {
                    let field = &field.node;
                    let field_at = format!("{at} field {}", field.name.node);
                    facts.insert(field_at.clone(), field.ty.node.to_string());
                    if let Some(description) = &field.description {
                        facts.insert(format!("{field_at} description"), description.node.clone());
                    }
                    if let Some(reason) = deprecation(&field.directives) {
                        facts.insert(format!("{field_at} deprecated"), reason);
                    }
                    sdl_input_values(
                        &mut facts,
                        &format!("{field_at} argument"),
                        &field.arguments,
                    );
                }
                match &definition.kind {
                    TypeKind::Union(union) => {
                        for member in &union.members {
                            facts.insert(format!("{at} member {}", member.node), String::new());
                        }
                    }
                    TypeKind::Enum(enumeration) => {
                        for value in &enumeration.values {
                            let value = &value.node;
                            let value_at = format!("{at} value {}", value.value.node);
                            facts.insert(value_at.clone(), String::new());
                            if let Some(description) = &value.description {
                                facts.insert(
                                    format!("{value_at} description"),
                                    description.node.clone(),
                                );
                            }
                            if let Some(reason) = deprecation(&value.directives) {
                                facts.insert(format!("{value_at} deprecated"), reason);
                            }
                        }
                    }
                    TypeKind::InputObject(input) => {
                        sdl_input_values(&mut facts, &format!("{at} field"), &input.fields);
                    }
                    _ => {}
                }
            }
            TypeSystemDefinition::Directive(definition) => {
                let definition = &definition.node;
                let at = format!("directive @{}", definition.name.node);
                facts.insert(at.clone(), String::new());
                if let Some(description) = &definition.description {
                    facts.insert(format!("{at} description"), description.node.clone());
                }
                // async-graphql-parser 7.2 reads every directive as repeatable (its grammar's
                // `repeatable` rule always matches), so the keyword is read from the text.
                if repeatable_in_text(sdl, &definition.name.node) {
                    facts.insert(format!("{at} repeatable"), "true".to_owned());
                }
                for location in &definition.locations {
                    facts.insert(
                        format!("{at} location {}", location_name(&location.node)),
                        String::new(),
                    );
                }
                sdl_input_values(&mut facts, &format!("{at} argument"), &definition.arguments);
            }
        }
    }
    match declared_roots {
        Some(declared) => {
            for (operation, name) in declared {
                if let Some(name) = name {
                    facts.insert(format!("schema {operation}"), name);
                }
            }
        }
        None => {
            // Without a `schema` block the roots are the types with the default names.
            roots.retain(|_, name| type_names.iter().any(|declared| declared == name));
            for (operation, name) in roots {
                facts.insert(format!("schema {operation}"), name.to_owned());
            }
        }
    }
    facts
}

/// `[ProductEdge!]!` from an introspection type reference.
fn type_reference(reference: &Value) -> String {
    match reference["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", type_reference(&reference["ofType"])),
        Some("LIST") => format!("[{}]", type_reference(&reference["ofType"])),
        _ => reference["name"].as_str().unwrap_or("?").to_owned(),
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

fn introspected_input_values(facts: &mut Facts, prefix: &str, values: &Value) {
    for value in values.as_array().into_iter().flatten() {
        let at = format!("{prefix} {}", value["name"].as_str().unwrap_or("?"));
        facts.insert(at.clone(), type_reference(&value["type"]));
        if let Some(description) = text(&value["description"]) {
            facts.insert(format!("{at} description"), description);
        }
        if let Some(default) = text(&value["defaultValue"]) {
            facts.insert(format!("{at} default"), normalized_default(&default));
        }
        if value["isDeprecated"] == true {
            facts.insert(
                format!("{at} deprecated"),
                text(&value["deprecationReason"]).unwrap_or_else(|| DEFAULT_DEPRECATION.to_owned()),
            );
        }
    }
}

/// A default value as the SDL side prints it: parsed as a GraphQL literal, then displayed.
fn normalized_default(literal: &str) -> String {
    let document = format!("query($v: Int = {literal}) {{ a }}");
    async_graphql::parser::parse_query(&document)
        .ok()
        .and_then(|document| {
            let operation = match document.operations {
                async_graphql::parser::types::DocumentOperations::Single(operation) => operation,
                async_graphql::parser::types::DocumentOperations::Multiple(_) => return None,
            };
            operation
                .node
                .variable_definitions
                .first()
                .and_then(|variable| variable.node.default_value.as_ref())
                .map(|value| value.node.to_string())
        })
        .unwrap_or_else(|| format!("unparsable: {literal}"))
}

/// The facts introspection tells a client, leaving out what the file may omit.
fn introspected_facts(schema: &Value, sdl: &Facts) -> Facts {
    let mut facts = Facts::new();
    for (operation, key) in [
        ("query", "queryType"),
        ("mutation", "mutationType"),
        ("subscription", "subscriptionType"),
    ] {
        if let Some(name) = text(&schema[key]["name"]) {
            facts.insert(format!("schema {operation}"), name);
        }
    }
    for introspected in schema["types"].as_array().into_iter().flatten() {
        let name = introspected["name"].as_str().unwrap_or("?");
        let kind = introspected["kind"].as_str().unwrap_or("?");
        let at = match kind {
            "SCALAR" => format!("scalar {name}"),
            "OBJECT" => format!("type {name}"),
            "INTERFACE" => format!("interface {name}"),
            "UNION" => format!("union {name}"),
            "ENUM" => format!("enum {name}"),
            "INPUT_OBJECT" => format!("input {name}"),
            other => format!("{other} {name}"),
        };
        if name.starts_with("__") || (BUILT_IN_SCALARS.contains(&name) && !sdl.contains_key(&at)) {
            continue;
        }
        facts.insert(at.clone(), kind.to_owned());
        if let Some(description) = text(&introspected["description"]) {
            facts.insert(format!("{at} description"), description);
        }
        if let Some(url) = text(&introspected["specifiedByURL"]) {
            facts.insert(format!("{at} specifiedBy"), url);
        }
        if introspected["isOneOf"] == true {
            facts.insert(format!("{at} oneOf"), "true".to_owned());
        }
        for interface in introspected["interfaces"].as_array().into_iter().flatten() {
            facts.insert(
                format!("{at} implements {}", type_reference(interface)),
                String::new(),
            );
        }
        for field in introspected["fields"].as_array().into_iter().flatten() {
            let field_at = format!("{at} field {}", field["name"].as_str().unwrap_or("?"));
            facts.insert(field_at.clone(), type_reference(&field["type"]));
            if let Some(description) = text(&field["description"]) {
                facts.insert(format!("{field_at} description"), description);
            }
            if field["isDeprecated"] == true {
                facts.insert(
                    format!("{field_at} deprecated"),
                    text(&field["deprecationReason"])
                        .unwrap_or_else(|| DEFAULT_DEPRECATION.to_owned()),
                );
            }
            introspected_input_values(&mut facts, &format!("{field_at} argument"), &field["args"]);
        }
        if kind == "UNION" {
            for member in introspected["possibleTypes"]
                .as_array()
                .into_iter()
                .flatten()
            {
                facts.insert(
                    format!("{at} member {}", type_reference(member)),
                    String::new(),
                );
            }
        }
        for value in introspected["enumValues"].as_array().into_iter().flatten() {
            let value_at = format!("{at} value {}", value["name"].as_str().unwrap_or("?"));
            facts.insert(value_at.clone(), String::new());
            if let Some(description) = text(&value["description"]) {
                facts.insert(format!("{value_at} description"), description);
            }
            if value["isDeprecated"] == true {
                facts.insert(
                    format!("{value_at} deprecated"),
                    text(&value["deprecationReason"])
                        .unwrap_or_else(|| DEFAULT_DEPRECATION.to_owned()),
                );
            }
        }
        introspected_input_values(
            &mut facts,
            &format!("{at} field"),
            &introspected["inputFields"],
        );
    }
    for introspected in schema["directives"].as_array().into_iter().flatten() {
        let name = introspected["name"].as_str().unwrap_or("?");
        let at = format!("directive @{name}");
        if BUILT_IN_DIRECTIVES.contains(&name) && !sdl.contains_key(&at) {
            continue;
        }
        facts.insert(at.clone(), String::new());
        if let Some(description) = text(&introspected["description"]) {
            facts.insert(format!("{at} description"), description);
        }
        if introspected["isRepeatable"] == true {
            facts.insert(format!("{at} repeatable"), "true".to_owned());
        }
        for location in introspected["locations"].as_array().into_iter().flatten() {
            facts.insert(
                format!("{at} location {}", location.as_str().unwrap_or("?")),
                String::new(),
            );
        }
        introspected_input_values(&mut facts, &format!("{at} argument"), &introspected["args"]);
    }
    facts
}

/// Every fact on which the two disagree, one readable line each.
fn differences(file: &Facts, introspection: &Facts) -> Vec<String> {
    let mut differences = Vec::new();
    for (fact, value) in introspection {
        match file.get(fact) {
            None => differences.push(format!(
                "introspection has `{fact}` = {value:?}; schema.graphql does not"
            )),
            Some(stated) if stated != value => differences.push(format!(
                "`{fact}`: schema.graphql says {stated:?}, introspection says {value:?}"
            )),
            Some(_) => {}
        }
    }
    for (fact, value) in file {
        if !introspection.contains_key(fact) {
            differences.push(format!(
                "schema.graphql has `{fact}` = {value:?}; introspection does not"
            ));
        }
    }
    differences
}

#[tokio::test]
async fn the_checked_in_schema_says_what_introspection_tells_a_client() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json(
            json!({ "query": introspection_query(EVERY_OPTION), "operationName": "IntrospectionQuery" }),
            None,
            &[],
        )
        .await;
    let schema = &response.assert_ok()["__schema"];
    let sdl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql is checked in");
    let file = sdl_facts(&sdl);
    let introspection = introspected_facts(schema, &file);
    assert!(
        introspection.contains_key("type Query field products"),
        "the comparison reads introspection: {introspection:#?}"
    );
    let differences = differences(&file, &introspection);
    assert!(
        differences.is_empty(),
        "schema.graphql differs from what introspection tells clients (fix `sdl()` in \
         src/graphql/schema.rs, then `cargo run -q -- schema > schema.graphql`):\n  {}",
        differences.join("\n  ")
    );
}

#[test]
fn a_difference_a_client_could_see_is_reported() {
    let file = sdl_facts(
        "type Query { \"Products.\" products(first: Int = 20): [String!]! old: Int @deprecated }\n\
         enum Order { A B }",
    );
    let mut introspection = file.clone();
    introspection.insert(
        "type Query field products argument first default".into(),
        "10".into(),
    );
    introspection.remove("type Query field old deprecated");
    introspection.insert("enum Order value C".into(), String::new());
    let found = differences(&file, &introspection);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(
        file.get("type Query field old deprecated")
            .map(String::as_str),
        Some(DEFAULT_DEPRECATION)
    );
    assert_eq!(
        file.get("type Query field products argument first default")
            .map(String::as_str),
        Some("20")
    );
}
