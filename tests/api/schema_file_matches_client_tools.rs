//! The schema tools clients run, against the live URL of a real server: GraphQL Inspector's
//! `diff schema.graphql <url>` must find no change at all, and graphql-codegen's schema-ast
//! output must say what `schema.graphql` says (compared after erasing layout only; see
//! `scripts/graphql-tooling/print-sdl.mjs`). Needs `node` and
//! `npm ci --prefix scripts/graphql-tooling` (.ci/run does both); skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::helpers::TestApp;
use crate::support::node_tools::NodeTools;

fn checked_in_schema() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
}

/// graphql-codegen and Inspector, when installed (says why not when not).
fn tooling() -> Option<NodeTools> {
    NodeTools::installed(
        "graphql-tooling",
        &["@graphql-codegen/cli", "@graphql-inspector/cli"],
    )
}

fn printed(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The SDL file in graphql-js's canonical layout (`print-sdl.mjs`).
async fn canonical_sdl(tooling: &NodeTools, file: &Path) -> String {
    let file = file.to_str().expect("a UTF-8 path");
    let output = tooling.run("node", &["print-sdl.mjs", file], &[]).await;
    assert!(
        output.status.success(),
        "print-sdl.mjs {file}: {}",
        printed(&output)
    );
    String::from_utf8(output.stdout).expect("UTF-8 SDL")
}

/// The lines that differ, each side numbered, for a failure message a person can act on.
fn differing_lines(expected: &str, actual: &str) -> String {
    let (expected, actual): (Vec<&str>, Vec<&str>) =
        (expected.lines().collect(), actual.lines().collect());
    (0..expected.len().max(actual.len()))
        .filter(|&index| expected.get(index) != actual.get(index))
        .take(20)
        .map(|index| {
            format!(
                "line {}:\n  schema.graphql: {}\n  codegen:        {}",
                index + 1,
                expected.get(index).unwrap_or(&"<none>"),
                actual.get(index).unwrap_or(&"<none>")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn graphql_inspector_finds_no_change_between_schema_graphql_and_the_live_url() {
    let Some(tooling) = tooling() else {
        return;
    };
    let app = TestApp::spawn().await;
    let directory = &tooling.directory;
    let schema = checked_in_schema();
    let on_complete = directory.join("fail-on-any-change.cjs");
    let introspection = directory.join("inspector-introspection.cjs");
    let url = app.url("/graphql");
    let output = tooling
        .run(
            "graphql-inspector",
            &[
                "diff",
                schema.to_str().expect("a UTF-8 path"),
                &url,
                "--onComplete",
                on_complete.to_str().expect("a UTF-8 path"),
                "--require",
                introspection.to_str().expect("a UTF-8 path"),
            ],
            &[],
        )
        .await;
    assert!(output.status.success(), "inspector: {}", printed(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("No changes detected"),
        "inspector: {}",
        printed(&output)
    );
}

#[tokio::test]
async fn graphql_codegen_against_the_live_url_prints_what_schema_graphql_says() {
    let Some(tooling) = tooling() else {
        return;
    };
    let app = TestApp::spawn().await;
    let files = tempfile::tempdir().expect("a temporary directory");
    let generated = files.path().join("schema.graphql");
    let url = app.url("/graphql");
    let output = tooling
        .run(
            "graphql-codegen",
            &["--config", "codegen.cjs"],
            &[
                ("CATALOG_GRAPHQL_URL", url.as_str()),
                (
                    "CATALOG_CODEGEN_OUTPUT",
                    generated.to_str().expect("a UTF-8 path"),
                ),
            ],
        )
        .await;
    assert!(output.status.success(), "codegen: {}", printed(&output));
    let raw = std::fs::read_to_string(&generated).expect("codegen wrote its output");
    assert!(
        raw.contains("type Query"),
        "codegen printed a schema: {raw}"
    );

    let expected = canonical_sdl(&tooling, &checked_in_schema()).await;
    let actual = canonical_sdl(&tooling, &generated).await;
    assert!(
        expected == actual,
        "codegen's SDL of the live server differs from schema.graphql:\n{}",
        differing_lines(&expected, &actual)
    );
}

/// The comparison erases layout and nothing else: a re-indented copy without its final
/// newline compares equal, and a copy that says one thing differently does not.
#[tokio::test]
async fn the_codegen_comparison_ignores_layout_and_catches_every_kind_of_change() {
    let Some(tooling) = tooling() else {
        return;
    };
    let original = std::fs::read_to_string(checked_in_schema()).expect("schema.graphql");
    let canonical = canonical_sdl(&tooling, &checked_in_schema()).await;
    let files = tempfile::tempdir().expect("a temporary directory");
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).expect("write a copy");
        path
    };

    // (Blank lines inside a description are its text, so they stay as they are.)
    let relaid = original.replace('\t', "    ");
    let relaid = write("relaid.graphql", relaid.trim_end());
    assert_eq!(
        canonical_sdl(&tooling, &relaid).await,
        canonical,
        "layout is not a difference"
    );

    let changes = [
        ("a field's type", "\tname: String!\n", "\tname: String\n"),
        ("a default value", "first: Int = 20", "first: Int = 10"),
        ("a description", "hits / (hits + misses)", "hits / misses"),
        ("a scalar's specification", "rfc3339", "rfc3338"),
        ("a root type", "\tmutation: Mutation\n", ""),
    ];
    for (what, from, to) in changes {
        assert!(original.contains(from), "schema.graphql has {from:?}");
        let changed = write("changed.graphql", &original.replacen(from, to, 1));
        assert_ne!(
            canonical_sdl(&tooling, &changed).await,
            canonical,
            "{what} changed"
        );
    }
}
