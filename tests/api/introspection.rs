//! Introspection as the tools people use send it: graphql-js' `getIntrospectionQuery()` (what
//! GraphiQL, graphql-codegen and GraphQL Inspector run) works at default settings, hostile
//! introspection and fragment bombs are refused quickly, and turning introspection off says so.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::helpers::TestApp;

/// The options of graphql-js 16's `getIntrospectionQuery` (its text, built the same way).
#[derive(Clone, Copy)]
pub(crate) struct IntrospectionOptions {
    descriptions: bool,
    specified_by_url: bool,
    directive_is_repeatable: bool,
    schema_description: bool,
    input_value_deprecation: bool,
    one_of: bool,
}

pub(crate) const EVERY_OPTION: IntrospectionOptions = IntrospectionOptions {
    descriptions: true,
    specified_by_url: true,
    directive_is_repeatable: true,
    schema_description: true,
    input_value_deprecation: true,
    one_of: true,
};

/// What GraphiQL 3 sends (`useIntrospectionQuery`).
const GRAPHIQL: IntrospectionOptions = IntrospectionOptions {
    descriptions: true,
    specified_by_url: false,
    directive_is_repeatable: false,
    schema_description: false,
    input_value_deprecation: false,
    one_of: false,
};

pub(crate) fn introspection_query(options: IntrospectionOptions) -> String {
    let when = |on: bool, text: &str| if on { text.to_owned() } else { String::new() };
    let descriptions = when(options.descriptions, "description");
    let input_deprecation = |text: &str| when(options.input_value_deprecation, text);
    let mut type_ref = String::from("kind name");
    for _ in 0..9 {
        type_ref = format!("kind name ofType {{ {type_ref} }}");
    }
    format!(
        r#"
    query IntrospectionQuery {{
      __schema {{
        {schema_description}
        queryType {{ name }}
        mutationType {{ name }}
        subscriptionType {{ name }}
        types {{ ...FullType }}
        directives {{
          name
          {descriptions}
          {repeatable}
          locations
          args{args_deprecated} {{ ...InputValue }}
        }}
      }}
    }}
    fragment FullType on __Type {{
      kind
      name
      {descriptions}
      {specified_by}
      {one_of}
      fields(includeDeprecated: true) {{
        name
        {descriptions}
        args{args_deprecated} {{ ...InputValue }}
        type {{ ...TypeRef }}
        isDeprecated
        deprecationReason
      }}
      inputFields{args_deprecated} {{ ...InputValue }}
      interfaces {{ ...TypeRef }}
      enumValues(includeDeprecated: true) {{
        name
        {descriptions}
        isDeprecated
        deprecationReason
      }}
      possibleTypes {{ ...TypeRef }}
    }}
    fragment InputValue on __InputValue {{
      name
      {descriptions}
      type {{ ...TypeRef }}
      defaultValue
      {is_deprecated}
      {deprecation_reason}
    }}
    fragment TypeRef on __Type {{ {type_ref} }}
    "#,
        schema_description = when(options.schema_description, &descriptions),
        repeatable = when(options.directive_is_repeatable, "isRepeatable"),
        args_deprecated = input_deprecation("(includeDeprecated: true)"),
        specified_by = when(options.specified_by_url, "specifiedByURL"),
        one_of = when(options.one_of, "isOneOf"),
        is_deprecated = input_deprecation("isDeprecated"),
        deprecation_reason = input_deprecation("deprecationReason"),
    )
}

fn type_named<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["types"]
        .as_array()
        .and_then(|types| types.iter().find(|candidate| candidate["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn the_standard_introspection_query_works_at_default_settings() {
    let app = TestApp::spawn().await;
    for (tool, options) in [("every option", EVERY_OPTION), ("GraphiQL 3", GRAPHIQL)] {
        let response = app
            .post_json(
                json!({ "query": introspection_query(options), "operationName": "IntrospectionQuery" }),
                None,
                &[],
            )
            .await;
        let data = response.assert_ok();
        let schema = &data["__schema"];
        assert_eq!(schema["queryType"]["name"], "Query", "{tool}");
        let query_fields = type_named(schema, "Query")["fields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            query_fields.iter().any(|field| field["name"] == "products"),
            "{tool}: Query.products is listed"
        );
        if options.specified_by_url {
            assert_eq!(
                type_named(schema, "DateTime")["specifiedByURL"],
                "https://datatracker.ietf.org/doc/html/rfc3339"
            );
        }
    }
}

#[tokio::test]
async fn hostile_introspection_is_refused_quickly_and_the_server_stays_responsive() {
    let app = TestApp::spawn().await;
    let mut nested = String::from("name");
    for _ in 0..7 {
        nested = format!("fields {{ type {{ {nested} }} }}");
    }
    let started = Instant::now();
    let response = app
        .gql(
            &format!("{{ __schema {{ types {{ {nested} }} }} }}"),
            json!({}),
        )
        .await;
    response.assert_error("GRAPHQL_VALIDATION_FAILED");
    assert!(
        response.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("introspection")),
        "{}",
        response.body
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_before_it_is_expanded() {
    let app = TestApp::spawn().await;
    let levels = 40;
    let mut query = String::from("{ products { edges { node { ...F0 } } } }\n");
    for level in 0..levels {
        query.push_str(&format!(
            "fragment F{level} on Product {{ ...F{next} ...F{next} }}\n",
            next = level + 1
        ));
    }
    query.push_str(&format!("fragment F{levels} on Product {{ id }}\n"));
    let health = app.client.get(app.url("/healthz"));
    let started = Instant::now();
    let (response, healthz) = tokio::join!(app.gql(&query, json!({})), async {
        let sent = Instant::now();
        let status = health.send().await.expect("healthz").status();
        (status, sent.elapsed())
    });
    response.assert_error("GRAPHQL_VALIDATION_FAILED");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    assert_eq!(healthz.0, 200);
    assert!(
        healthz.1 < Duration::from_millis(500),
        "healthz took {:?}",
        healthz.1
    );
}

#[tokio::test]
async fn with_introspection_turned_off_the_error_says_so() {
    let app = TestApp::spawn_with(|config| config.introspection = false).await;
    let response = app.gql(&introspection_query(GRAPHIQL), json!({})).await;
    response.assert_error("GRAPHQL_VALIDATION_FAILED");
    assert!(
        response.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("introspection is turned off")),
        "{}",
        response.body
    );
    // `__typename` is not introspection of the schema and keeps working.
    let typename = app.gql("{ __typename }", json!({})).await;
    assert_eq!(typename.assert_ok()["__typename"], "Query");
}
