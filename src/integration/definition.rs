//! The API definition file's routes, integrations and authorizer, and turning them into an
//! [`Api`].
//!
//! The types here are what `[routes."<key>"]` and `[authorizer]` deserialize to (every key is
//! documented in `docs/config.md`). [`ApiDefinition::prepare`] checks them, reads key files and
//! builds the backends (no process starts yet); [`Prepared::into_api`] makes the [`Api`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::api::{Api, ApiError};
use crate::authorizer::jwt::{Claims, JwtAlgorithm, JwtVerifier, KeySource};
use crate::authorizer::{Authorizer, Decider, IdentitySource};
use crate::integration::http::HttpBackend;
use crate::integration::lambda::managed::Runtime;
use crate::integration::lambda::{FunctionSpec, Functions, LambdaFunction};
use crate::integration::{Backend, Integration, Proxy};
use crate::selection::SelectionExpression;

/// API Gateway's integration timeout bounds, in milliseconds.
const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 50..=29_000;

fn default_timeout_ms() -> u64 {
    29_000
}

fn default_concurrency() -> usize {
    1
}

fn default_memory_size_mb() -> u32 {
    128
}

fn default_queue_size() -> usize {
    64
}

fn default_leeway_secs() -> u64 {
    60
}

/// `[routes."<key>"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// What handles the route.
    pub integration: IntegrationSpec,
    /// `"$default"` makes the route two-way: the result's `body` goes back to the sender.
    pub route_response: Option<String>,
}

/// A route's `integration = { type = ..., ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum IntegrationSpec {
    /// POST the proxy event to a URL.
    Http(HttpSpec),
    /// Run a Lambda function.
    Lambda(LambdaSpec),
    /// A built-in integration.
    Builtin(BuiltinSpec),
}

/// `type = "http"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// `http://host:port/path`.
    pub url: String,
    /// Milliseconds for the whole exchange (50 to 29000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// `type = "lambda"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaSpec {
    /// The program and its arguments. A program with a `/` is relative to the configuration
    /// file's directory; a bare name is looked up on `PATH`.
    pub command: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The function name; defaults to `{api_id}-{route key without $}`. Routes that name the
    /// same function with the same settings share its processes.
    pub function_name: Option<String>,
    /// `_HANDLER`; defaults to the function name.
    pub handler: Option<String>,
    /// The working directory and `LAMBDA_TASK_ROOT`; defaults to the configuration file's
    /// directory.
    pub working_dir: Option<PathBuf>,
    /// Processes (1 to 64), each handling one invocation at a time.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (128 to 10240).
    #[serde(default = "default_memory_size_mb")]
    pub memory_size_mb: u32,
    /// Milliseconds an invocation may take, queueing included (50 to 29000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Invocations that may wait for a free process; beyond, calls fail at once.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// A Lambda runtime name (`nodejs20.x`, `python3.12`, `provided.al2023`), set by
    /// templates (`crate::template`): managed runtimes run through switchboard's own runtime
    /// loop (`command` is then empty) and start processes on demand, up to `concurrency`.
    #[serde(skip)]
    pub runtime: Option<String>,
    /// Set by templates: processes start on demand, up to `concurrency`, and one idle this
    /// long stops. Unset: all `concurrency` processes run from the start.
    #[serde(skip)]
    pub idle_timeout: Option<Duration>,
    /// Set by templates: a change under `working_dir` sends new invocations to fresh
    /// processes.
    #[serde(skip)]
    pub watch_code: bool,
}

/// `type = "builtin"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinSpec {
    /// Which built-in.
    pub name: BuiltinName,
}

/// The built-in integrations a route can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinName {
    /// Sends every message back (use with `route_response = "$default"`).
    Echo,
    /// The built-in chat's handler for the route's key.
    Chat,
}

/// `[authorizer]`: where identities come from, and what decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizerSpec {
    /// `route.request.header.<name>` or `route.request.querystring.<name>`; every one must be
    /// present and non-empty.
    pub identity_sources: Vec<String>,
    /// The authorizer's type and settings.
    pub kind: AuthorizerKind,
}

/// The authorizer's `type` and its keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthorizerKind {
    /// A REQUEST authorizer behind a URL.
    Http(HttpSpec),
    /// A REQUEST authorizer run as a Lambda function.
    Lambda(LambdaSpec),
    /// The built-in JWT verifier.
    Jwt(JwtSpec),
}

impl<'de> Deserialize<'de> for AuthorizerSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // `identity_sources` is common to every type; the rest is the type's own keys.
        let mut table = toml::Table::deserialize(d)?;
        let identity_sources = match table.remove("identity_sources") {
            Some(v) => Vec::<String>::deserialize(v)
                .map_err(|e| D::Error::custom(format!("identity_sources: {e}")))?,
            None => Vec::new(),
        };
        let kind =
            AuthorizerKind::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(AuthorizerSpec {
            identity_sources,
            kind,
        })
    }
}

/// `type = "jwt"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// `HS256`, `RS256` or `ES256`.
    pub algorithm: JwtAlgorithm,
    /// The shared secret (HS256).
    pub secret: Option<String>,
    /// A PEM public key (RS256, ES256), relative to the configuration file's directory.
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file (RS256, ES256), relative to the configuration file's directory.
    pub jwks_file: Option<PathBuf>,
    /// The accepted `iss`; checked (and required) when set.
    pub issuer: Option<String>,
    /// The accepted `aud` values; checked (and required) when set.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
}

/// The API part of the configuration: routes, integrations, authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiDefinition {
    /// The route selection expression; `$request.body.action` when not set.
    pub route_selection_expression: Option<String>,
    /// The routes by key; when empty, the built-in app serves.
    pub routes: BTreeMap<String, RouteSpec>,
    /// The `$connect` authorizer.
    pub authorizer: Option<AuthorizerSpec>,
    /// The region in ARNs and `AWS_REGION`.
    pub region: String,
    /// The account id in ARNs.
    pub account_id: String,
    /// What relative paths are relative to: the configuration file's directory.
    pub base_dir: PathBuf,
}

impl Default for ApiDefinition {
    fn default() -> Self {
        ApiDefinition {
            route_selection_expression: None,
            routes: BTreeMap::new(),
            authorizer: None,
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            base_dir: PathBuf::from("."),
        }
    }
}

/// What a route runs, before the built-ins exist.
enum Target {
    Ready(Arc<dyn Integration>),
    Builtin(BuiltinName),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ready(integration) => f.write_str(integration.name()),
            Target::Builtin(name) => write!(f, "builtin {name:?}"),
        }
    }
}

/// A checked definition: backends built, functions not started.
#[derive(Debug)]
pub struct Prepared {
    selection: SelectionExpression,
    routes: Vec<(String, Target, bool)>,
    authorizer: Option<Arc<Authorizer>>,
    functions: Functions,
}

/// `routes."$connect"`-style key paths for error messages.
fn route_path(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        format!("routes.{key}")
    } else {
        format!("routes.{key:?}")
    }
}

/// A key of the API definition whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct DefinitionError {
    /// The key, as written in the file (`routes."sendmessage".timeout_ms`).
    pub key: String,
    /// Why.
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> DefinitionError {
    DefinitionError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Builds backends, sharing one HTTP client and functions of the same name.
struct Builder<'a> {
    definition: &'a ApiDefinition,
    api_id: &'a str,
    client: Option<reqwest::Client>,
    functions: HashMap<String, Arc<LambdaFunction>>,
    to_start: Functions,
}

impl Builder<'_> {
    fn timeout(key: &str, ms: u64) -> Result<Duration, DefinitionError> {
        if TIMEOUT_RANGE_MS.contains(&ms) {
            Ok(Duration::from_millis(ms))
        } else {
            Err(invalid(
                format!("{key}.timeout_ms"),
                "must be between 50 and 29000, as on API Gateway",
            ))
        }
    }

    fn http(&mut self, key: &str, spec: &HttpSpec) -> Result<Backend, DefinitionError> {
        let url = reqwest::Url::parse(&spec.url).map_err(|e| {
            invalid(
                format!("{key}.url"),
                format!("{:?} is not a URL: {e}", spec.url),
            )
        })?;
        if url.scheme() != "http" {
            return Err(invalid(
                format!("{key}.url"),
                format!(
                    "{:?}: only http:// URLs are supported (put a local proxy in front of https backends)",
                    spec.url
                ),
            ));
        }
        let timeout = Self::timeout(key, spec.timeout_ms)?;
        let client = self
            .client
            .get_or_insert_with(HttpBackend::shared_client)
            .clone();
        Ok(Backend::Http(HttpBackend::new(client, url, timeout)))
    }

    fn lambda(
        &mut self,
        key: &str,
        default_name: &str,
        spec: &LambdaSpec,
    ) -> Result<Backend, DefinitionError> {
        let base = &self.definition.base_dir;
        let runtime = spec
            .runtime
            .as_deref()
            .map(Runtime::parse)
            .transpose()
            .map_err(|e| invalid(format!("{key}.runtime"), e))?;
        let managed = runtime.is_some_and(Runtime::is_managed);
        let mut command = spec.command.clone();
        let program = command.first_mut();
        if program.is_none() && !managed {
            return Err(invalid(format!("{key}.command"), "must name a program"));
        }
        if let Some(program) = program.filter(|p| p.contains('/')) {
            let path = absolute(base, Path::new(program));
            if !path.is_file() {
                return Err(invalid(
                    format!("{key}.command"),
                    format!("{} does not exist", path.display()),
                ));
            }
            *program = path.display().to_string();
        }
        let name = spec
            .function_name
            .clone()
            .unwrap_or_else(|| default_name.to_owned());
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(invalid(
                format!("{key}.function_name"),
                format!("{name:?} is not a function name: use 1 to 64 letters, digits, `-` or `_`"),
            ));
        }
        if !(1..=64).contains(&spec.concurrency) {
            return Err(invalid(
                format!("{key}.concurrency"),
                "must be between 1 and 64",
            ));
        }
        if !(128..=10_240).contains(&spec.memory_size_mb) {
            return Err(invalid(
                format!("{key}.memory_size_mb"),
                "must be between 128 and 10240, as on Lambda",
            ));
        }
        if !(1..=100_000).contains(&spec.queue_size) {
            return Err(invalid(
                format!("{key}.queue_size"),
                "must be between 1 and 100000",
            ));
        }
        if let Some(bad) = spec.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(invalid(
                format!("{key}.env"),
                format!("{bad:?} is not a variable name"),
            ));
        }
        let task_root = match &spec.working_dir {
            Some(dir) => absolute(base, dir),
            None => absolute(base, Path::new(".")),
        };
        if !task_root.is_dir() {
            return Err(invalid(
                format!("{key}.working_dir"),
                format!("{} is not a directory", task_root.display()),
            ));
        }
        let function = FunctionSpec {
            handler: spec.handler.clone().unwrap_or_else(|| name.clone()),
            name,
            command,
            env: spec.env.clone(),
            task_root,
            concurrency: spec.concurrency,
            memory_size_mb: spec.memory_size_mb,
            timeout: Self::timeout(key, spec.timeout_ms)?,
            queue_size: spec.queue_size,
            region: self.definition.region.clone(),
            account_id: self.definition.account_id.clone(),
            runtime,
            idle_timeout: spec.idle_timeout,
            watch_code: spec.watch_code,
        };
        if let Some(existing) = self.functions.get(&function.name) {
            if *existing.spec() != function {
                return Err(invalid(
                    format!("{key}.function_name"),
                    format!(
                        "function {:?} is defined twice with different settings",
                        function.name
                    ),
                ));
            }
            return Ok(Backend::Lambda(existing.clone()));
        }
        let function = Arc::new(LambdaFunction::new(function));
        self.functions
            .insert(function.name().to_owned(), function.clone());
        self.to_start.push(function.clone());
        Ok(Backend::Lambda(function))
    }

    fn authorizer(&mut self, spec: &AuthorizerSpec) -> Result<Authorizer, DefinitionError> {
        let sources = spec
            .identity_sources
            .iter()
            .map(|s| IdentitySource::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("authorizer.identity_sources", e))?;
        let decider = match &spec.kind {
            AuthorizerKind::Http(http) => Decider::Request(self.http("authorizer", http)?),
            AuthorizerKind::Lambda(lambda) => {
                let name = format!("{}-authorizer", function_prefix(self.api_id));
                Decider::Request(self.lambda("authorizer", &name, lambda)?)
            }
            AuthorizerKind::Jwt(jwt) => {
                if sources.is_empty() {
                    return Err(invalid(
                        "authorizer.identity_sources",
                        "a jwt authorizer needs at least one: the first holds the token",
                    ));
                }
                Decider::Jwt(self.jwt(jwt)?)
            }
        };
        Ok(Authorizer::new(
            sources,
            decider,
            &self.definition.region,
            &self.definition.account_id,
        ))
    }

    fn jwt(&self, spec: &JwtSpec) -> Result<JwtVerifier, DefinitionError> {
        let base = &self.definition.base_dir;
        let pem = spec.public_key_file.as_ref().map(|p| absolute(base, p));
        let jwks = spec.jwks_file.as_ref().map(|p| absolute(base, p));
        let source = match (&spec.secret, &pem, &jwks) {
            (Some(secret), None, None) => KeySource::Secret(secret),
            (None, Some(pem), None) => KeySource::PemFile(pem),
            (None, None, Some(jwks)) => KeySource::JwksFile(jwks),
            _ => {
                return Err(invalid(
                    "authorizer",
                    "a jwt authorizer needs exactly one of secret, public_key_file and jwks_file",
                ));
            }
        };
        let issuers: Vec<String> = spec.issuer.iter().cloned().collect();
        let claims = Claims {
            issuers: &issuers,
            audiences: &spec.audience,
            leeway_secs: spec.leeway_secs,
        };
        JwtVerifier::new(spec.algorithm, source, claims).map_err(|e| invalid("authorizer", e))
    }
}

/// A path relative to `base` unless absolute.
fn absolute(base: &Path, path: &Path) -> PathBuf {
    let joined = base.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Function names start with the API id, made name-safe.
fn function_prefix(api_id: &str) -> String {
    api_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl ApiDefinition {
    /// Checks the definition and builds its backends. Functions are not started.
    pub fn prepare(&self, api_id: &str) -> Result<Prepared, DefinitionError> {
        let selection = match &self.route_selection_expression {
            None => SelectionExpression::default(),
            Some(_) if self.routes.is_empty() => {
                return Err(invalid(
                    "route_selection_expression",
                    "needs [routes]: the built-in apps have their own",
                ));
            }
            Some(source) => SelectionExpression::parse(source)
                .map_err(|e| invalid("route_selection_expression", e.to_string()))?,
        };
        let mut builder = Builder {
            definition: self,
            api_id,
            client: None,
            functions: HashMap::new(),
            to_start: Functions::default(),
        };
        let mut routes = Vec::with_capacity(self.routes.len());
        for (key, route) in &self.routes {
            let path = route_path(key);
            let two_way = match route.route_response.as_deref() {
                None => false,
                Some("$default") => true,
                Some(other) => {
                    return Err(invalid(
                        format!("{path}.route_response"),
                        format!("{other:?}: only \"$default\" is supported, as on API Gateway"),
                    ));
                }
            };
            let integration_path = format!("{path}.integration");
            let target = match &route.integration {
                IntegrationSpec::Http(http) => {
                    Target::Ready(Arc::new(Proxy::new(builder.http(&integration_path, http)?)))
                }
                IntegrationSpec::Lambda(lambda) => {
                    let name = format!(
                        "{}-{}",
                        function_prefix(api_id),
                        function_prefix(key.trim_start_matches('$'))
                    );
                    Target::Ready(Arc::new(Proxy::new(builder.lambda(
                        &integration_path,
                        &name,
                        lambda,
                    )?)))
                }
                IntegrationSpec::Builtin(b) => Target::Builtin(b.name),
            };
            routes.push((key.clone(), target, two_way));
        }
        let authorizer = match &self.authorizer {
            Some(spec) => Some(Arc::new(builder.authorizer(spec)?)),
            None => None,
        };
        Ok(Prepared {
            selection,
            routes,
            authorizer,
            functions: builder.to_start,
        })
    }
}

impl Prepared {
    /// Whether the definition has routes (else the built-in app serves).
    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The functions to start with the server.
    pub fn functions(&self) -> &Functions {
        &self.functions
    }

    /// The authorizer, for the built-in app when there are no routes.
    pub fn authorizer(&self) -> Option<Arc<Authorizer>> {
        self.authorizer.clone()
    }

    /// The API: `builtin(name, route_key)` supplies built-in integrations.
    pub fn into_api<E: From<ApiError>>(
        self,
        mut builtin: impl FnMut(BuiltinName, &str) -> Result<Arc<dyn Integration>, E>,
    ) -> Result<Api, E> {
        let mut api = Api::new(self.selection);
        for (key, target, two_way) in self.routes {
            let integration = match target {
                Target::Ready(integration) => integration,
                Target::Builtin(name) => builtin(name, &key)?,
            };
            api = api.route(&key, integration, two_way)?;
        }
        if let Some(authorizer) = self.authorizer {
            api = api.with_authorizer(authorizer);
        }
        Ok(api)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(toml_text: &str) -> Result<ApiDefinition, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            routes: BTreeMap<String, RouteSpec>,
            authorizer: Option<AuthorizerSpec>,
        }
        let file: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Ok(ApiDefinition {
            routes: file.routes,
            authorizer: file.authorizer,
            ..ApiDefinition::default()
        })
    }

    fn prepare(toml_text: &str) -> Result<Prepared, String> {
        definition(toml_text)?
            .prepare("api")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn routes_parse_and_build() {
        let p = prepare(
            r#"
            [routes."$connect"]
            integration = { type = "http", url = "http://127.0.0.1:9/connect", timeout_ms = 1000 }
            [routes.echo]
            integration = { type = "builtin", name = "echo" }
            route_response = "$default"
            [routes.a]
            integration = { type = "lambda", command = ["sh", "-c", "exit 1"], function_name = "shared" }
            [routes.b]
            integration = { type = "lambda", command = ["sh", "-c", "exit 1"], function_name = "shared" }
            [authorizer]
            type = "http"
            url = "http://127.0.0.1:9/auth"
            identity_sources = ["route.request.header.Authorization"]
            "#,
        )
        .unwrap();
        assert!(p.has_routes());
        assert_eq!(p.functions.len(), 1, "routes naming one function share it");
        let api = p
            .into_api(|_, _| Ok::<_, ApiError>(Arc::new(crate::integration::echo::Echo)))
            .unwrap();
        assert_eq!(api.keys(), ["$connect", "a", "b", "echo"]);
        assert!(api.get("echo").unwrap().two_way);
        assert!(api.authorizer().is_some());
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |t: &str| prepare(t).unwrap_err();
        let e = err(
            "[routes.x]\nintegration = { type = \"http\", url = \"http://h/\", timeout_ms = 30000 }\n",
        );
        assert!(e.starts_with("routes.x.integration.timeout_ms:"), "{e}");
        let e =
            err("[routes.\"$connect\"]\nintegration = { type = \"http\", url = \"https://h/\" }\n");
        assert!(e.starts_with("routes.\"$connect\".integration.url:"), "{e}");
        let e = err(
            "[routes.x]\nintegration = { type = \"builtin\", name = \"echo\" }\nroute_response = \"other\"\n",
        );
        assert!(e.starts_with("routes.x.route_response:"), "{e}");
        let e = err("[routes.x]\nintegration = { type = \"lambda\", command = [\"./nope\"] }\n");
        assert!(e.contains("does not exist"), "{e}");
        let e = err("[routes.x]\nintegration = { type = \"lambda\", command = [] }\n");
        assert!(e.starts_with("routes.x.integration.command:"), "{e}");
        let e = err(
            "[routes.x]\nintegration = { type = \"lambda\", command = [\"true\"], concurrency = 0 }\n",
        );
        assert!(e.starts_with("routes.x.integration.concurrency:"), "{e}");
        let e = err("[authorizer]\ntype = \"jwt\"\nalgorithm = \"HS256\"\nsecret = \"s\"\n");
        assert!(e.starts_with("authorizer.identity_sources:"), "{e}");
        let e = err(
            "[authorizer]\ntype = \"http\"\nurl = \"http://h/\"\nidentity_sources = [\"context.x\"]\n",
        );
        assert!(e.starts_with("authorizer.identity_sources:"), "{e}");
        let e = err(
            "[routes.a]\nintegration = { type = \"lambda\", command = [\"true\"], function_name = \"f\" }\n[routes.b]\nintegration = { type = \"lambda\", command = [\"false\"], function_name = \"f\" }\n",
        );
        assert!(e.contains("defined twice"), "{e}");
    }

    #[test]
    fn unknown_keys_and_types_are_parse_errors() {
        let e = definition(
            "[routes.x]\nintegration = { type = \"http\", url = \"http://h/\", timeout = 5 }\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown field `timeout`"), "{e}");
        let e = definition("[routes.x]\nintegration = { type = \"grpc\" }\n").unwrap_err();
        assert!(e.contains("unknown variant `grpc`"), "{e}");
        let e = definition("[authorizer]\ntype = \"http\"\nurl = \"http://h/\"\nttl = 5\n")
            .unwrap_err();
        assert!(e.contains("unknown field `ttl`"), "{e}");
        let e = definition("[authorizer]\ntype = \"jwt\"\nalgorithm = \"none\"\nidentity_sources = [\"route.request.header.A\"]\n").unwrap_err();
        assert!(e.contains("unknown variant `none`"), "{e}");
    }
}
