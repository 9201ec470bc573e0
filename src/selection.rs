//! Route selection expressions: `$request.body.action`, `${request.body.a}/${request.body.b}`.
//!
//! The expression is parsed once at start-up into literal text and JSON paths; evaluating it
//! against a frame never fails, it only reports that the frame was not JSON. The semantics are
//! API Gateway's: a missing path evaluates to `""`, each variable is evaluated once (the result
//! is not re-parsed), `\$` is a literal `$`, and non-scalar values are stringified.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

/// A parsed route selection expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionExpression {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body(Vec<Segment>),
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route selection expression {expression:?}: {reason}")]
pub struct ExpressionError {
    expression: String,
    reason: String,
}

/// The frame could not be parsed as JSON, so only `$default` can take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

impl SelectionExpression {
    /// Parses an expression.
    pub fn parse(source: &str) -> Result<Self, ExpressionError> {
        let err = |reason: String| ExpressionError {
            expression: source.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        if source.is_empty() {
            return Err(err("the expression is empty".into()));
        }
        while let Some(c) = rest.chars().next() {
            if c == '\\' && rest[1..].starts_with('$') {
                literal.push('$');
                rest = &rest[2..];
            } else if let Some(inner) = rest.strip_prefix("${") {
                let end = inner
                    .find('}')
                    .ok_or_else(|| err("`${` is not closed by `}`".into()))?;
                let path = parse_variable(&inner[..end]).map_err(err)?;
                flush(&mut literal, &mut parts);
                parts.push(Part::Body(path));
                rest = &inner[end + 1..];
            } else if c == '$' && rest.starts_with("$request.") {
                // An unwrapped variable runs to the end of the expression.
                let path = parse_variable(&rest[1..]).map_err(err)?;
                flush(&mut literal, &mut parts);
                parts.push(Part::Body(path));
                rest = "";
            } else if c == '$' {
                let name: String = rest[1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                if name.is_empty() {
                    literal.push('$');
                    rest = &rest[1..];
                } else {
                    return Err(err(format!(
                        "`${name}` is not a supported variable; use `$request.body.<path>` or \
                         `${{request.body.<path>}}`, or write `\\$` for a literal `$`"
                    )));
                }
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        flush(&mut literal, &mut parts);
        Ok(SelectionExpression {
            source: source.to_owned(),
            parts,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether evaluating needs the frame parsed as JSON.
    pub fn needs_json(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Body(_)))
    }

    /// Evaluates the expression against a frame's text.
    pub fn evaluate<'a>(&'a self, body: &str) -> Result<Cow<'a, str>, NotJson> {
        if !self.needs_json() {
            return Ok(Cow::Owned(self.literal_value()));
        }
        let json: Value = serde_json::from_str(body).map_err(|_| NotJson)?;
        Ok(Cow::Owned(self.evaluate_json(&json)))
    }

    /// Evaluates the expression against an already parsed frame.
    pub fn evaluate_json(&self, json: &Value) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Body(path) => {
                    if let Some(value) = lookup(json, path) {
                        stringify(value, &mut out);
                    }
                }
            }
        }
        out
    }

    fn literal_value(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(text) => text.as_str(),
                Part::Body(_) => "",
            })
            .collect()
    }
}

impl Default for SelectionExpression {
    fn default() -> Self {
        SelectionExpression::parse("$request.body.action").expect("the default expression parses")
    }
}

impl fmt::Display for SelectionExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for SelectionExpression {
    type Err = ExpressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SelectionExpression::parse(s)
    }
}

fn flush(literal: &mut String, parts: &mut Vec<Part>) {
    if !literal.is_empty() {
        parts.push(Part::Literal(std::mem::take(literal)));
    }
}

/// Parses `request.body.a.b[0]['c d']` (without the leading `$`).
fn parse_variable(var: &str) -> Result<Vec<Segment>, String> {
    let Some(path) = var.strip_prefix("request.body") else {
        return Err(format!(
            "`{var}` is not supported; route selection reads only `request.body.<path>`"
        ));
    };
    if path.is_empty() {
        return Err("`request.body` needs a path, such as `request.body.action`".into());
    }
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            if key.is_empty() {
                return Err(format!("empty path step in `{var}`"));
            }
            segments.push(Segment::Key(key.to_owned()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after
                .find(']')
                .ok_or_else(|| format!("`[` is not closed in `{var}`"))?;
            let inner = after[..end].trim();
            let quoted = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
            if let Some(key) = quoted {
                segments.push(Segment::Key(key.to_owned()));
            } else if let Ok(index) = inner.parse::<usize>() {
                segments.push(Segment::Index(index));
            } else {
                return Err(format!(
                    "`[{inner}]` in `{var}` is neither an index nor a quoted key"
                ));
            }
            rest = &after[end + 1..];
        } else {
            return Err(format!("unexpected `{rest}` in `{var}`"));
        }
    }
    Ok(segments)
}

fn lookup<'v>(mut value: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    for segment in path {
        value = match (segment, value) {
            (Segment::Key(key), Value::Object(map)) => map.get(key)?,
            (Segment::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Stringifies like API Gateway: strings unquoted, arrays as `[a, b]`, objects as `{k=v}`.
fn stringify(value: &Value, out: &mut String) {
    use std::fmt::Write;
    match value {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                stringify(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push('=');
                stringify(v, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"service":"chat","action":"join","data":{"room":"room1234"}}"#;

    fn eval(expr: &str, body: &str) -> Result<String, NotJson> {
        SelectionExpression::parse(expr)
            .unwrap()
            .evaluate(body)
            .map(|c| c.into_owned())
    }

    #[test]
    fn the_documented_table() {
        assert_eq!(eval("$request.body.action", DOC).unwrap(), "join");
        assert_eq!(eval("${request.body.action}", DOC).unwrap(), "join");
        assert_eq!(
            eval("${request.body.service}/${request.body.action}", DOC).unwrap(),
            "chat/join"
        );
        assert_eq!(
            eval("${request.body.action}-${request.body.invalidPath}", DOC).unwrap(),
            "join-"
        );
        assert_eq!(eval("action", DOC).unwrap(), "action");
        assert_eq!(eval("\\$default", DOC).unwrap(), "$default");
    }

    #[test]
    fn nested_and_bracket_paths() {
        let body = r#"{"service":{"do":"echo"},"list":["a","b"],"odd key":{"x":1}}"#;
        assert_eq!(eval("$request.body.service.do", body).unwrap(), "echo");
        assert_eq!(eval("$request.body.list[1]", body).unwrap(), "b");
        assert_eq!(eval("${request.body['odd key'].x}", body).unwrap(), "1");
        assert_eq!(eval("$request.body.list", body).unwrap(), "[a, b]");
        assert_eq!(eval("$request.body.service", body).unwrap(), "{do=echo}");
        assert_eq!(eval("$request.body.list[5]", body).unwrap(), "");
    }

    #[test]
    fn scalars_are_stringified() {
        assert_eq!(eval("$request.body.a", r#"{"a":12}"#).unwrap(), "12");
        assert_eq!(eval("$request.body.a", r#"{"a":true}"#).unwrap(), "true");
        assert_eq!(eval("$request.body.a", r#"{"a":null}"#).unwrap(), "");
    }

    #[test]
    fn variables_are_evaluated_once() {
        let body = r#"{"action":"${request.body.x}","x":"no"}"#;
        assert_eq!(
            eval("$request.body.action", body).unwrap(),
            "${request.body.x}"
        );
    }

    #[test]
    fn non_json_is_reported() {
        assert_eq!(eval("$request.body.action", "hello"), Err(NotJson));
        assert_eq!(eval("$request.body.action", "").map(|_| ()), Err(NotJson));
        // A static expression does not look at the body at all.
        assert_eq!(eval("static", "hello").unwrap(), "static");
        // JSON that is not an object evaluates paths to "".
        assert_eq!(eval("$request.body.action", "[1,2]").unwrap(), "");
    }

    #[test]
    fn invalid_expressions_name_the_problem() {
        for (expr, needle) in [
            ("", "empty"),
            ("${request.body.action", "not closed"),
            ("$request.header.x", "not supported"),
            ("${context.routeKey}", "not supported"),
            ("$request.body", "needs a path"),
            ("$request.body..a", "empty path step"),
            ("$request.body.a[x]", "neither an index"),
            ("$foo", "not a supported variable"),
        ] {
            let e = SelectionExpression::parse(expr).unwrap_err().to_string();
            assert!(e.contains(needle), "{expr}: {e}");
        }
    }

    #[test]
    fn a_lone_dollar_is_literal() {
        assert_eq!(eval("cost $", "{}").unwrap(), "cost $");
    }
}
