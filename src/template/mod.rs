//! Existing API definitions: Serverless Framework files (`serverless.yml`, `.yaml`, `.json`)
//! and AWS SAM / CloudFormation templates (YAML or JSON, `cdk synth` output included), read
//! into switchboard's own [`ApiDefinition`].
//!
//! [`detect`] tells the kind of a configuration file from its content; [`load`] reads a
//! template: the WebSocket API's routes and their functions (runtime, handler, code directory,
//! environment, timeout, memory, reserved concurrency), the authorizer, the stage, the route
//! selection expression, and the declared tables with their CloudFormation `Properties`
//! (intrinsics resolved). Whatever is not emulated is listed in [`Loaded::ignored`].
//! Every key, resource type and intrinsic read is listed in `docs/apps.md`.
//!
//! - `yaml.rs`: YAML and JSON into `serde_json::Value`, short-form tags (`!Ref`) made long.
//! - `intrinsics.rs`: `Ref`, `Fn::Sub`, `Fn::GetAtt`, `Fn::Join`, `Fn::If`, ...
//! - `sam.rs`: SAM / CloudFormation templates.
//! - `serverless.rs`: Serverless Framework files and their `${...}` variables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::integration::definition::{ApiDefinition, IntegrationSpec, LambdaSpec};

pub mod intrinsics;
pub mod sam;
pub mod serverless;
pub mod yaml;

/// The reserved concurrency a function gets when its file sets none.
pub const DEFAULT_RESERVED_CONCURRENCY: usize = 10;

/// How long a function's execution environment may stay idle before it stops.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Why a template could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML or JSON.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The file is readable but says something switchboard cannot run.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where in the file.
        message: String,
    },
}

/// What kind of configuration file a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// switchboard's own TOML.
    Toml,
    /// A Serverless Framework file.
    Serverless,
    /// An AWS SAM or CloudFormation template.
    CloudFormation,
}

/// Values given on the command line, winning over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--stage`: also `${opt:stage}` and `${sls:stage}`.
    pub stage: Option<String>,
    /// `--region`: also `${opt:region}` and `AWS::Region`.
    pub region: Option<String>,
    /// `--parameter K=V`: template parameters (SAM) or `${param:K}` (Serverless).
    pub parameters: BTreeMap<String, String>,
    /// `--no-reload`: functions keep their processes when their code changes.
    pub no_reload: bool,
}

/// A template, read.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What kind of file it was.
    pub format: Format,
    /// The service (Serverless) or stack (CloudFormation) name.
    pub name: String,
    /// Routes, functions, authorizer, selection expression, region.
    pub api: ApiDefinition,
    /// The stage: `--stage`, else the file's.
    pub stage: String,
    /// The API id in events (`requestContext.apiId`): ten lower-case letters and digits, the
    /// same at every start, as `{apiId}.execute-api.{region}.amazonaws.com` needs.
    pub api_id: String,
    /// Tables declared in the file: logical id and CloudFormation `Properties` with every
    /// intrinsic resolved and `TableName` always set (generated when the file sets none).
    pub tables: Vec<(String, Value)>,
    /// Resources and keys that are not emulated, each once (`Role (AWS::IAM::Role)`,
    /// `provider.iam`).
    pub ignored: Vec<String>,
    /// Things that run, but not exactly as on AWS (a retired runtime, an AWS_IAM route).
    pub warnings: Vec<String>,
}

/// A problem inside a readable file; the caller adds the path.
pub(crate) type Problem = String;

/// Tells TOML, Serverless and CloudFormation apart by content (the extension only decides
/// between TOML and the others when the content could be either).
pub fn detect(path: &Path) -> Result<Format, TemplateError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if extension == "toml" {
        return Ok(Format::Toml);
    }
    let text = read(path)?;
    let parsed = parse(path, &text);
    let structured = matches!(extension.as_str(), "yml" | "yaml" | "json" | "template");
    match parsed {
        Ok(document) => match classify(&document) {
            Some(format) => Ok(format),
            None if structured => Err(TemplateError::Invalid {
                path: path.to_owned(),
                message: "neither a Serverless Framework file (it has no `service` and \
                          `provider`) nor a CloudFormation template (it has no `Resources`)"
                    .into(),
            }),
            None => Ok(Format::Toml),
        },
        Err(e) if structured => Err(e),
        Err(_) => Ok(Format::Toml),
    }
}

fn classify(document: &Value) -> Option<Format> {
    let map = document.as_object()?;
    if map.contains_key("Resources") || map.contains_key("AWSTemplateFormatVersion") {
        Some(Format::CloudFormation)
    } else if map.contains_key("service")
        && (map.contains_key("provider") || map.contains_key("functions"))
    {
        Some(Format::Serverless)
    } else {
        None
    }
}

fn read(path: &Path) -> Result<String, TemplateError> {
    std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse(path: &Path, text: &str) -> Result<Value, TemplateError> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let parsed = if is_json {
        yaml::parse_json(text)
    } else {
        yaml::parse_yaml(text)
    };
    parsed.map_err(|e| TemplateError::Syntax {
        path: path.to_owned(),
        line: e.line,
        column: e.column,
        message: e.message,
    })
}

/// Reads a Serverless Framework file or a SAM / CloudFormation template.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Loaded, TemplateError> {
    let text = read(path)?;
    let document = parse(path, &text)?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    let invalid = |message: Problem| TemplateError::Invalid {
        path: path.to_owned(),
        message,
    };
    let loaded = match classify(&document) {
        Some(Format::CloudFormation) => {
            sam::read(&document, path, &base_dir, overrides).map_err(invalid)?
        }
        Some(Format::Serverless) => {
            serverless::read(document, &base_dir, overrides).map_err(invalid)?
        }
        _ => {
            return Err(invalid(
                "neither a Serverless Framework file (it has no `service` and `provider`) \
                 nor a CloudFormation template (it has no `Resources`)"
                    .into(),
            ));
        }
    };
    crate::config::validate_stage(&loaded.stage).map_err(|e| invalid(e.to_string()))?;
    let mut loaded = loaded;
    loaded.for_each_function(|f| f.watch_code = !overrides.no_reload);
    Ok(loaded)
}

impl Loaded {
    /// Calls `f` on every function of the API (routes and authorizer).
    pub fn for_each_function(&mut self, mut f: impl FnMut(&mut LambdaSpec)) {
        for route in self.api.routes.values_mut() {
            if let IntegrationSpec::Lambda(l) = &mut route.integration {
                f(l);
            }
        }
        if let Some(authorizer) = &mut self.api.authorizer
            && let crate::integration::definition::AuthorizerKind::Lambda(l) = &mut authorizer.kind
        {
            f(l);
        }
    }

    /// Puts the template into `config`: its API, stage and tables; logs what is ignored.
    pub fn apply_to(self, config: &mut crate::Config) {
        self.log();
        config.stage = self.stage;
        config.api_id = self.api_id;
        config.api = self.api;
        // Declared tables are served by the embedded DynamoDB endpoint, which they turn on.
        config
            .dynamodb
            .tables
            .extend(self.tables.into_iter().map(|(_, properties)| properties));
    }

    /// A TOML file's API definition, for `switchboard check`.
    pub fn from_definition(name: String, api: ApiDefinition, stage: String) -> Loaded {
        Loaded {
            format: Format::Toml,
            name,
            api,
            stage,
            api_id: String::new(),
            tables: Vec::new(),
            ignored: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Logs what is ignored and the warnings, each list once.
    pub fn log(&self) {
        if !self.ignored.is_empty() {
            tracing::info!(
                ignored = %self.ignored.join(", "),
                "not emulated by switchboard; ignored"
            );
        }
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
    }

    /// What was understood, for `switchboard check`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let kind = match self.format {
            Format::Serverless => "Serverless Framework service",
            Format::CloudFormation => "CloudFormation stack",
            Format::Toml => "configuration",
        };
        let _ = writeln!(out, "{kind} {:?}", self.name);
        let _ = writeln!(out, "stage: {}", self.stage);
        if !self.api_id.is_empty() {
            let _ = writeln!(out, "api id: {}", self.api_id);
        }
        let _ = writeln!(out, "region: {}", self.api.region);
        let _ = writeln!(
            out,
            "route selection expression: {}",
            self.api
                .route_selection_expression
                .as_deref()
                .unwrap_or("$request.body.action")
        );
        let _ = writeln!(out, "routes:");
        for (key, route) in &self.api.routes {
            let two_way = if route.route_response.is_some() {
                " (two-way)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {key} -> {}{two_way}",
                describe_integration(&route.integration)
            );
        }
        if let Some(authorizer) = &self.api.authorizer {
            let target = match &authorizer.kind {
                crate::integration::definition::AuthorizerKind::Lambda(l) => describe_lambda(l),
                crate::integration::definition::AuthorizerKind::Http(h) => h.url.clone(),
                crate::integration::definition::AuthorizerKind::Jwt(_) => "jwt".into(),
            };
            let _ = writeln!(
                out,
                "authorizer on $connect: {target}, identity sources: {}",
                authorizer.identity_sources.join(", ")
            );
        }
        let _ = writeln!(out, "functions:");
        let mut seen = std::collections::BTreeSet::new();
        let lambdas = self
            .api
            .routes
            .values()
            .filter_map(|r| match &r.integration {
                IntegrationSpec::Lambda(l) => Some(l),
                _ => None,
            })
            .chain(self.api.authorizer.iter().filter_map(|a| match &a.kind {
                crate::integration::definition::AuthorizerKind::Lambda(l) => Some(l),
                _ => None,
            }));
        for lambda in lambdas {
            let name = lambda.function_name.clone().unwrap_or_default();
            if !seen.insert(name.clone()) {
                continue;
            }
            let _ = writeln!(
                out,
                "  {name}: runtime {}, handler {}, code {}, timeout {} ms, memory {} MB, \
                 reserved concurrency {}",
                lambda.runtime.as_deref().unwrap_or("custom command"),
                lambda.handler.as_deref().unwrap_or("-"),
                lambda
                    .working_dir
                    .as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| ".".into()),
                lambda.timeout_ms,
                lambda.memory_size_mb,
                lambda.concurrency,
            );
            for (k, v) in &lambda.env {
                let _ = writeln!(out, "    {k}={v}");
            }
        }
        let _ = writeln!(out, "tables:");
        for (id, properties) in &self.tables {
            let _ = writeln!(
                out,
                "  {id}: {}",
                properties
                    .get("TableName")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            );
        }
        let _ = writeln!(out, "ignored (not emulated):");
        for item in &self.ignored {
            let _ = writeln!(out, "  {item}");
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "warnings:");
            for warning in &self.warnings {
                let _ = writeln!(out, "  {warning}");
            }
        }
        out
    }
}

fn describe_integration(integration: &IntegrationSpec) -> String {
    match integration {
        IntegrationSpec::Lambda(l) => describe_lambda(l),
        IntegrationSpec::Http(h) => format!("HTTP {}", h.url),
        IntegrationSpec::Builtin(b) => format!("built-in {:?}", b.name),
    }
}

fn describe_lambda(l: &LambdaSpec) -> String {
    format!(
        "function {} ({})",
        l.function_name.as_deref().unwrap_or("?"),
        l.runtime.as_deref().unwrap_or("custom command")
    )
}

/// The pieces of one function, as both readers find them.
#[derive(Debug, Clone)]
pub(crate) struct FunctionParts {
    /// Where the file says it is (`functions.send`, `Resources.SendFunction`).
    pub(crate) origin: String,
    pub(crate) name: String,
    pub(crate) runtime: String,
    pub(crate) handler: String,
    pub(crate) code_dir: PathBuf,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) timeout_secs: f64,
    pub(crate) memory_size_mb: u32,
    pub(crate) reserved_concurrency: Option<usize>,
}

impl FunctionParts {
    /// The function as the API definition's Lambda integration. Checks the code directory
    /// exists and that the runtime is one switchboard runs.
    pub(crate) fn into_spec(self, warnings: &mut Vec<String>) -> Result<LambdaSpec, Problem> {
        let origin = &self.origin;
        if !self.code_dir.is_dir() {
            return Err(format!(
                "{origin} (function {}): the code directory {} does not exist",
                self.name,
                self.code_dir.display()
            ));
        }
        let runtime = crate::integration::lambda::managed::Runtime::parse(&self.runtime)
            .map_err(|e| format!("{origin} (function {}): {e}", self.name))?;
        runtime
            .handler_file(&self.code_dir, &self.handler)
            .map_err(|e| format!("{origin} (function {}): {e}", self.name))?;
        if let Some(warning) = runtime.retired_warning(&self.runtime) {
            warnings.push(format!("{origin} (function {}): {warning}", self.name));
        }
        let timeout_ms = (self.timeout_secs * 1000.0).round().clamp(50.0, 29_000.0) as u64;
        if self.timeout_secs > 29.0 {
            warnings.push(format!(
                "{origin} (function {}): Timeout {} s is cut to API Gateway's integration \
                 timeout, 29 s",
                self.name, self.timeout_secs
            ));
        }
        let concurrency = self
            .reserved_concurrency
            .unwrap_or(DEFAULT_RESERVED_CONCURRENCY)
            .clamp(1, 64);
        let command = runtime.command_for(&self.code_dir, &self.handler);
        Ok(LambdaSpec {
            command,
            env: self.env,
            function_name: Some(self.name),
            handler: Some(self.handler),
            working_dir: Some(self.code_dir),
            concurrency,
            memory_size_mb: self.memory_size_mb.clamp(128, 10_240),
            timeout_ms,
            queue_size: 64,
            runtime: Some(self.runtime),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            watch_code: true,
        })
    }
}

/// A function name Lambda accepts (1 to 64 of letters, digits, `-`, `_`), made from `parts`
/// joined with `-`; long names are cut the way CloudFormation cuts generated names.
pub(crate) fn function_name(parts: &[&str]) -> String {
    let joined: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if joined.len() <= 64 {
        joined
    } else {
        let suffix = intrinsics::stable_suffix("function", &joined, 12);
        format!("{}-{suffix}", &joined[..51])
    }
}

/// A JSON scalar as text (environment values may be numbers or booleans).
pub(crate) fn scalar_text(value: &Value, what: &str) -> Result<String, Problem> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(format!("{what} must be a string, not {other}")),
    }
}

/// A number of seconds or megabytes given as a number or a numeric string.
pub(crate) fn number(value: &Value, what: &str) -> Result<f64, Problem> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("{what}: {n} is not a number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{what}: {s:?} is not a number")),
        other => Err(format!("{what}: {other} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid() {
        assert_eq!(function_name(&["chat", "dev", "send"]), "chat-dev-send");
        assert_eq!(function_name(&["my.app", "x"]), "my-app-x");
        let long = function_name(&[&"a".repeat(60), "b", "c"]);
        assert_eq!(long.len(), 64);
        assert_eq!(long, function_name(&[&"a".repeat(60), "b", "c"]));
    }

    #[test]
    fn formats_are_told_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let p = write("a.yml", "service: x\nprovider:\n  name: aws\n");
        assert_eq!(detect(&p).unwrap(), Format::Serverless);
        let p = write("t.json", r#"{"Resources": {}}"#);
        assert_eq!(detect(&p).unwrap(), Format::CloudFormation);
        let p = write("t.yaml", "AWSTemplateFormatVersion: '2010-09-09'\n");
        assert_eq!(detect(&p).unwrap(), Format::CloudFormation);
        let p = write(
            "c.conf",
            "stage = \"dev\"\n[limits]\nmax_frame_bytes = 10\n",
        );
        assert_eq!(detect(&p).unwrap(), Format::Toml);
        let p = write("c.toml", "Resources = 1\n");
        assert_eq!(detect(&p).unwrap(), Format::Toml);
        let p = write("n.yml", "hello: world\n");
        let e = detect(&p).unwrap_err().to_string();
        assert!(e.contains("neither a Serverless Framework file"), "{e}");
        let p = write("bad.yml", "service: x\nprovider: [\n");
        let e = detect(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:", p.display())), "{e}");
        assert!(matches!(detect(&p).unwrap_err(), TemplateError::Syntax { line, .. } if line >= 2));
    }
}
