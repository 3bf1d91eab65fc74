//! The documentation stays true to the code it describes: every setting `src/config.rs`
//! declares is in `docs/configuration.md`'s table, and every relative link in `README.md` and
//! `docs/*.md` reaches a file that exists (and, with `#anchor`, a heading of it). Links to
//! other sites are not followed. A setting hidden from `--help` (a test's fault injection) is
//! not part of the interface and needs no row.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The environment variable of every setting in `settings! { ... }`, with whether it is
/// hidden (`hide = true` among its clap arguments).
fn declared_settings(config: &str) -> Vec<(String, bool)> {
    let start = config
        .find("settings! {")
        .expect("src/config.rs declares its settings with `settings! { ... }`");
    let end = start
        + config[start..]
            .find("\n}\n")
            .expect("the settings block ends");
    // Doc comments may quote names; only the declarations count.
    let declarations: String = config[start..end]
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut settings = Vec::new();
    let mut rest = declarations.as_str();
    while let Some(at) = rest.find("= \"") {
        let after = &rest[at + 3..];
        let Some(close) = after.find('"') else { break };
        let name = &after[..close];
        // The entry runs to the next declaration (its clap arguments are in between).
        let entry = &after[close..];
        let entry = &entry[..entry.find("= \"").unwrap_or(entry.len())];
        let is_env = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if is_env {
            settings.push((name.to_owned(), entry.contains("hide = true")));
        }
        rest = &after[close + 1..];
    }
    settings
}

#[test]
fn every_setting_is_in_docs_configuration() {
    let settings = declared_settings(&read(&root().join("src/config.rs")));
    assert!(
        settings.iter().any(|(name, _)| name == "DATABASE_URL")
            && settings.iter().any(|(name, _)| name == "REDIS_URL")
            && settings.len() > 50,
        "the settings were not read from src/config.rs: {settings:?}"
    );
    let table = read(&root().join("docs/configuration.md"));
    let missing: Vec<&str> = settings
        .iter()
        .filter(|(name, hidden)| !hidden && !table.contains(&format!("`{name}`")))
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "settings of src/config.rs missing from docs/configuration.md: {missing:?}"
    );
}

#[test]
fn the_settings_reader_sees_hidden_settings_and_skips_doc_comments() {
    let config = r#"
settings! {
    /// Like `CATALOG_OTHER`, but "QUOTED_IN_DOCS" is not a declaration.
    one: u64 = "CATALOG_ONE" [default_value_t = 1],
    two: Option<String> = "CATALOG_TWO",
    hidden: u64 = "CATALOG_HIDDEN"
        [default_value_t = 0, hide = true],
    text: String = "CATALOG_TEXT" [default_value = "not a name"],
}
"#;
    assert_eq!(
        declared_settings(config),
        [
            ("CATALOG_ONE".to_owned(), false),
            ("CATALOG_TWO".to_owned(), false),
            ("CATALOG_HIDDEN".to_owned(), true),
            ("CATALOG_TEXT".to_owned(), false),
        ]
    );
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped (hyphens and
/// underscores kept), spaces turned into hyphens.
fn anchor_of(heading: &str) -> String {
    let text = without_link_targets(heading);
    text.trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// `[text](target)` as its text.
fn without_link_targets(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        rest = after.find(')').map_or("", |close| &after[close + 1..]);
    }
    out.push_str(rest);
    out.replace('[', "")
}

/// The lines of a Markdown file outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// Every heading's anchor in a Markdown file (a repeated heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line
            .strip_prefix('#')
            .map(|rest| rest.trim_start_matches('#'))
            .filter(|rest| rest.starts_with(' '))
        else {
            continue;
        };
        let anchor = anchor_of(heading);
        let count = seen.entry(anchor.clone()).or_default();
        anchors.insert(if *count == 0 {
            anchor.clone()
        } else {
            format!("{anchor}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// The targets of a Markdown file's inline links and images, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        // Inline code may show link syntax without being a link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(close) = after.find(')') else { break };
            let target = after[..close].split_whitespace().next().unwrap_or_default();
            targets.push(target.to_owned());
            rest = &after[close + 1..];
        }
    }
    targets
}

/// What is wrong with each relative link of one Markdown file.
fn broken_links(file: &Path) -> Vec<String> {
    let text = read(file);
    let directory = file.parent().expect("a file has a folder");
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let linked = if path.is_empty() {
            file.to_path_buf()
        } else {
            directory.join(path)
        };
        if !linked.exists() {
            broken.push(format!("{target}: no such file"));
            continue;
        }
        if let Some(anchor) = anchor
            && linked
                .extension()
                .is_some_and(|extension| extension == "md")
            && !anchors(&read(&linked)).contains(anchor)
        {
            broken.push(format!("{target}: no such heading"));
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_readme_and_docs_reaches_its_file_and_heading() {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in &files {
        checked += link_targets(&read(file)).len();
        for problem in broken_links(file) {
            let shown = file.strip_prefix(root()).unwrap_or(file);
            broken.push(format!("{}: {problem}", shown.display()));
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the reader broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_reader_finds_links_and_headings_as_github_does() {
    let text = "# Read replicas\n\nSee [the `cache`](cache.md#redis-cluster \"title\") and \
                `[not](a-link.md)`.\n\n```\n[also not](code.md)\n```\n\n## Read replicas\n\
                ### `CATALOG_X`: a setting (new)!\n";
    assert_eq!(link_targets(text), ["cache.md#redis-cluster"]);
    assert_eq!(
        anchors(text),
        BTreeSet::from([
            "read-replicas".to_owned(),
            "read-replicas-1".to_owned(),
            "catalog_x-a-setting-new".to_owned(),
        ])
    );
}
