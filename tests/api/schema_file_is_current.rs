//! `schema.graphql` is the contract codegen and introspection tooling read: it must be
//! exactly what `catalog-api schema` prints.

#[test]
fn the_checked_in_schema_is_what_the_server_prints() {
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
            .expect("schema.graphql is checked in");
    let printed = catalog_api::graphql::schema::sdl();
    assert!(
        checked_in == printed,
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql` and commit it"
    );
}
