//! CloudFormation's intrinsic functions, evaluated once at load time.
//!
//! `Ref` (parameters, pseudo-parameters, resources), `Fn::Sub` (both forms), `Fn::Join`,
//! `Fn::GetAtt` (`X.Attr` and `[X, Attr]`), `Fn::If` with `Conditions`, `Fn::Equals`,
//! `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`, `Fn::Select`, `Fn::Split`, `Fn::FindInMap`,
//! `Fn::Base64`. What a resource's `Ref` and attributes stand for is decided by the reader
//! (`sam.rs`, `serverless.rs`) when it builds the [`Context`]. Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// What a resource evaluates to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceValue {
    /// The resource's type (`AWS::DynamoDB::Table`).
    pub kind: String,
    /// What `Ref` returns (a table's name, a function's name, an id).
    pub reference: String,
    /// `Fn::GetAtt` attributes (`Arn`, `StreamArn`, ...).
    pub attributes: BTreeMap<String, String>,
}

/// Everything an intrinsic may refer to.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Parameters (with their defaults or overrides) and pseudo-parameters.
    pub parameters: BTreeMap<String, Value>,
    /// Resources by logical id.
    pub resources: BTreeMap<String, ResourceValue>,
    /// `Conditions`, evaluated.
    pub conditions: BTreeMap<String, bool>,
    /// `Mappings`.
    pub mappings: Map<String, Value>,
}

/// Marks a value that `Ref: AWS::NoValue` removed.
const NO_VALUE: &str = "\u{0}switchboard:no-value";

impl Context {
    /// Pseudo-parameters for a stack.
    pub fn with_pseudo(region: &str, account_id: &str, stack_name: &str) -> Self {
        let mut parameters = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            parameters.insert(k.to_owned(), Value::String(v));
        };
        set("AWS::Region", region.to_owned());
        set("AWS::AccountId", account_id.to_owned());
        set("AWS::StackName", stack_name.to_owned());
        set("AWS::Partition", "aws".to_owned());
        set("AWS::URLSuffix", "amazonaws.com".to_owned());
        set(
            "AWS::StackId",
            format!(
                "arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/{}",
                stable_suffix(stack_name, "stack-id", 32).to_lowercase()
            ),
        );
        parameters.insert("AWS::NotificationARNs".into(), Value::Array(Vec::new()));
        Context {
            parameters,
            ..Context::default()
        }
    }

    /// Evaluates every intrinsic in `value`. Keys and list items whose value is
    /// `Ref: AWS::NoValue` are removed.
    pub fn resolve(&self, value: &Value) -> Result<Value, String> {
        let resolved = self.eval(value, 0)?;
        Ok(if is_no_value(&resolved) {
            Value::Null
        } else {
            resolved
        })
    }

    /// Evaluates `value` and requires a string.
    pub fn resolve_string(&self, value: &Value, what: &str) -> Result<String, String> {
        match self.resolve(value).map_err(|e| format!("{what}: {e}"))? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(format!("{what} must be a string, not {other}")),
        }
    }

    /// Evaluates one `Conditions` entry.
    pub fn condition(&self, value: &Value) -> Result<bool, String> {
        match self.eval(value, 0)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s == "true" => Ok(true),
            Value::String(s) if s == "false" => Ok(false),
            other => Err(format!("a condition must be true or false, not {other}")),
        }
    }

    fn eval(&self, value: &Value, depth: usize) -> Result<Value, String> {
        if depth > 64 {
            return Err("intrinsic functions nested more than 64 deep".into());
        }
        match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let v = self.eval(item, depth + 1)?;
                    if !is_no_value(&v) {
                        out.push(v);
                    }
                }
                Ok(Value::Array(out))
            }
            Value::Object(map) if map.len() == 1 => {
                let (key, arg) = map.iter().next().expect("one entry");
                match self.function(key, arg, depth)? {
                    Some(v) => Ok(v),
                    None => self.object(map, depth),
                }
            }
            Value::Object(map) => self.object(map, depth),
            other => Ok(other.clone()),
        }
    }

    fn object(&self, map: &Map<String, Value>, depth: usize) -> Result<Value, String> {
        let mut out = Map::new();
        for (k, v) in map {
            let v = self.eval(v, depth + 1)?;
            if !is_no_value(&v) {
                out.insert(k.clone(), v);
            }
        }
        Ok(Value::Object(out))
    }

    /// `None` when `name` is not an intrinsic (an ordinary one-key object).
    fn function(&self, name: &str, arg: &Value, depth: usize) -> Result<Option<Value>, String> {
        let eval = |v: &Value| self.eval(v, depth + 1);
        let value = match name {
            "Ref" => {
                let target = eval(arg)?;
                let Value::String(target) = target else {
                    return Err(format!("Ref needs a name, not {target}"));
                };
                self.reference(&target)?
            }
            "Fn::GetAtt" => {
                let (resource, attribute) = match eval(arg)? {
                    Value::String(s) => match s.split_once('.') {
                        Some((r, a)) => (r.to_owned(), a.to_owned()),
                        None => return Err(format!("Fn::GetAtt {s:?}: use Resource.Attribute")),
                    },
                    Value::Array(parts) => match parts.as_slice() {
                        [Value::String(r), Value::String(a)] => (r.clone(), a.clone()),
                        _ => return Err("Fn::GetAtt needs [Resource, Attribute]".into()),
                    },
                    other => return Err(format!("Fn::GetAtt needs a name, not {other}")),
                };
                Value::String(self.attribute(&resource, &attribute)?)
            }
            "Fn::Sub" => {
                let (template, vars) = match arg {
                    Value::String(s) => (s.clone(), Map::new()),
                    Value::Array(parts) => match parts.as_slice() {
                        [template, vars] => {
                            let Value::String(template) = eval(template)? else {
                                return Err("Fn::Sub's first item must be a string".into());
                            };
                            let Value::Object(vars) = eval(vars)? else {
                                return Err("Fn::Sub's second item must be a map".into());
                            };
                            (template, vars)
                        }
                        _ => return Err("Fn::Sub needs a string or [string, map]".into()),
                    },
                    other => return Err(format!("Fn::Sub needs a string, not {other}")),
                };
                Value::String(self.sub(&template, &vars)?)
            }
            "Fn::Join" => {
                let Value::Array(parts) = eval(arg)? else {
                    return Err("Fn::Join needs [delimiter, [values]]".into());
                };
                let [Value::String(delimiter), Value::Array(items)] = parts.as_slice() else {
                    return Err("Fn::Join needs [delimiter, [values]]".into());
                };
                let items = items
                    .iter()
                    .map(|v| scalar(v, "Fn::Join"))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::String(items.join(delimiter))
            }
            "Fn::Select" => {
                let Value::Array(parts) = eval(arg)? else {
                    return Err("Fn::Select needs [index, [values]]".into());
                };
                let [index, Value::Array(items)] = parts.as_slice() else {
                    return Err("Fn::Select needs [index, [values]]".into());
                };
                let index: usize = scalar(index, "Fn::Select")?
                    .parse()
                    .map_err(|_| format!("Fn::Select: {index} is not an index"))?;
                items.get(index).cloned().ok_or_else(|| {
                    format!(
                        "Fn::Select: index {index} is past the list's {} items",
                        items.len()
                    )
                })?
            }
            "Fn::Split" => {
                let Value::Array(parts) = eval(arg)? else {
                    return Err("Fn::Split needs [delimiter, string]".into());
                };
                let [Value::String(delimiter), Value::String(source)] = parts.as_slice() else {
                    return Err("Fn::Split needs [delimiter, string]".into());
                };
                Value::Array(
                    source
                        .split(delimiter.as_str())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                )
            }
            "Fn::If" => {
                let Value::Array(parts) = arg else {
                    return Err("Fn::If needs [condition, then, else]".into());
                };
                let [Value::String(condition), then, otherwise] = parts.as_slice() else {
                    return Err("Fn::If needs [condition, then, else]".into());
                };
                if self.named_condition(condition)? {
                    eval(then)?
                } else {
                    eval(otherwise)?
                }
            }
            "Condition" => match arg {
                Value::String(name) => Value::Bool(self.named_condition(name)?),
                _ => return Ok(None),
            },
            "Fn::Equals" => {
                let Value::Array(parts) = eval(arg)? else {
                    return Err("Fn::Equals needs [a, b]".into());
                };
                let [a, b] = parts.as_slice() else {
                    return Err("Fn::Equals needs [a, b]".into());
                };
                Value::Bool(scalar(a, "Fn::Equals")? == scalar(b, "Fn::Equals")?)
            }
            "Fn::Not" | "Fn::And" | "Fn::Or" => {
                let Value::Array(parts) = eval(arg)? else {
                    return Err(format!("{name} needs a list of conditions"));
                };
                let values = parts
                    .iter()
                    .map(|v| match v {
                        Value::Bool(b) => Ok(*b),
                        other => Err(format!("{name}: {other} is not a condition")),
                    })
                    .collect::<Result<Vec<bool>, _>>()?;
                Value::Bool(match name {
                    "Fn::Not" => match values.as_slice() {
                        [one] => !one,
                        _ => return Err("Fn::Not needs one condition".into()),
                    },
                    "Fn::And" => values.iter().all(|b| *b),
                    _ => values.iter().any(|b| *b),
                })
            }
            "Fn::FindInMap" => {
                let Value::Array(parts) = eval(arg)? else {
                    return Err("Fn::FindInMap needs [map, key, key]".into());
                };
                let [map, first, second] = parts.as_slice() else {
                    return Err("Fn::FindInMap needs [map, key, key]".into());
                };
                let (map, first, second) = (
                    scalar(map, "Fn::FindInMap")?,
                    scalar(first, "Fn::FindInMap")?,
                    scalar(second, "Fn::FindInMap")?,
                );
                self.mappings
                    .get(&map)
                    .and_then(|m| m.get(&first))
                    .and_then(|m| m.get(&second))
                    .cloned()
                    .ok_or_else(|| {
                        format!("Fn::FindInMap: no {map}.{first}.{second} in Mappings")
                    })?
            }
            "Fn::Base64" => {
                use base64::Engine;
                let text = scalar(&eval(arg)?, "Fn::Base64")?;
                Value::String(base64::engine::general_purpose::STANDARD.encode(text))
            }
            "Fn::ImportValue" | "Fn::GetAZs" | "Fn::Cidr" | "Fn::Length" | "Fn::ToJsonString" => {
                return Err(format!(
                    "{name} is not supported: it needs other stacks or AWS itself"
                ));
            }
            _ => return Ok(None),
        };
        Ok(Some(value))
    }

    fn named_condition(&self, name: &str) -> Result<bool, String> {
        self.conditions
            .get(name)
            .copied()
            .ok_or_else(|| format!("condition {name:?} is not in Conditions"))
    }

    fn reference(&self, target: &str) -> Result<Value, String> {
        if target == "AWS::NoValue" {
            return Ok(Value::String(NO_VALUE.into()));
        }
        if let Some(v) = self.parameters.get(target) {
            return Ok(v.clone());
        }
        if let Some(r) = self.resources.get(target) {
            return Ok(Value::String(r.reference.clone()));
        }
        Err(format!(
            "Ref {target:?}: no parameter or resource has that name"
        ))
    }

    fn attribute(&self, resource: &str, attribute: &str) -> Result<String, String> {
        let r = self.resources.get(resource).ok_or_else(|| {
            format!("Fn::GetAtt {resource}.{attribute}: no resource {resource:?} in the template")
        })?;
        r.attributes.get(attribute).cloned().ok_or_else(|| {
            format!(
                "Fn::GetAtt {resource}.{attribute}: a {} has no attribute {attribute:?} here (known: {})",
                r.kind,
                r.attributes.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// `Fn::Sub`'s `${Name}`, `${Resource.Attribute}` and `${!Literal}`.
    fn sub(&self, template: &str, vars: &Map<String, Value>) -> Result<String, String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("Fn::Sub {template:?}: an unclosed ${{"));
            };
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(&scalar(v, "Fn::Sub")?);
            } else if self.parameters.contains_key(name) || self.resources.contains_key(name) {
                out.push_str(&scalar(&self.reference(name)?, "Fn::Sub")?);
            } else if let Some((resource, attribute)) = name.split_once('.') {
                out.push_str(&self.attribute(resource, attribute)?);
            } else {
                return Err(format!(
                    "Fn::Sub {template:?}: ${{{name}}} names no parameter, resource or variable"
                ));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn is_no_value(v: &Value) -> bool {
    matches!(v, Value::String(s) if s == NO_VALUE)
}

fn scalar(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("{what}: {other} is not a string")),
    }
}

/// A deterministic suffix of `len` upper-case letters and digits for generated names, so a
/// table or function keeps its name from one start to the next.
pub fn stable_suffix(scope: &str, logical_id: &str, len: usize) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let digest = Sha256::digest(format!("{scope}\0{logical_id}").as_bytes());
    digest
        .iter()
        .cycle()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Context {
        let mut c = Context::with_pseudo("eu-west-1", "123456789012", "chat");
        c.parameters
            .insert("TableName".into(), json!("connections"));
        c.resources.insert(
            "Table".into(),
            ResourceValue {
                kind: "AWS::DynamoDB::Table".into(),
                reference: "connections".into(),
                attributes: [(
                    "Arn".to_owned(),
                    "arn:aws:dynamodb:eu-west-1:123456789012:table/connections".to_owned(),
                )]
                .into(),
            },
        );
        c.resources.insert(
            "ConnectIntegration".into(),
            ResourceValue {
                kind: "AWS::ApiGatewayV2::Integration".into(),
                reference: "ConnectIntegration".into(),
                attributes: BTreeMap::new(),
            },
        );
        c.conditions.insert("IsProd".into(), false);
        c.mappings = json!({"Sizes": {"dev": {"Memory": 256}}})
            .as_object()
            .unwrap()
            .clone();
        c
    }

    #[test]
    fn every_intrinsic() {
        let c = context();
        let r = |v: Value| c.resolve(&v).unwrap();
        assert_eq!(r(json!({"Ref": "TableName"})), json!("connections"));
        assert_eq!(r(json!({"Ref": "AWS::Region"})), json!("eu-west-1"));
        assert_eq!(r(json!({"Ref": "Table"})), json!("connections"));
        assert_eq!(
            r(json!({"Fn::GetAtt": ["Table", "Arn"]})),
            json!("arn:aws:dynamodb:eu-west-1:123456789012:table/connections")
        );
        assert_eq!(
            r(json!({"Fn::Sub": "integrations/${ConnectIntegration}"})),
            json!("integrations/ConnectIntegration")
        );
        assert_eq!(
            r(json!({"Fn::Sub": "${AWS::StackName}-${Table.Arn}-${!Literal}"})),
            json!("chat-arn:aws:dynamodb:eu-west-1:123456789012:table/connections-${Literal}")
        );
        assert_eq!(
            r(json!({"Fn::Sub": ["${X}/${AWS::AccountId}", {"X": {"Ref": "Table"}}]})),
            json!("connections/123456789012")
        );
        assert_eq!(
            r(json!({"Fn::Join": ["/", ["integrations", {"Ref": "ConnectIntegration"}]]})),
            json!("integrations/ConnectIntegration")
        );
        assert_eq!(
            r(json!({"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]})),
            json!("b")
        );
        assert_eq!(r(json!({"Fn::If": ["IsProd", 1, 2]})), json!(2));
        assert_eq!(
            r(json!({"A": {"Fn::If": ["IsProd", 1, {"Ref": "AWS::NoValue"}]}, "B": 1})),
            json!({"B": 1})
        );
        assert_eq!(
            r(json!({"Fn::FindInMap": ["Sizes", "dev", "Memory"]})),
            json!(256)
        );
        assert_eq!(r(json!({"Fn::Base64": "hi"})), json!("aGk="));
        assert!(
            c.condition(&json!({"Fn::Equals": [{"Ref": "AWS::Region"}, "eu-west-1"]}))
                .unwrap()
        );
        assert!(
            c.condition(&json!({"Fn::Not": [{"Condition": "IsProd"}]}))
                .unwrap()
        );
        assert!(
            !c.condition(&json!({"Fn::And": [true, {"Condition": "IsProd"}]}))
                .unwrap()
        );
        assert!(c.condition(&json!({"Fn::Or": [true, false]})).unwrap());
    }

    #[test]
    fn missing_names_are_errors() {
        let c = context();
        let e = |v: Value| c.resolve(&v).unwrap_err();
        assert!(e(json!({"Ref": "Nope"})).contains("\"Nope\""));
        assert!(e(json!({"Fn::GetAtt": "Nope.Arn"})).contains("no resource \"Nope\""));
        assert!(e(json!({"Fn::GetAtt": "Table.StreamArn"})).contains("no attribute"));
        assert!(e(json!({"Fn::Sub": "${Nope}"})).contains("names no parameter"));
        assert!(e(json!({"Fn::If": ["Nope", 1, 2]})).contains("not in Conditions"));
        assert!(e(json!({"Fn::ImportValue": "x"})).contains("not supported"));
    }

    #[test]
    fn suffixes_are_stable() {
        assert_eq!(stable_suffix("s", "T", 12), stable_suffix("s", "T", 12));
        assert_ne!(stable_suffix("s", "T", 12), stable_suffix("s", "U", 12));
        assert_eq!(stable_suffix("s", "T", 12).len(), 12);
    }
}
