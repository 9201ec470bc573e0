//! YAML (and JSON) documents into `serde_json::Value`, with CloudFormation's short-form tags
//! turned into their long form: `!Ref X` becomes `{"Ref": "X"}`, `!GetAtt A.B` becomes
//! `{"Fn::GetAtt": "A.B"}`, `!Sub`, `!Join`, `!If`, ... become `{"Fn::Sub": ...}`, and so on.
//!
//! Errors carry the line and column the parser stopped at. Pure: no I/O.

use serde_json::{Map, Value};
use yaml_serde::Value as Yaml;

/// A document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line, when known.
    pub line: usize,
    /// 1-based column, when known.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The short-form tags CloudFormation defines, and the function each one stands for.
const TAGS: &[(&str, &str)] = &[
    ("Ref", "Ref"),
    ("Condition", "Condition"),
    ("GetAtt", "Fn::GetAtt"),
    ("Sub", "Fn::Sub"),
    ("Join", "Fn::Join"),
    ("If", "Fn::If"),
    ("Select", "Fn::Select"),
    ("Split", "Fn::Split"),
    ("Equals", "Fn::Equals"),
    ("Not", "Fn::Not"),
    ("And", "Fn::And"),
    ("Or", "Fn::Or"),
    ("FindInMap", "Fn::FindInMap"),
    ("Base64", "Fn::Base64"),
    ("GetAZs", "Fn::GetAZs"),
    ("ImportValue", "Fn::ImportValue"),
    ("Cidr", "Fn::Cidr"),
    ("Length", "Fn::Length"),
    ("ToJsonString", "Fn::ToJsonString"),
];

/// Parses YAML text, resolving short-form tags.
pub fn parse_yaml(text: &str) -> Result<Value, SyntaxError> {
    let yaml: Yaml = yaml_serde::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        SyntaxError {
            line,
            column,
            message: strip_location(&e.to_string()),
        }
    })?;
    convert(yaml).map_err(|mut e| {
        // Values carry no positions: find the tag the error names in the text.
        if e.line == 0
            && let Some(tag) = e
                .message
                .split_whitespace()
                .nth(2)
                .map(|t| t.trim_end_matches(':'))
            && let Some(offset) = text.find(tag)
        {
            let before = &text[..offset];
            e.line = before.matches('\n').count() + 1;
            e.column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        }
        e
    })
}

/// Parses JSON text.
pub fn parse_json(text: &str) -> Result<Value, SyntaxError> {
    serde_json::from_str(text).map_err(|e| SyntaxError {
        line: e.line(),
        column: e.column(),
        message: strip_location(&e.to_string()),
    })
}

/// The parsers' messages hold " at line L column C"; the error says it once, up front.
fn strip_location(message: &str) -> String {
    let Some(i) = message.find(" at line ") else {
        return message.to_owned();
    };
    let rest = &message[i + " at line ".len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix(" column ").unwrap_or(rest);
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{rest}", &message[..i])
}

fn convert(yaml: Yaml) -> Result<Value, SyntaxError> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => {
            Value::Array(items.into_iter().map(convert).collect::<Result<_, _>>()?)
        }
        Yaml::Mapping(mapping) => {
            let mut map = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Yaml::String(s) => s,
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Null => "null".into(),
                    other => {
                        return Err(SyntaxError {
                            line: 0,
                            column: 0,
                            message: format!("a mapping key must be a scalar, not {other:?}"),
                        });
                    }
                };
                map.insert(key, convert(value)?);
            }
            Value::Object(map)
        }
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let Some((_, function)) = TAGS.iter().find(|(short, _)| *short == name) else {
                return Err(SyntaxError {
                    line: 0,
                    column: 0,
                    message: format!(
                        "unknown tag {tag}: CloudFormation's short forms are {}",
                        TAGS.iter()
                            .map(|(t, _)| format!("!{t}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            };
            let inner = convert(tagged.value)?;
            let mut map = Map::new();
            map.insert((*function).to_owned(), inner);
            Value::Object(map)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_forms_become_long_forms() {
        let v = parse_yaml(
            "a: !Ref Table\n\
             b: !GetAtt Fn.Arn\n\
             c: !Sub 'integrations/${X}'\n\
             d: !Join ['/', [integrations, !Ref X]]\n\
             e: !If [IsProd, 1, !Ref 'AWS::NoValue']\n\
             f: !Select [0, !Split [',', 'a,b']]\n\
             g: !Sub\n  - '${A}-x'\n  - A: !Ref B\n",
        )
        .unwrap();
        assert_eq!(v["a"], json!({"Ref": "Table"}));
        assert_eq!(v["b"], json!({"Fn::GetAtt": "Fn.Arn"}));
        assert_eq!(v["c"], json!({"Fn::Sub": "integrations/${X}"}));
        assert_eq!(
            v["d"],
            json!({"Fn::Join": ["/", ["integrations", {"Ref": "X"}]]})
        );
        assert_eq!(
            v["e"],
            json!({"Fn::If": ["IsProd", 1, {"Ref": "AWS::NoValue"}]})
        );
        assert_eq!(
            v["f"],
            json!({"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]})
        );
        assert_eq!(v["g"], json!({"Fn::Sub": ["${A}-x", {"A": {"Ref": "B"}}]}));
    }

    #[test]
    fn errors_have_a_line_and_column() {
        let e = parse_yaml("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(e.line >= 2, "{e:?}");
        assert!(e.column >= 1, "{e:?}");
        // The position is given once, up front; the context ("while parsing a flow sequence at
        // line 2 column 4") stays.
        assert!(!e.message.contains("line 3 column 2"), "{e:?}");
        let e = parse_json("{\n  \"a\": 1,\n  \"b\" 2\n}").unwrap_err();
        assert_eq!((e.line, e.column), (3, 7), "{e:?}");
        let e = parse_yaml("a: 1\nb:\n  c: !Bogus x\n").unwrap_err();
        assert!(e.message.contains("unknown tag !Bogus"), "{e:?}");
        assert_eq!((e.line, e.column), (3, 6), "{e:?}");
    }

    #[test]
    fn scalars_keep_their_types() {
        let v = parse_yaml("n: 10\nf: 1.5\nb: true\ns: '10'\nz: ~\n1: one\n").unwrap();
        assert_eq!(
            v,
            json!({"n": 10, "f": 1.5, "b": true, "s": "10", "z": null, "1": "one"})
        );
    }
}
