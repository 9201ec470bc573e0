//! Serverless Framework files: `serverless.yml`, `.yaml`, `.json` (and the output of
//! `serverless print` for `serverless.ts`).
//!
//! Every generation of the WebSocket syntax is read: `provider.websocketsApiRouteSelectionExpression`
//! and the 2018 plugin's `provider.websocketApiRouteSelectionExpression`; `websocket` events as
//! a string, as `{route: ...}` and as the plugin's `{routeKey: ...}`. Variables (`${self:...}`,
//! `${sls:stage}`, `${opt:stage, 'dev'}`, `${env:NAME, default}`, `${param:K}`, `${file(f):k}`,
//! `${aws:region}`) are resolved first; `${...}` that names none of these sources (CloudFormation's
//! `${AWS::Region}` inside a `Fn::Sub`) is left alone. `resources.Resources` is CloudFormation,
//! read for its tables. Pure apart from `${env:}`, `${file()}` and checking code paths.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::intrinsics::{Context, ResourceValue};
use super::sam::{Resource, SIMPLE_TABLE, TABLE, resource_value, table_properties};
use super::{FunctionParts, Loaded, Overrides, Problem};
use crate::integration::definition::{
    ApiDefinition, AuthorizerKind, AuthorizerSpec, IntegrationSpec, LambdaSpec, RouteSpec,
};

const ACCOUNT_ID: &str = "123456789012";
const MAX_DEPTH: usize = 20;

/// Sources of variables; `${...}` naming anything else is not a Serverless variable.
const SOURCES: &[&str] = &[
    "self:",
    "sls:",
    "opt:",
    "env:",
    "file(",
    "aws:",
    "param:",
    "cf:",
    "cf(",
    "ssm:",
    "ssm(",
    "s3:",
    "strToBool(",
];

struct Variables<'a> {
    raw: &'a Value,
    base_dir: &'a Path,
    overrides: &'a Overrides,
    stage: String,
    region: String,
}

impl Variables<'_> {
    fn value(&self, v: &Value, depth: usize) -> Result<Value, Problem> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "variables nest more than {MAX_DEPTH} deep (does one refer to itself?)"
            ));
        }
        Ok(match v {
            Value::String(s) => self.string(s, depth)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.value(i, depth))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.value(v, depth)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// A string with its variables replaced; a string that is exactly one variable takes the
    /// variable's value, whatever its type.
    fn string(&self, s: &str, depth: usize) -> Result<Value, Problem> {
        if !s.contains("${") {
            return Ok(Value::String(s.to_owned()));
        }
        if let Some(end) = matching_brace(s, 0)
            && s.starts_with("${")
            && end == s.len() - 1
            && let Some(v) = self.expression(&s[2..end], depth)?
        {
            return Ok(v);
        }
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while let Some(found) = s[i..].find("${") {
            let start = i + found;
            out.push_str(&s[i..start]);
            let Some(end) = matching_brace(s, start) else {
                out.push_str(&s[start..]);
                return Ok(Value::String(out));
            };
            match self.expression(&s[start + 2..end], depth)? {
                Some(v) => out.push_str(&super::scalar_text(&v, s).map_err(|_| {
                    format!("{s:?}: a variable inside text must be a string, not {v}")
                })?),
                None => out.push_str(&s[start..=end]),
            }
            i = end + 1;
        }
        out.push_str(&s[i..]);
        Ok(Value::String(out))
    }

    /// The value of `source:address, fallback, ...`; `None` when it is not a Serverless
    /// variable at all.
    fn expression(&self, expression: &str, depth: usize) -> Result<Option<Value>, Problem> {
        // Variables inside the expression first (`${opt:stage, ${self:custom.stage}}`).
        let expression = match self.string(expression, depth + 1)? {
            Value::String(s) => s,
            other => return Ok(Some(other)),
        };
        let alternatives = split_top_level(&expression);
        let first = alternatives.first().map(|a| a.trim()).unwrap_or("");
        if !SOURCES.iter().any(|s| first.starts_with(s)) {
            return Ok(None);
        }
        for alternative in &alternatives {
            if let Some(v) = self.alternative(alternative.trim(), depth)? {
                return Ok(Some(v));
            }
        }
        Err(format!(
            "${{{expression}}} has no value (give a default: ${{{first}, 'value'}})"
        ))
    }

    fn alternative(&self, a: &str, depth: usize) -> Result<Option<Value>, Problem> {
        if let Some(quoted) = a
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .or_else(|| a.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
        {
            return Ok(Some(Value::String(quoted.to_owned())));
        }
        if let Ok(n) = a.parse::<i64>() {
            return Ok(Some(Value::from(n)));
        }
        if a == "true" || a == "false" {
            return Ok(Some(Value::Bool(a == "true")));
        }
        if a == "null" {
            return Ok(None);
        }
        let found = if let Some(path) = a.strip_prefix("self:") {
            match lookup(self.raw, path, true) {
                Some(v) => Some(self.value(&v, depth + 1)?),
                None => None,
            }
        } else if let Some(name) = a.strip_prefix("sls:") {
            match name {
                "stage" => Some(Value::String(self.stage.clone())),
                "instanceId" => Some(Value::String("switchboard".into())),
                _ => None,
            }
        } else if let Some(name) = a.strip_prefix("opt:") {
            match name {
                "stage" => self.overrides.stage.clone().map(Value::String),
                "region" => self.overrides.region.clone().map(Value::String),
                _ => None,
            }
        } else if let Some(name) = a.strip_prefix("env:") {
            std::env::var(name).ok().map(Value::String)
        } else if let Some(name) = a.strip_prefix("param:") {
            self.overrides
                .parameters
                .get(name)
                .cloned()
                .map(Value::String)
        } else if let Some(name) = a.strip_prefix("aws:") {
            match name {
                "region" => Some(Value::String(self.region.clone())),
                "accountId" => Some(Value::String(ACCOUNT_ID.into())),
                _ => None,
            }
        } else if let Some(rest) = a.strip_prefix("file(") {
            let (file, address) = rest
                .split_once(')')
                .ok_or_else(|| format!("${{{a}}}: file( has no closing )"))?;
            let path = self.base_dir.join(file.trim());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("${{{a}}}: {}: {e}", path.display()))?;
            let parsed = if path.extension().is_some_and(|e| e == "json") {
                super::yaml::parse_json(&text)
            } else {
                super::yaml::parse_yaml(&text)
            }
            .map_err(|e| {
                format!(
                    "${{{a}}}: {}:{}:{}: {}",
                    path.display(),
                    e.line,
                    e.column,
                    e.message
                )
            })?;
            let address = address.trim_start_matches(':');
            let found = if address.is_empty() {
                Some(parsed.clone())
            } else {
                lookup(&parsed, address, false)
            };
            match found {
                Some(v) => Some(self.value(&v, depth + 1)?),
                None => None,
            }
        } else if a.starts_with("strToBool(") {
            let inner = a
                .trim_start_matches("strToBool(")
                .trim_end_matches(')')
                .trim();
            Some(Value::Bool(inner == "true"))
        } else {
            // cf:, ssm:, s3: need AWS: only their fallbacks count.
            None
        };
        Ok(found)
    }
}

/// The index of the `}` closing the `${` at `start`.
fn matching_brace(s: &str, start: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            depth += 1;
            i += 2;
            continue;
        }
        if bytes[i] == b'}' {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// Splits `a, 'b, c', d` at commas outside quotes.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                current.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (None, ',') => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// `a.b.0.c` in a document; `service` as `{name: x}` answers `x` for `self:service`.
fn lookup(document: &Value, path: &str, is_self: bool) -> Option<Value> {
    let mut current = document;
    if path.is_empty() {
        return Some(document.clone());
    }
    for part in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    if is_self
        && path == "service"
        && let Some(name) = current.get("name")
    {
        return Some(name.clone());
    }
    if current.is_null() {
        None
    } else {
        Some(current.clone())
    }
}

/// Serverless's logical id for a function's resource: `send-message` is
/// `SendDashmessageLambdaFunction`.
fn function_logical_id(name: &str) -> String {
    let mut out = String::new();
    let mut chars = name.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
    }
    for c in chars {
        match c {
            '-' => out.push_str("Dash"),
            '_' => out.push_str("Underscore"),
            c => out.push(c),
        }
    }
    out.push_str("LambdaFunction");
    out
}

/// Reads a Serverless Framework file.
pub(crate) fn read(raw: Value, base_dir: &Path, overrides: &Overrides) -> Result<Loaded, Problem> {
    let root = raw.as_object().ok_or("the file must be a mapping")?;
    let provider_raw = root.get("provider").cloned().unwrap_or(Value::Null);
    // The stage and region first: `${sls:stage}` and `${aws:region}` need them.
    let mut vars = Variables {
        raw: &raw,
        base_dir,
        overrides,
        stage: "dev".into(),
        region: "us-east-1".into(),
    };
    let stage = match &overrides.stage {
        Some(s) => s.clone(),
        None => match provider_raw.get("stage") {
            Some(v) => super::scalar_text(&vars.value(v, 0)?, "provider.stage")?,
            None => "dev".into(),
        },
    };
    vars.stage = stage.clone();
    let region = match &overrides.region {
        Some(r) => r.clone(),
        None => match provider_raw.get("region") {
            Some(v) => super::scalar_text(&vars.value(v, 0)?, "provider.region")?,
            None => "us-east-1".into(),
        },
    };
    vars.region = region.clone();
    let document = vars.value(&raw, 0)?;
    let root = document.as_object().ok_or("the file must be a mapping")?;

    let mut ignored: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut passed_over = Vec::new();
    for key in root.keys() {
        match key.as_str() {
            "service"
            | "provider"
            | "functions"
            | "resources"
            | "frameworkVersion"
            | "app"
            | "org"
            | "configValidationMode"
            | "variablesResolutionMode"
            | "useDotenv"
            | "unresolvedVariablesNotificationMode"
            | "deprecationNotificationMode"
            | "disabledDeprecations" => {}
            "plugins" | "custom" => passed_over.push(key.clone()),
            other => ignored.push(other.to_owned()),
        }
    }
    if !passed_over.is_empty() {
        // One line for both: plugins run nowhere here, custom is read only through ${self:}.
        ignored.push(format!(
            "{} (plugins do not run; custom is read only through ${{self:custom...}})",
            passed_over.join(" and ")
        ));
    }
    let service = match root.get("service") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) => m
            .get("name")
            .and_then(Value::as_str)
            .ok_or("service.name is missing")?
            .to_owned(),
        _ => return Err("service is missing".into()),
    };
    let empty = Map::new();
    let provider = root
        .get("provider")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    const PROVIDER_KEYS: &[&str] = &[
        "name",
        "stage",
        "region",
        "runtime",
        "environment",
        "timeout",
        "memorySize",
        "websocketsApiRouteSelectionExpression",
        "websocketApiRouteSelectionExpression",
        "websocketsApiName",
        "websocketApiName",
        "websocketsDescription",
    ];
    for key in provider.keys() {
        if !PROVIDER_KEYS.contains(&key.as_str()) {
            ignored.push(format!("provider.{key}"));
        }
    }
    if let Some(name) = provider.get("name").and_then(Value::as_str)
        && name != "aws"
    {
        return Err(format!("provider.name: {name:?}; only aws is supported"));
    }
    let selection = provider
        .get("websocketsApiRouteSelectionExpression")
        .or_else(|| provider.get("websocketApiRouteSelectionExpression"))
        .map(|v| super::scalar_text(v, "provider.websocketsApiRouteSelectionExpression"))
        .transpose()?;

    // CloudFormation resources: tables, and what `Ref` / `Fn::GetAtt` in environments name.
    let stack = format!("{service}-{stage}");
    let mut cx = Context::with_pseudo(&region, ACCOUNT_ID, &stack);
    let resources_section = root.get("resources");
    let conditions = resources_section
        .and_then(|r| r.get("Conditions"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (name, condition) in &conditions {
        let value = cx
            .condition(condition)
            .map_err(|e| format!("resources.Conditions.{name}: {e}"))?;
        cx.conditions.insert(name.clone(), value);
    }
    if let Some(section) = resources_section.and_then(Value::as_object) {
        for key in section.keys() {
            if !matches!(key.as_str(), "Resources" | "Conditions") {
                ignored.push(format!("resources.{key}"));
            }
        }
    }
    let declared = resources_section
        .and_then(|r| r.get("Resources"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut resources = Vec::new();
    for (id, resource) in &declared {
        let kind = resource
            .get("Type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("resources.Resources.{id} has no Type"))?;
        resources.push(Resource {
            id,
            kind,
            properties: resource
                .get("Properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            metadata: None,
        });
    }
    for r in &resources {
        let value =
            resource_value(&cx, r, &stack, &region).map_err(|e| format!("resources.{e}"))?;
        cx.resources.insert(r.id.to_owned(), value);
    }

    // Functions (their resources exist for `Ref` first, as on AWS).
    let functions = root
        .get("functions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut names = BTreeMap::new();
    for (key, function) in &functions {
        let name = match function.get("name") {
            Some(v) => super::scalar_text(v, &format!("functions.{key}.name"))?,
            None => super::function_name(&[&service, &stage, key]),
        };
        cx.resources.insert(
            function_logical_id(key),
            ResourceValue {
                kind: "AWS::Lambda::Function".into(),
                reference: name.clone(),
                attributes: [(
                    "Arn".to_owned(),
                    format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"),
                )]
                .into(),
            },
        );
        names.insert(key.clone(), name);
    }
    let provider_env = match provider.get("environment") {
        Some(v) => cx
            .resolve(v)
            .map_err(|e| format!("provider.environment: {e}"))?,
        None => Value::Null,
    };
    let mut specs: BTreeMap<String, LambdaSpec> = BTreeMap::new();
    for (key, function) in &functions {
        let origin = format!("functions.{key}");
        let parts = function_parts(
            &cx,
            key,
            function,
            &names[key],
            provider,
            &provider_env,
            base_dir,
        )?;
        if let Some(f) = function.as_object() {
            for k in f.keys() {
                if !matches!(
                    k.as_str(),
                    "handler"
                        | "runtime"
                        | "environment"
                        | "timeout"
                        | "memorySize"
                        | "reservedConcurrency"
                        | "events"
                        | "name"
                        | "description"
                ) {
                    ignored.push(format!("{origin}.{k}"));
                }
            }
        }
        specs.insert(key.clone(), parts.into_spec(&mut warnings)?);
    }

    // Routes from websocket events.
    let mut routes: BTreeMap<String, RouteSpec> = BTreeMap::new();
    let mut authorizer = None;
    for (key, function) in &functions {
        let events = match function.get("events") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(events)) => events,
            Some(_) => return Err(format!("functions.{key}.events must be a list")),
        };
        for (i, event) in events.iter().enumerate() {
            let origin = format!("functions.{key}.events[{i}]");
            let Some(map) = event.as_object() else {
                return Err(format!("{origin} must be a mapping"));
            };
            let Some(websocket) = map.get("websocket") else {
                for kind in map.keys() {
                    ignored.push(format!("{origin}.{kind}"));
                }
                continue;
            };
            let (route, details) = match websocket {
                Value::String(route) => (route.clone(), Map::new()),
                Value::Object(details) => {
                    let route = details
                        .get("route")
                        .or_else(|| details.get("routeKey"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("{origin}.websocket: route is missing"))?;
                    (route.to_owned(), details.clone())
                }
                other => return Err(format!("{origin}.websocket: {other} is not a route")),
            };
            let two_way = match details.get("routeResponseSelectionExpression") {
                None => false,
                Some(Value::String(s)) if s == "$default" => true,
                Some(other) => {
                    return Err(format!(
                        "{origin}.websocket.routeResponseSelectionExpression: {other}; only \
                         $default is allowed"
                    ));
                }
            };
            for k in details.keys() {
                if !matches!(
                    k.as_str(),
                    "route" | "routeKey" | "routeResponseSelectionExpression" | "authorizer"
                ) {
                    ignored.push(format!("{origin}.websocket.{k}"));
                }
            }
            if let Some(auth) = details.get("authorizer") {
                if route != "$connect" {
                    return Err(format!(
                        "{origin}.websocket.authorizer: authorizers run on $connect only"
                    ));
                }
                authorizer = Some(authorizer_spec(auth, &specs, &origin)?);
            }
            if routes.contains_key(&route) {
                return Err(format!("{origin}: route {route:?} is defined twice"));
            }
            routes.insert(
                route,
                RouteSpec {
                    integration: IntegrationSpec::Lambda(specs[key].clone()),
                    route_response: two_way.then(|| "$default".to_owned()),
                },
            );
        }
    }
    if routes.is_empty() {
        return Err("no WebSocket API: no function has a websocket event".into());
    }

    // Tables and the other resources.
    let mut tables = Vec::new();
    for r in &resources {
        match r.kind {
            TABLE | SIMPLE_TABLE => {
                let properties = cx
                    .resolve(&Value::Object(r.properties.clone()))
                    .map_err(|e| format!("resources.Resources.{}: {e}", r.id))?;
                let name = cx.resources[r.id].reference.clone();
                tables.push((r.id.to_owned(), table_properties(r.kind, properties, &name)));
            }
            other => ignored.push(format!("{} ({other})", r.id)),
        }
    }
    Ok(Loaded {
        format: super::Format::Serverless,
        name: service,
        api: ApiDefinition {
            route_selection_expression: selection,
            routes,
            authorizer,
            region,
            account_id: ACCOUNT_ID.into(),
            base_dir: base_dir.to_owned(),
        },
        stage,
        api_id: super::intrinsics::stable_suffix(&stack, "websockets", 10).to_ascii_lowercase(),
        tables,
        ignored,
        warnings,
    })
}

fn function_parts(
    cx: &Context,
    key: &str,
    function: &Value,
    name: &str,
    provider: &Map<String, Value>,
    provider_env: &Value,
    base_dir: &Path,
) -> Result<FunctionParts, Problem> {
    let origin = format!("functions.{key}");
    let field = |k: &str| function.get(k).or_else(|| provider.get(k));
    let handler = function
        .get("handler")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{origin}.handler is missing"))?
        .to_owned();
    if function.get("image").is_some() {
        return Err(format!(
            "{origin}.image: container images are not supported; use a handler"
        ));
    }
    let runtime = match field("runtime") {
        Some(v) => super::scalar_text(v, &format!("{origin}.runtime"))?,
        None => "nodejs20.x".into(),
    };
    let mut env = BTreeMap::new();
    for (source, value) in [
        ("provider.environment", provider_env.clone()),
        (
            "environment",
            match function.get("environment") {
                Some(v) => cx
                    .resolve(v)
                    .map_err(|e| format!("{origin}.environment: {e}"))?,
                None => Value::Null,
            },
        ),
    ] {
        if let Value::Object(vars) = value {
            for (k, v) in vars {
                let v = super::scalar_text(&v, &format!("{source}.{k}"))?;
                env.insert(k, v);
            }
        }
    }
    let timeout_secs = match field("timeout") {
        Some(v) => super::number(v, &format!("{origin}.timeout"))?,
        None => 6.0,
    };
    let memory_size_mb = match field("memorySize") {
        Some(v) => super::number(v, &format!("{origin}.memorySize"))? as u32,
        None => 1024,
    };
    let reserved_concurrency = match function.get("reservedConcurrency") {
        Some(v) => Some(super::number(v, &format!("{origin}.reservedConcurrency"))? as usize),
        None => None,
    };
    Ok(FunctionParts {
        origin,
        name: name.to_owned(),
        runtime,
        handler,
        code_dir: base_dir.to_owned(),
        env,
        timeout_secs,
        memory_size_mb,
        reserved_concurrency,
    })
}

fn authorizer_spec(
    auth: &Value,
    specs: &BTreeMap<String, LambdaSpec>,
    origin: &str,
) -> Result<AuthorizerSpec, Problem> {
    let (name, sources) = match auth {
        Value::String(name) => (name.clone(), None),
        Value::Object(map) => {
            if map.contains_key("arn") && !map.contains_key("name") {
                return Err(format!(
                    "{origin}.websocket.authorizer.arn: an authorizer outside this file cannot \
                     run here; name a function of the file"
                ));
            }
            let name = map
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{origin}.websocket.authorizer.name is missing"))?;
            (name.to_owned(), map.get("identitySource").cloned())
        }
        other => {
            return Err(format!(
                "{origin}.websocket.authorizer: {other} is not a function name"
            ));
        }
    };
    let spec = specs.get(&name).ok_or_else(|| {
        format!("{origin}.websocket.authorizer: {name:?} is not a function of this file")
    })?;
    let identity_sources = match sources {
        None => vec!["route.request.header.Auth".to_owned()],
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                super::scalar_text(i, &format!("{origin}.websocket.authorizer.identitySource"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "{origin}.websocket.authorizer.identitySource: {other} is not a list"
            ));
        }
    };
    Ok(AuthorizerSpec {
        identity_sources,
        kind: AuthorizerKind::Lambda(spec.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(doc: Value, overrides: &Overrides, text: &str) -> Result<Value, Problem> {
        let vars = Variables {
            raw: &doc,
            base_dir: Path::new("."),
            overrides,
            stage: overrides.stage.clone().unwrap_or_else(|| "dev".into()),
            region: "us-east-1".into(),
        };
        vars.value(&Value::String(text.into()), 0)
    }

    #[test]
    fn variables() {
        let doc = json!({
            "service": {"name": "chat"},
            "provider": {"stage": "${opt:stage, 'dev'}"},
            "custom": {"table": "${self:service}-${sls:stage}-conns", "n": 5},
        });
        let none = Overrides::default();
        let prod = Overrides {
            stage: Some("prod".into()),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(doc.clone(), &none, "${self:custom.table}").unwrap(),
            json!("chat-dev-conns")
        );
        assert_eq!(
            resolve(doc.clone(), &prod, "${self:custom.table}").unwrap(),
            json!("chat-prod-conns")
        );
        assert_eq!(
            resolve(doc.clone(), &none, "${ opt:stage, 'dev' }").unwrap(),
            json!("dev")
        );
        assert_eq!(
            resolve(doc.clone(), &prod, "${self:provider.stage}").unwrap(),
            json!("prod")
        );
        assert_eq!(
            resolve(doc.clone(), &none, "${self:custom.n}").unwrap(),
            json!(5)
        );
        assert_eq!(
            resolve(doc.clone(), &none, "x-${self:custom.n}").unwrap(),
            json!("x-5")
        );
        assert_eq!(
            resolve(
                doc.clone(),
                &none,
                "${env:SWITCHBOARD_SURELY_UNSET_VAR, 'fallback'}"
            )
            .unwrap(),
            json!("fallback")
        );
        assert_eq!(
            resolve(doc.clone(), &none, "${opt:stage, ${self:custom.n}}").unwrap(),
            json!(5)
        );
        // CloudFormation's own ${...} stays for Fn::Sub.
        assert_eq!(
            resolve(doc.clone(), &none, "arn:${AWS::Region}:${Table}").unwrap(),
            json!("arn:${AWS::Region}:${Table}")
        );
        let e = resolve(doc.clone(), &none, "${self:custom.missing}").unwrap_err();
        assert!(e.contains("has no value"), "{e}");
        let e = resolve(doc, &none, "${ssm:/x/y}").unwrap_err();
        assert!(e.contains("give a default"), "{e}");
        let cyclic = json!({"custom": {"a": "${self:custom.a}"}});
        let e = resolve(cyclic, &none, "${self:custom.a}").unwrap_err();
        assert!(e.contains("nest more than"), "{e}");
    }

    #[test]
    fn logical_ids() {
        assert_eq!(
            function_logical_id("sendMessage"),
            "SendMessageLambdaFunction"
        );
        assert_eq!(
            function_logical_id("send-message_x"),
            "SendDashmessageUnderscorexLambdaFunction"
        );
    }
}
