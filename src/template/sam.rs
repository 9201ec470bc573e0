//! AWS SAM and CloudFormation templates (`cdk synth` output included).
//!
//! The WebSocket API is the `AWS::ApiGatewayV2::Api` with `ProtocolType: WEBSOCKET`, and its
//! `Route`, `Integration`, `RouteResponse`, `Authorizer` and `Stage` resources; functions are
//! `AWS::Serverless::Function` (with `Globals.Function`) and `AWS::Lambda::Function`; tables are
//! `AWS::DynamoDB::Table` and `AWS::Serverless::SimpleTable`. Everything else is listed as
//! ignored. Pure apart from checking that code directories and handler files exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value, json};

use super::intrinsics::{Context, ResourceValue, stable_suffix};
use super::{FunctionParts, Loaded, Overrides, Problem};
use crate::integration::definition::{
    ApiDefinition, AuthorizerKind, AuthorizerSpec, HttpSpec, IntegrationSpec, LambdaSpec, RouteSpec,
};

const ACCOUNT_ID: &str = "123456789012";
const DEFAULT_REGION: &str = "us-east-1";

const API: &str = "AWS::ApiGatewayV2::Api";
const ROUTE: &str = "AWS::ApiGatewayV2::Route";
const INTEGRATION: &str = "AWS::ApiGatewayV2::Integration";
const ROUTE_RESPONSE: &str = "AWS::ApiGatewayV2::RouteResponse";
const AUTHORIZER: &str = "AWS::ApiGatewayV2::Authorizer";
const STAGE: &str = "AWS::ApiGatewayV2::Stage";
const DEPLOYMENT: &str = "AWS::ApiGatewayV2::Deployment";
const SAM_FUNCTION: &str = "AWS::Serverless::Function";
const LAMBDA_FUNCTION: &str = "AWS::Lambda::Function";
pub(crate) const TABLE: &str = "AWS::DynamoDB::Table";
pub(crate) const SIMPLE_TABLE: &str = "AWS::Serverless::SimpleTable";

/// Keys read from each resource type's `Properties`; the others are listed as ignored.
fn read_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        API => &[
            "Name",
            "ProtocolType",
            "RouteSelectionExpression",
            "Description",
        ],
        ROUTE => &[
            "ApiId",
            "RouteKey",
            "Target",
            "AuthorizationType",
            "AuthorizerId",
            "RouteResponseSelectionExpression",
            "OperationName",
        ],
        INTEGRATION => &[
            "ApiId",
            "IntegrationType",
            "IntegrationUri",
            "IntegrationMethod",
            "TimeoutInMillis",
            "Description",
        ],
        ROUTE_RESPONSE => &["ApiId", "RouteId", "RouteResponseKey"],
        AUTHORIZER => &[
            "ApiId",
            "AuthorizerType",
            "AuthorizerUri",
            "IdentitySource",
            "Name",
        ],
        STAGE => &[
            "ApiId",
            "StageName",
            "DeploymentId",
            "AutoDeploy",
            "Description",
        ],
        DEPLOYMENT => &["ApiId", "StageName", "Description"],
        SAM_FUNCTION => &[
            "CodeUri",
            "InlineCode",
            "Handler",
            "Runtime",
            "Environment",
            "Timeout",
            "MemorySize",
            "ReservedConcurrentExecutions",
            "FunctionName",
            "Description",
        ],
        LAMBDA_FUNCTION => &[
            "Code",
            "Handler",
            "Runtime",
            "Environment",
            "Timeout",
            "MemorySize",
            "ReservedConcurrentExecutions",
            "FunctionName",
            "Description",
        ],
        // Tables are handed over whole.
        TABLE | SIMPLE_TABLE => &[],
        _ => &[],
    }
}

/// One resource of the template (or of a Serverless file's `resources`).
pub(crate) struct Resource<'a> {
    pub(crate) id: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) properties: Map<String, Value>,
    pub(crate) metadata: Option<&'a Value>,
}

/// Reads a template.
pub(crate) fn read(
    document: &Value,
    path: &Path,
    base_dir: &Path,
    overrides: &Overrides,
) -> Result<Loaded, Problem> {
    let root = document
        .as_object()
        .ok_or("the template must be a mapping")?;
    let mut ignored: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for key in root.keys() {
        match key.as_str() {
            "AWSTemplateFormatVersion"
            | "Transform"
            | "Description"
            | "Parameters"
            | "Conditions"
            | "Mappings"
            | "Globals"
            | "Resources" => {}
            other => ignored.push(other.to_owned()),
        }
    }
    let region = overrides
        .region
        .clone()
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let stack = stack_name(path, base_dir);
    let mut cx = Context::with_pseudo(&region, ACCOUNT_ID, &stack);

    // Parameters: an override, else the default.
    let parameters = root
        .get("Parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for name in overrides.parameters.keys() {
        if !parameters.contains_key(name) {
            return Err(format!(
                "--parameter {name}: the template has no parameter {name:?} (it has: {})",
                parameters.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for (name, declaration) in &parameters {
        let value = match overrides.parameters.get(name) {
            Some(v) => Value::String(v.clone()),
            None => match declaration.get("Default") {
                Some(Value::Number(n)) => Value::String(n.to_string()),
                Some(v) => v.clone(),
                None => {
                    return Err(format!(
                        "Parameters.{name} has no Default: pass --parameter {name}=VALUE"
                    ));
                }
            },
        };
        let is_list = declaration
            .get("Type")
            .and_then(Value::as_str)
            .is_some_and(|t| t == "CommaDelimitedList" || t.starts_with("List<"));
        let value = match value {
            Value::String(s) if is_list => {
                Value::Array(s.split(',').map(|p| json!(p.trim())).collect())
            }
            other => other,
        };
        cx.parameters.insert(name.clone(), value);
    }
    cx.mappings = root
        .get("Mappings")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();

    // Conditions may name each other: evaluate until every one is known.
    let conditions = root
        .get("Conditions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut pending: Vec<(&String, &Value)> = conditions.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut last_error = String::new();
        pending.retain(|(name, condition)| match cx.condition(condition) {
            Ok(value) => {
                cx.conditions.insert((*name).clone(), value);
                false
            }
            Err(e) => {
                last_error = format!("Conditions.{name}: {e}");
                true
            }
        });
        if pending.len() == before {
            return Err(last_error);
        }
    }

    // Resources (those whose Condition is false do not exist).
    let globals = root
        .get("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let resources_map = root
        .get("Resources")
        .and_then(Value::as_object)
        .ok_or("the template has no Resources")?;
    let mut resources: Vec<Resource<'_>> = Vec::new();
    for (id, resource) in resources_map {
        let kind = resource
            .get("Type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("Resources.{id} has no Type"))?;
        if let Some(condition) = resource.get("Condition").and_then(Value::as_str) {
            let holds = cx.conditions.get(condition).copied().ok_or_else(|| {
                format!("Resources.{id}: condition {condition:?} is not in Conditions")
            })?;
            if !holds {
                continue;
            }
        }
        let mut properties = resource
            .get("Properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if kind == SAM_FUNCTION {
            properties = with_globals(&globals, properties);
        }
        resources.push(Resource {
            id,
            kind,
            properties,
            metadata: resource.get("Metadata"),
        });
    }

    // What each resource's Ref and attributes stand for. Names may come from parameters.
    let mut api_ids: BTreeMap<String, String> = BTreeMap::new();
    for r in &resources {
        let value = resource_value(&cx, r, &stack, &region)?;
        if r.kind == API {
            api_ids.insert(r.id.to_owned(), value.reference.clone());
        }
        cx.resources.insert(r.id.to_owned(), value);
    }

    // The WebSocket API.
    let mut websocket_apis = Vec::new();
    for r in resources.iter().filter(|r| r.kind == API) {
        let protocol = match r.properties.get("ProtocolType") {
            Some(v) => cx
                .resolve_string(v, &format!("Resources.{}.ProtocolType", r.id))?
                .to_ascii_uppercase(),
            None => String::new(),
        };
        if protocol == "WEBSOCKET" {
            websocket_apis.push(r);
        } else {
            ignored.push(format!("{} ({API}, ProtocolType {protocol})", r.id));
        }
    }
    let api = match websocket_apis.as_slice() {
        [] => {
            return Err(format!(
                "no WebSocket API: the template has no {API} with ProtocolType: WEBSOCKET"
            ));
        }
        [one] => *one,
        several => {
            return Err(format!(
                "{} WebSocket APIs ({}): switchboard serves one per file",
                several.len(),
                several.iter().map(|r| r.id).collect::<Vec<_>>().join(", ")
            ));
        }
    };
    let api_ref = api_ids[api.id].clone();
    let belongs = |r: &Resource<'_>| -> Result<bool, Problem> {
        match r.properties.get("ApiId") {
            Some(v) => Ok(cx.resolve_string(v, &format!("Resources.{}.ApiId", r.id))? == api_ref),
            None => Err(format!("Resources.{}: ApiId is missing", r.id)),
        }
    };
    let selection = match api.properties.get("RouteSelectionExpression") {
        Some(v) => {
            Some(cx.resolve_string(v, &format!("Resources.{}.RouteSelectionExpression", api.id))?)
        }
        None => None,
    };

    // Functions, by the ARN integrations name them with.
    let mut functions: BTreeMap<String, (String, FunctionParts)> = BTreeMap::new();
    for r in resources
        .iter()
        .filter(|r| r.kind == SAM_FUNCTION || r.kind == LAMBDA_FUNCTION)
    {
        let parts = function_parts(&cx, r, base_dir)?;
        let arn = cx.resources[r.id].attributes["Arn"].clone();
        functions.insert(arn, (r.id.to_owned(), parts));
    }
    let mut built: BTreeMap<String, LambdaSpec> = BTreeMap::new();
    let mut lambda = |arn: &str, origin: &str| -> Result<LambdaSpec, Problem> {
        if let Some(spec) = built.get(arn) {
            return Ok(spec.clone());
        }
        let (_, parts) = functions
            .get(arn)
            .ok_or_else(|| format!("{origin}: {arn} is not a function of this template"))?;
        let spec = parts.clone().into_spec(&mut warnings)?;
        built.insert(arn.to_owned(), spec.clone());
        Ok(spec)
    };

    // Integrations.
    let mut integrations: BTreeMap<&str, IntegrationSpec> = BTreeMap::new();
    for r in resources.iter().filter(|r| r.kind == INTEGRATION) {
        if !belongs(r)? {
            continue;
        }
        let origin = format!("Resources.{}", r.id);
        let kind = match r.properties.get("IntegrationType") {
            Some(v) => cx.resolve_string(v, &format!("{origin}.IntegrationType"))?,
            None => return Err(format!("{origin}: IntegrationType is missing")),
        };
        let uri = match r.properties.get("IntegrationUri") {
            Some(v) => cx.resolve_string(v, &format!("{origin}.IntegrationUri"))?,
            None => return Err(format!("{origin}: IntegrationUri is missing")),
        };
        let spec = match kind.as_str() {
            "AWS_PROXY" => {
                let arn = function_arn(&uri).ok_or_else(|| {
                    format!("{origin}.IntegrationUri: {uri:?} names no Lambda function")
                })?;
                IntegrationSpec::Lambda(lambda(&arn, &format!("{origin}.IntegrationUri"))?)
            }
            "HTTP_PROXY" => {
                let timeout_ms = match r.properties.get("TimeoutInMillis") {
                    Some(v) => {
                        super::number(&cx.resolve(v)?, &format!("{origin}.TimeoutInMillis"))? as u64
                    }
                    None => 29_000,
                };
                IntegrationSpec::Http(HttpSpec {
                    url: uri,
                    timeout_ms,
                })
            }
            other => {
                return Err(format!(
                    "{origin}.IntegrationType: {other} is not supported (AWS_PROXY to a \
                     function of the template, or HTTP_PROXY)"
                ));
            }
        };
        integrations.insert(r.id, spec);
    }

    // Route responses make routes two-way.
    let mut two_way: BTreeSet<String> = BTreeSet::new();
    for r in resources.iter().filter(|r| r.kind == ROUTE_RESPONSE) {
        let origin = format!("Resources.{}", r.id);
        let key = match r.properties.get("RouteResponseKey") {
            Some(v) => cx.resolve_string(v, &format!("{origin}.RouteResponseKey"))?,
            None => String::new(),
        };
        if key != "$default" {
            return Err(format!(
                "{origin}.RouteResponseKey: {key:?}; only $default is allowed, as on API Gateway"
            ));
        }
        let route = match r.properties.get("RouteId") {
            Some(v) => cx.resolve_string(v, &format!("{origin}.RouteId"))?,
            None => return Err(format!("{origin}: RouteId is missing")),
        };
        two_way.insert(route);
    }

    // Authorizers.
    let mut authorizers: BTreeMap<&str, AuthorizerSpec> = BTreeMap::new();
    for r in resources.iter().filter(|r| r.kind == AUTHORIZER) {
        if !belongs(r)? {
            continue;
        }
        let origin = format!("Resources.{}", r.id);
        let kind = match r.properties.get("AuthorizerType") {
            Some(v) => cx.resolve_string(v, &format!("{origin}.AuthorizerType"))?,
            None => "REQUEST".into(),
        };
        if kind != "REQUEST" {
            return Err(format!(
                "{origin}.AuthorizerType: {kind}; WebSocket APIs have REQUEST authorizers only"
            ));
        }
        let uri = match r.properties.get("AuthorizerUri") {
            Some(v) => cx.resolve_string(v, &format!("{origin}.AuthorizerUri"))?,
            None => return Err(format!("{origin}: AuthorizerUri is missing")),
        };
        let arn = function_arn(&uri)
            .ok_or_else(|| format!("{origin}.AuthorizerUri: {uri:?} names no Lambda function"))?;
        let identity_sources = match r.properties.get("IdentitySource") {
            Some(v) => match cx.resolve(v)? {
                Value::Array(items) => items
                    .iter()
                    .map(|i| super::scalar_text(i, &format!("{origin}.IdentitySource")))
                    .collect::<Result<Vec<_>, _>>()?,
                Value::String(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
                other => {
                    return Err(format!(
                        "{origin}.IdentitySource must be a list, not {other}"
                    ));
                }
            },
            None => Vec::new(),
        };
        let spec = lambda(&arn, &format!("{origin}.AuthorizerUri"))?;
        authorizers.insert(
            r.id,
            AuthorizerSpec {
                identity_sources,
                kind: AuthorizerKind::Lambda(spec),
            },
        );
    }

    // Routes.
    let mut routes: BTreeMap<String, RouteSpec> = BTreeMap::new();
    let mut authorizer = None;
    for r in resources.iter().filter(|r| r.kind == ROUTE) {
        if !belongs(r)? {
            continue;
        }
        let origin = format!("Resources.{}", r.id);
        let key = match r.properties.get("RouteKey") {
            Some(v) => cx.resolve_string(v, &format!("{origin}.RouteKey"))?,
            None => return Err(format!("{origin}: RouteKey is missing")),
        };
        let Some(target) = r.properties.get("Target") else {
            warnings.push(format!(
                "{origin} (route {key}) has no Target: it is left out"
            ));
            continue;
        };
        let target = cx.resolve_string(target, &format!("{origin}.Target"))?;
        let integration_id = target.strip_prefix("integrations/").ok_or_else(|| {
            format!("{origin}.Target: {target:?} is not integrations/<IntegrationId>")
        })?;
        let integration = integrations.get(integration_id).ok_or_else(|| {
            format!(
                "{origin}.Target: integration {integration_id:?} is not an {INTEGRATION} of \
                 this API"
            )
        })?;
        let response_expression = match r.properties.get("RouteResponseSelectionExpression") {
            Some(v) => {
                Some(cx.resolve_string(v, &format!("{origin}.RouteResponseSelectionExpression"))?)
            }
            None => None,
        };
        let is_two_way =
            two_way.contains(r.id) || response_expression.as_deref() == Some("$default");
        let authorization = match r.properties.get("AuthorizationType") {
            Some(v) => cx.resolve_string(v, &format!("{origin}.AuthorizationType"))?,
            None => "NONE".into(),
        };
        match authorization.as_str() {
            "NONE" => {}
            "CUSTOM" => {
                if key != "$connect" {
                    return Err(format!(
                        "{origin}.AuthorizationType: authorizers run on $connect only"
                    ));
                }
                let id = match r.properties.get("AuthorizerId") {
                    Some(v) => cx.resolve_string(v, &format!("{origin}.AuthorizerId"))?,
                    None => return Err(format!("{origin}: CUSTOM needs an AuthorizerId")),
                };
                let spec = authorizers.get(id.as_str()).ok_or_else(|| {
                    format!("{origin}.AuthorizerId: {id:?} is not an {AUTHORIZER} of this API")
                })?;
                authorizer = Some(spec.clone());
            }
            "AWS_IAM" => warnings.push(format!(
                "{origin} (route {key}): AuthorizationType AWS_IAM is not enforced"
            )),
            other => {
                return Err(format!(
                    "{origin}.AuthorizationType: {other:?} (NONE, CUSTOM or AWS_IAM)"
                ));
            }
        }
        if routes.contains_key(&key) {
            return Err(format!("{origin}: route {key:?} is defined twice"));
        }
        routes.insert(
            key,
            RouteSpec {
                integration: integration.clone(),
                route_response: is_two_way.then(|| "$default".to_owned()),
            },
        );
    }
    if routes.is_empty() {
        return Err(format!(
            "the WebSocket API {} has no {ROUTE} with a Target",
            api.id
        ));
    }

    // The stage.
    let mut stage = None;
    for r in resources.iter().filter(|r| r.kind == STAGE) {
        if belongs(r)? && stage.is_none() {
            stage = Some(cx.resources[r.id].reference.clone());
        }
    }
    let stage = overrides
        .stage
        .clone()
        .or(stage)
        .unwrap_or_else(|| "dev".into());

    // Tables, and the resources left.
    let mut tables = Vec::new();
    for r in &resources {
        match r.kind {
            TABLE | SIMPLE_TABLE => {
                let properties = cx
                    .resolve(&Value::Object(r.properties.clone()))
                    .map_err(|e| format!("Resources.{}: {e}", r.id))?;
                let name = cx.resources[r.id].reference.clone();
                tables.push((r.id.to_owned(), table_properties(r.kind, properties, &name)));
            }
            API | ROUTE | INTEGRATION | ROUTE_RESPONSE | AUTHORIZER | STAGE | DEPLOYMENT
            | SAM_FUNCTION | LAMBDA_FUNCTION => {
                for key in r.properties.keys() {
                    if !read_keys(r.kind).contains(&key.as_str()) {
                        ignored.push(format!("{}.{key}", r.id));
                    }
                }
            }
            other => ignored.push(format!("{} ({other})", r.id)),
        }
    }
    Ok(Loaded {
        format: super::Format::CloudFormation,
        name: stack,
        api: ApiDefinition {
            route_selection_expression: selection,
            routes,
            authorizer,
            region,
            account_id: ACCOUNT_ID.into(),
            base_dir: base_dir.to_owned(),
        },
        stage,
        api_id: api_ref,
        tables,
        ignored,
        warnings,
    })
}

/// The stack name: `X` for cdk's `X.template.json`, else the template's directory name.
fn stack_name(path: &Path, base_dir: &Path) -> String {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let raw = match file.strip_suffix(".template.json") {
        Some(stem) => stem.to_owned(),
        None => base_dir
            .file_name()
            .and_then(|d| d.to_str())
            .unwrap_or("stack")
            .to_owned(),
    };
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "stack".into()
    } else {
        name
    }
}

/// `Globals.Function` under a function's own properties (`Environment.Variables` merged).
fn with_globals(globals: &Map<String, Value>, mut own: Map<String, Value>) -> Map<String, Value> {
    for (key, value) in globals {
        match own.get_mut(key) {
            None => {
                own.insert(key.clone(), value.clone());
            }
            Some(Value::Object(mine)) if key == "Environment" => {
                let global_vars = value.get("Variables").and_then(Value::as_object);
                if let Some(global_vars) = global_vars {
                    let vars = mine
                        .entry("Variables")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(vars) = vars {
                        for (k, v) in global_vars {
                            vars.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            Some(_) => {}
        }
    }
    own
}

/// The function ARN inside an integration or authorizer URI
/// (`arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/ARN/invocations`), or a
/// bare function ARN.
fn function_arn(uri: &str) -> Option<String> {
    if let Some(start) = uri.find("/functions/") {
        let rest = &uri[start + "/functions/".len()..];
        let arn = rest.strip_suffix("/invocations").unwrap_or(rest);
        return Some(arn.to_owned());
    }
    uri.starts_with("arn:aws:lambda:").then(|| uri.to_owned())
}

/// What a resource's `Ref` and attributes stand for.
pub(crate) fn resource_value(
    cx: &Context,
    r: &Resource<'_>,
    stack: &str,
    region: &str,
) -> Result<ResourceValue, Problem> {
    let generated = |limit: usize| {
        let base = format!("{stack}-{}", r.id);
        let base: String = base.chars().take(limit).collect();
        format!("{base}-{}", stable_suffix(stack, r.id, 12))
    };
    let named = |key: &str| -> Result<Option<String>, Problem> {
        r.properties
            .get(key)
            .map(|v| cx.resolve_string(v, &format!("Resources.{}.{key}", r.id)))
            .transpose()
    };
    let mut attributes = BTreeMap::new();
    let reference = match r.kind {
        TABLE | SIMPLE_TABLE => {
            let name = named("TableName")?.unwrap_or_else(|| generated(200));
            let arn = format!("arn:aws:dynamodb:{region}:{ACCOUNT_ID}:table/{name}");
            attributes.insert("Arn".into(), arn.clone());
            if r.kind == TABLE {
                attributes.insert(
                    "StreamArn".into(),
                    format!("{arn}/stream/1970-01-01T00:00:00.000"),
                );
            }
            name
        }
        SAM_FUNCTION | LAMBDA_FUNCTION => {
            let name = match named("FunctionName")? {
                Some(name) => name,
                None => super::function_name(&[&generated(51)]),
            };
            attributes.insert(
                "Arn".into(),
                format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"),
            );
            name
        }
        API => {
            let id = stable_suffix(stack, r.id, 10).to_ascii_lowercase();
            attributes.insert(
                "ApiEndpoint".into(),
                format!("wss://{id}.execute-api.{region}.amazonaws.com"),
            );
            attributes.insert("ApiId".into(), id.clone());
            id
        }
        STAGE => named("StageName")?.unwrap_or_else(|| r.id.to_owned()),
        _ => {
            let service = r
                .kind
                .split("::")
                .nth(1)
                .unwrap_or("resource")
                .to_ascii_lowercase();
            attributes.insert(
                "Arn".into(),
                format!("arn:aws:{service}:{region}:{ACCOUNT_ID}:{}", r.id),
            );
            r.id.to_owned()
        }
    };
    Ok(ResourceValue {
        kind: r.kind.to_owned(),
        reference,
        attributes,
    })
}

fn function_parts(
    cx: &Context,
    r: &Resource<'_>,
    base_dir: &Path,
) -> Result<FunctionParts, Problem> {
    let origin = format!("Resources.{}", r.id);
    let get = |key: &str| -> Result<Option<Value>, Problem> {
        r.properties
            .get(key)
            .map(|v| cx.resolve(v).map_err(|e| format!("{origin}.{key}: {e}")))
            .transpose()
    };
    let text = |key: &str| -> Result<Option<String>, Problem> {
        get(key)?
            .map(|v| super::scalar_text(&v, &format!("{origin}.{key}")))
            .transpose()
    };
    let name = cx.resources[r.id].reference.clone();
    let code_dir = if r.kind == SAM_FUNCTION {
        if r.properties.contains_key("InlineCode") {
            return Err(format!(
                "{origin}.InlineCode: inline code is not supported; put it in a CodeUri directory"
            ));
        }
        match get("CodeUri")? {
            None => base_dir.to_owned(),
            Some(Value::String(dir)) => base_dir.join(dir),
            Some(other) => {
                return Err(format!(
                    "{origin}.CodeUri: {other} is not a local directory (S3 locations are not \
                     supported)"
                ));
            }
        }
    } else {
        // cdk synth: the code is an asset directory next to the template.
        let asset = r
            .metadata
            .and_then(|m| m.get("aws:asset:path"))
            .and_then(Value::as_str);
        match (asset, get("Code")?) {
            (Some(asset), _) => base_dir.join(asset),
            (None, Some(code)) if code.get("ZipFile").is_some() => {
                return Err(format!(
                    "{origin}.Code.ZipFile: inline code is not supported; use a code directory"
                ));
            }
            (None, _) => {
                return Err(format!(
                    "{origin}.Code: an S3 location without Metadata aws:asset:path; switchboard \
                     needs the code on this machine"
                ));
            }
        }
    };
    let code_dir = std::path::absolute(&code_dir).unwrap_or(code_dir);
    let runtime = text("Runtime")?.ok_or_else(|| format!("{origin}: Runtime is missing"))?;
    let handler = text("Handler")?.ok_or_else(|| format!("{origin}: Handler is missing"))?;
    let mut env = BTreeMap::new();
    if let Some(environment) = get("Environment")?
        && let Some(vars) = environment.get("Variables").and_then(Value::as_object)
    {
        for (k, v) in vars {
            env.insert(
                k.clone(),
                super::scalar_text(v, &format!("{origin}.Environment.Variables.{k}"))?,
            );
        }
    }
    let timeout_secs = match get("Timeout")? {
        Some(v) => super::number(&v, &format!("{origin}.Timeout"))?,
        None => 3.0,
    };
    let memory_size_mb = match get("MemorySize")? {
        Some(v) => super::number(&v, &format!("{origin}.MemorySize"))? as u32,
        None => 128,
    };
    let reserved_concurrency = match get("ReservedConcurrentExecutions")? {
        Some(v) => {
            Some(super::number(&v, &format!("{origin}.ReservedConcurrentExecutions"))? as usize)
        }
        None => None,
    };
    Ok(FunctionParts {
        origin,
        name,
        runtime,
        handler,
        code_dir,
        env,
        timeout_secs,
        memory_size_mb,
        reserved_concurrency,
    })
}

/// A table's properties with its name set; a `SimpleTable`'s in `AWS::DynamoDB::Table`'s
/// shape (`PrimaryKey` becomes `KeySchema` and `AttributeDefinitions`; on-demand billing
/// unless `ProvisionedThroughput` is set).
pub(crate) fn table_properties(kind: &str, properties: Value, name: &str) -> Value {
    let mut map = match properties {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if kind == SIMPLE_TABLE {
        let key = map.remove("PrimaryKey");
        let key_name = key
            .as_ref()
            .and_then(|k| k.get("Name"))
            .and_then(Value::as_str)
            .unwrap_or("id")
            .to_owned();
        let key_type = match key
            .as_ref()
            .and_then(|k| k.get("Type"))
            .and_then(Value::as_str)
            .unwrap_or("String")
        {
            "Number" | "N" => "N",
            "Binary" | "B" => "B",
            _ => "S",
        };
        map.insert(
            "KeySchema".into(),
            json!([{"AttributeName": key_name, "KeyType": "HASH"}]),
        );
        map.insert(
            "AttributeDefinitions".into(),
            json!([{"AttributeName": key_name, "AttributeType": key_type}]),
        );
        if !map.contains_key("ProvisionedThroughput") {
            map.insert("BillingMode".into(), json!("PAY_PER_REQUEST"));
        }
    }
    map.insert("TableName".into(), Value::String(name.to_owned()));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_arns_come_out_of_uris() {
        assert_eq!(
            function_arn(
                "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:f/invocations"
            )
            .as_deref(),
            Some("arn:aws:lambda:us-east-1:123456789012:function:f")
        );
        assert_eq!(
            function_arn("arn:aws:lambda:us-east-1:1:function:g").as_deref(),
            Some("arn:aws:lambda:us-east-1:1:function:g")
        );
        assert_eq!(function_arn("http://example.com/"), None);
    }

    #[test]
    fn globals_fill_in_and_environments_merge() {
        let globals = json!({"Runtime": "python3.12", "Timeout": 5, "Environment": {"Variables": {"A": "g", "B": "g"}}});
        let own = json!({"Timeout": 9, "Environment": {"Variables": {"B": "own"}}});
        let merged = with_globals(
            globals.as_object().unwrap(),
            own.as_object().unwrap().clone(),
        );
        assert_eq!(
            Value::Object(merged),
            json!({"Runtime": "python3.12", "Timeout": 9, "Environment": {"Variables": {"A": "g", "B": "own"}}})
        );
    }

    #[test]
    fn simple_tables_take_the_table_shape() {
        let t = table_properties(
            SIMPLE_TABLE,
            json!({"PrimaryKey": {"Name": "connectionId", "Type": "String"}}),
            "conns",
        );
        assert_eq!(
            t,
            json!({
                "KeySchema": [{"AttributeName": "connectionId", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "connectionId", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
                "TableName": "conns"
            })
        );
    }

    #[test]
    fn stack_names() {
        assert_eq!(
            stack_name(
                Path::new("cdk.out/ChatStack.template.json"),
                Path::new("/x/cdk.out")
            ),
            "ChatStack"
        );
        assert_eq!(
            stack_name(
                Path::new("/apps/my_chat/template.yaml"),
                Path::new("/apps/my_chat")
            ),
            "my-chat"
        );
    }
}
