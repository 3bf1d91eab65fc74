//! What is wrong with a request body, said in the request's own terms: where its JSON breaks
//! (line, column, the character found and what belonged there), or which member of an
//! operation has the wrong type. serde_json's messages name parser states and Rust types
//! ("EOF while parsing an object", "expected struct Operation"), which no client can act on.

use std::fmt;

use serde_json::Value;
use serde_json::error::Category;

/// Where and why a body is not JSON.
#[derive(Debug)]
pub struct JsonSyntax {
    line: usize,
    column: usize,
    found: Option<char>,
    expected: &'static str,
}

impl JsonSyntax {
    pub fn of(error: &serde_json::Error, body: &[u8]) -> Self {
        let (line, column) = (error.line(), error.column());
        let found = match error.classify() {
            Category::Eof => None,
            _ => character_at(body, line, column),
        };
        JsonSyntax {
            line,
            column,
            found,
            expected: expected(error),
        }
    }
}

impl fmt::Display for JsonSyntax {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let JsonSyntax {
            line,
            column,
            found,
            expected,
        } = self;
        match found {
            None if *line == 1 && *column == 0 => write!(formatter, "the body is empty"),
            None => write!(
                formatter,
                "it ends at line {line}, column {column} before the JSON is complete ({expected})"
            ),
            Some(found) => write!(
                formatter,
                "unexpected {} at line {line}, column {column}: {expected}",
                shown(*found)
            ),
        }
    }
}

/// What the parser wanted where it stopped, from serde_json's message without its position.
fn expected(error: &serde_json::Error) -> &'static str {
    let message = error.to_string();
    let reason = message.split(" at line ").next().unwrap_or_default();
    match reason {
        "expected value" => "a JSON value belongs here",
        "expected `:`" => "a `:` belongs after an object's key",
        "expected `,` or `}`" => "a `,` or the object's closing `}` belongs here",
        "expected `,` or `]`" => "a `,` or the array's closing `]` belongs here",
        "key must be a string" => "object keys are strings in double quotes",
        "trailing characters" | "trailing comma" => {
            "nothing may follow the JSON value, and no comma may precede a closing bracket"
        }
        "invalid number" | "number out of range" => "numbers are written as JSON numbers",
        "invalid escape"
        | "invalid unicode code point"
        | "lone leading surrogate in hex escape" => "strings may only use JSON's escapes",
        reason if reason.starts_with("control character") => {
            "control characters in strings must be escaped"
        }
        reason if reason.starts_with("EOF while parsing a string") => "a string is not closed",
        reason if reason.starts_with("EOF while parsing an object") => "an object is not closed",
        reason if reason.starts_with("EOF while parsing a list") => "an array is not closed",
        reason if reason.starts_with("EOF") => "a value is missing",
        _ => "the body must be one JSON object (or an array of them for a batch)",
    }
}

/// The character at a 1-based line and column (serde_json counts columns in bytes).
fn character_at(body: &[u8], line: usize, column: usize) -> Option<char> {
    let text = String::from_utf8_lossy(body);
    let line_text = text.split('\n').nth(line.checked_sub(1)?)?;
    let start = column.checked_sub(1)?;
    line_text.get(start..)?.chars().next()
}

fn shown(character: char) -> String {
    if character.is_control() || character.is_whitespace() {
        format!("character U+{:04X}", u32::from(character))
    } else {
        format!("`{character}`")
    }
}

/// Why one element of a request is not a GraphQL request: the member with the wrong type.
pub fn operation_shape(item: &Value) -> String {
    let Value::Object(members) = item else {
        return format!(
            "an operation is a JSON object with a `query` string (got {})",
            kind(item)
        );
    };
    let wanted = [
        ("query", "a string", Value::is_string as fn(&Value) -> bool),
        ("operationName", "a string", Value::is_string),
        ("variables", "an object", Value::is_object),
        ("extensions", "an object", Value::is_object),
    ];
    for (name, shape, fits) in wanted {
        if let Some(value) = members.get(name)
            && !value.is_null()
            && !fits(value)
        {
            return format!("`{name}` must be {shape} (got {})", kind(value));
        }
    }
    "the operation's members do not have the types a GraphQL request gives them".to_owned()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(body: &str) -> String {
        let error = serde_json::from_str::<Value>(body).expect_err("not JSON");
        JsonSyntax::of(&error, body.as_bytes()).to_string()
    }

    #[test]
    fn json_errors_name_the_place_and_what_belongs_there() {
        assert_eq!(
            syntax("{ nope"),
            "unexpected `n` at line 1, column 3: object keys are strings in double quotes"
        );
        assert_eq!(
            syntax("{\"query\": \"{ a }\""),
            "it ends at line 1, column 17 before the JSON is complete (an object is not closed)"
        );
        assert_eq!(
            syntax("{\"query\": }"),
            "unexpected `}` at line 1, column 11: a JSON value belongs here"
        );
        assert_eq!(syntax(""), "the body is empty");
        assert!(!syntax("{\"a\": 1} x").contains("trailing characters"));
    }

    #[test]
    fn shapes_name_the_member_and_its_type() {
        let shape = |text: &str| operation_shape(&serde_json::from_str(text).expect("JSON"));
        assert_eq!(
            shape(r#"{"query": 5}"#),
            "`query` must be a string (got a number)"
        );
        assert_eq!(
            shape(r#"{"query": "{ a }", "extensions": []}"#),
            "`extensions` must be an object (got an array)"
        );
        assert_eq!(
            shape("7"),
            "an operation is a JSON object with a `query` string (got a number)"
        );
    }
}
