//! The metric names a PromQL expression selects, and the sample names a `/metrics` scrape can
//! produce, so the dashboard and the alert rules in `deploy/` can be checked against what the
//! server really exports. The reader covers the PromQL the deploy files use: selectors with
//! matchers, ranges, functions, aggregations with `by`/`without`, vector matching and
//! `offset`; its own tests below show it finds the names and nothing else.

use std::collections::BTreeSet;

/// Operators that read like identifiers but select nothing.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index just past the `close` that matches the `open` at `start`, skipping strings.
fn past_closing(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = past_string(chars, i) - 1,
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// The index just past the string literal opening at `start`.
fn past_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 1,
            c if c == quote => return i + 1,
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

fn next_non_space(chars: &[char], from: usize) -> Option<(usize, char)> {
    chars[from..]
        .iter()
        .position(|c| !c.is_whitespace())
        .map(|offset| (from + offset, chars[from + offset]))
}

fn is_identifier_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

/// Every metric name `expr` selects (a selector's name, never a label, function or keyword).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = past_string(&chars, i);
        } else if c == '{' {
            i = past_closing(&chars, i, '{', '}');
        } else if c == '[' {
            i = past_closing(&chars, i, '[', ']');
        } else if c == '#' {
            i = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |offset| i + offset);
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`0.5`, `1e3`, `1d`), not a name.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_identifier_start(c) {
            let start = i;
            while i < chars.len() && (is_identifier_start(chars[i]) || chars[i].is_ascii_digit()) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(&chars, i);
            if LABEL_LISTS.contains(&word.as_str()) {
                if let Some((at, '(')) = next {
                    i = past_closing(&chars, at, '(', ')');
                }
            } else if matches!(next, Some((_, '('))) || KEYWORDS.contains(&word.as_str()) {
                // A function call, an aggregation or an operator.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric a Grafana `label_values(selector, label)` variable query reads.
pub fn label_values_names(query: &str) -> BTreeSet<String> {
    let arguments = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {query}"));
    let (selector, _label) = arguments
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("label_values without a label: {query}"));
    metric_names(selector)
}

/// The sample names a scrape can produce: each `# TYPE` line's family with the suffixes its
/// type adds (a family without samples yet, e.g. a labelled counter nothing has incremented,
/// is still declared), plus every sample name present.
pub fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut parts = declaration.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{family}{suffix}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn names_are_read_from_selectors_and_nothing_else() {
    assert_eq!(
        metric_names(
            r#"sum by (job, instance) (rate(catalog_graphql_errors_total{code=~"A|B", x="sum(y)"}[5m]))
                > 0.05 * sum by (job, instance) (rate(catalog_graphql_requests_total[5m] offset 1d))
              and on (instance) group_left (job) up{job="catalog-api"} == 1"#
        ),
        set(&[
            "catalog_graphql_errors_total",
            "catalog_graphql_requests_total",
            "up"
        ])
    );
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum without (operation) (rate(catalog_graphql_request_seconds_bucket[$__rate_interval])))"
        ),
        set(&["catalog_graphql_request_seconds_bucket"])
    );
    assert_eq!(
        metric_names("topk(10, sum(increase(a_total[1h]))) / ignoring(le) b:recorded:rate5m < 1e3"),
        set(&["a_total", "b:recorded:rate5m"])
    );
    assert_eq!(
        metric_names("sum(rate(x_total[5m])) by (code) / max(y) without (instance)"),
        set(&["x_total", "y"])
    );
    assert_eq!(metric_names("vector(1) + 2 # a comment naming z"), set(&[]));
    assert_eq!(
        label_values_names(r#"label_values(catalog_db_statements_total{job="$job"}, instance)"#),
        set(&["catalog_db_statements_total"])
    );
}

#[test]
fn a_scrape_exports_its_families_with_their_suffixes() {
    let scrape = "# HELP hits Hits.\n# TYPE hits counter\nhits_total 3\n\
                  # TYPE seconds histogram\nseconds_bucket{le=\"+Inf\"} 1\nseconds_sum 0.1\nseconds_count 1\n\
                  # TYPE requests counter\n\
                  # TYPE pending gauge\npending 0\n# EOF\n";
    let names = exported_names(scrape);
    for exported in [
        "hits_total",
        "seconds_bucket",
        "seconds_sum",
        "seconds_count",
        "requests_total",
        "pending",
    ] {
        assert!(names.contains(exported), "{exported} in {names:?}");
    }
    for absent in ["hits", "seconds", "requests", "pending_total", "EOF"] {
        assert!(!names.contains(absent), "{absent} is not a sample name");
    }
}
