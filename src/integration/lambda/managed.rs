//! Lambda's managed runtimes: which runtime names switchboard runs, and how.
//!
//! `nodejs*` and `python3.*` functions run through small runtime loops that are part of
//! switchboard (`runtimes/node.js`, `runtimes/python.py`, compiled in and written to the data
//! directory at start) on the `node` and `python3` found on `PATH`; they speak the Runtime API
//! of [`super::runtime_api`] like any custom runtime. `provided*` functions run their
//! `bootstrap`, `go1.x` functions the executable their handler names. Retired runtime names
//! (`nodejs8.10`, `python3.7`) run on the installed interpreter with a warning.

use std::path::{Path, PathBuf};

/// A runtime name from a template, understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `nodejsN.x` (`N` is the major; 0 for a bare `nodejs`).
    Node {
        /// The major version named.
        major: u32,
    },
    /// `python3.N`.
    Python {
        /// The minor version named.
        minor: u32,
    },
    /// `provided`, `provided.al2`, `provided.al2023`: the `bootstrap` in the code directory.
    Provided,
    /// `go1.x`: the executable named by the handler.
    Go,
}

/// Node.js majors Lambda runs today.
const NODE_SUPPORTED: std::ops::RangeInclusive<u32> = 18..=24;
/// Python 3 minors Lambda runs today.
const PYTHON_SUPPORTED: std::ops::RangeInclusive<u32> = 9..=14;

impl Runtime {
    /// Parses a runtime name (`nodejs20.x`, `python3.12`, `provided.al2023`, `go1.x`).
    pub fn parse(name: &str) -> Result<Runtime, String> {
        let unknown = || {
            format!(
                "unknown runtime {name:?}: switchboard runs nodejs*, python3.*, provided, \
                 provided.al2, provided.al2023 and go1.x"
            )
        };
        if let Some(version) = name.strip_prefix("nodejs") {
            if version.is_empty() {
                return Ok(Runtime::Node { major: 0 });
            }
            let major = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .ok_or_else(unknown)?;
            return Ok(Runtime::Node { major });
        }
        if let Some(minor) = name.strip_prefix("python3.") {
            let minor = minor.parse().map_err(|_| unknown())?;
            return Ok(Runtime::Python { minor });
        }
        match name {
            "provided" | "provided.al2" | "provided.al2023" => Ok(Runtime::Provided),
            "go1.x" => Ok(Runtime::Go),
            _ => Err(unknown()),
        }
    }

    /// Whether switchboard's own runtime loop runs the function.
    pub fn is_managed(self) -> bool {
        matches!(self, Runtime::Node { .. } | Runtime::Python { .. })
    }

    /// A warning for runtime names Lambda no longer runs (`name` as the file wrote it).
    pub fn retired_warning(self, name: &str) -> Option<String> {
        match self {
            Runtime::Node { major } if !NODE_SUPPORTED.contains(&major) => Some(format!(
                "runtime {name} is retired on Lambda; it runs on the installed node"
            )),
            Runtime::Python { minor } if !PYTHON_SUPPORTED.contains(&minor) => Some(format!(
                "runtime {name} is retired on Lambda; it runs on the installed python3"
            )),
            Runtime::Go => Some(
                "runtime go1.x is retired on Lambda; its handler's executable runs as a \
                 custom runtime"
                    .into(),
            ),
            _ => None,
        }
    }

    /// The command of a `provided` or `go1.x` function (absolute); empty for managed runtimes,
    /// whose command is the runtime loop, known only when the server starts.
    pub fn command_for(self, code_dir: &Path, handler: &str) -> Vec<String> {
        match self {
            Runtime::Provided => vec![code_dir.join("bootstrap").display().to_string()],
            Runtime::Go => vec![code_dir.join(handler).display().to_string()],
            Runtime::Node { .. } | Runtime::Python { .. } => Vec::new(),
        }
    }

    /// Checks that the handler names a file that exists: `file.export` (Node, with `.js`,
    /// `.mjs`, `.cjs` or `.ts`), `module.function` (Python), the `bootstrap` or the Go
    /// executable. Returns the file.
    pub fn handler_file(self, code_dir: &Path, handler: &str) -> Result<PathBuf, String> {
        let missing = |what: String| Err(format!("{what} (handler {handler:?})"));
        match self {
            Runtime::Provided | Runtime::Go => {
                let file = match self {
                    Runtime::Provided => code_dir.join("bootstrap"),
                    _ => code_dir.join(handler),
                };
                if file.is_file() {
                    Ok(file)
                } else {
                    missing(format!("{} does not exist", file.display()))
                }
            }
            Runtime::Node { .. } => {
                let Some((module, _export)) = split_node_handler(handler) else {
                    return missing("a Node.js handler is `file.export`".into());
                };
                for ext in ["js", "mjs", "cjs", "ts", "mts", "cts"] {
                    let file = code_dir.join(format!("{module}.{ext}"));
                    if file.is_file() {
                        return Ok(file);
                    }
                }
                missing(format!(
                    "no {}.js, .mjs, .cjs or .ts in {}",
                    module,
                    code_dir.display()
                ))
            }
            Runtime::Python { .. } => {
                let Some((module, _function)) = handler.rsplit_once('.') else {
                    return missing("a Python handler is `module.function`".into());
                };
                let path = module.replace('.', "/");
                for file in [
                    code_dir.join(format!("{path}.py")),
                    code_dir.join(&path).join("__init__.py"),
                ] {
                    if file.is_file() {
                        return Ok(file);
                    }
                }
                missing(format!("no {path}.py in {}", code_dir.display()))
            }
        }
    }
}

/// Splits a Node.js handler into the module path and the export path:
/// `src/functions/send/handler.main` is (`src/functions/send/handler`, `main`);
/// `app.handlers.connect` is (`app`, `handlers.connect`).
pub fn split_node_handler(handler: &str) -> Option<(&str, &str)> {
    let (dir, base) = match handler.rfind('/') {
        Some(i) => (&handler[..=i], &handler[i + 1..]),
        None => ("", handler),
    };
    let dot = base.find('.')?;
    let module_len = dir.len() + dot;
    let (module, export) = (&handler[..module_len], &handler[module_len + 1..]);
    (!base[..dot].is_empty() && !export.is_empty()).then_some((module, export))
}

/// The Node.js runtime loop, written to `{data_dir}/runtimes/node.js`.
pub const NODE_LOOP: &str = include_str!("runtimes/node.js");
/// The Python runtime loop, written to `{data_dir}/runtimes/python.py`.
pub const PYTHON_LOOP: &str = include_str!("runtimes/python.py");
/// The Node.js preload that sends AWS hostnames to switchboard (`NODE_OPTIONS=--require`).
pub const NODE_REDIRECT: &str = include_str!("runtimes/redirect.js");
/// The same for Python, as a `sitecustomize` module on the process's `PYTHONPATH`.
pub const PYTHON_REDIRECT: &str = include_str!("runtimes/python-site/sitecustomize.py");

/// How a managed runtime's process starts: prepared once per function by [`prepare`].
#[derive(Debug)]
pub struct Launch {
    /// The program and its arguments (`node …/runtimes/node.js`).
    pub command: Vec<String>,
    /// Variables added to Lambda's (`NODE_PATH`, `PYTHONPATH`, ...); the function's own win.
    pub env: Vec<(String, String)>,
    /// A TypeScript handler, compiled before a process starts when the code changed.
    pub compile: Option<Compile>,
}

/// A TypeScript handler and where its compiled module goes.
#[derive(Debug)]
pub struct Compile {
    esbuild: PathBuf,
    source: PathBuf,
    out: PathBuf,
    target: String,
    /// The code generation last compiled, plus one (0: never).
    built: tokio::sync::Mutex<u64>,
}

/// Serialises npm and pip runs into the shared caches within this process.
static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An exclusive lock on a cache directory, held across processes (two servers, or test
/// processes, sharing a data directory) while something installs into it.
struct CacheLock {
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<std::fs::File>,
}

async fn lock_cache(dir: &Path) -> Result<CacheLock, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(".install.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        let lock = tokio::task::spawn_blocking(move || {
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        })
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?
        .map_err(|(_, e)| format!("{}: {e}", path.display()))?;
        Ok(CacheLock { _lock: lock })
    }
    #[cfg(not(unix))]
    {
        drop(file);
        Ok(CacheLock {})
    }
}

/// What a code directory scan skips: dependencies, caches, dot directories, and switchboard's
/// own data directory (`./switchboard-data` when switchboard runs in the app's directory,
/// where TypeScript builds and SDK installs would otherwise look like edits).
#[derive(Debug, Clone, Copy, Default)]
struct Skip {
    /// The data directory's device and inode.
    data_dir: Option<(u64, u64)>,
}

impl Skip {
    fn new(data_dir: &Path) -> Skip {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Skip {
                data_dir: std::fs::metadata(data_dir).ok().map(|m| (m.dev(), m.ino())),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = data_dir;
            Skip::default()
        }
    }

    fn dir(&self, name: &str, meta: Option<&std::fs::Metadata>) -> bool {
        if name == "node_modules" || name == "__pycache__" || name.starts_with('.') {
            return true;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let (Some(data), Some(meta)) = (self.data_dir, meta) {
                return (meta.dev(), meta.ino()) == data;
            }
        }
        let _ = meta;
        false
    }
}

/// Source files under `dir` with one of `extensions` (at most 5,000, dependencies skipped).
fn sources(dir: &Path, extensions: &[&str], skip: Skip) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() && !skip.dir(&name, entry.metadata().ok().as_ref()) => {
                    stack.push(path)
                }
                Ok(t) if t.is_file() => {
                    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                    if extensions.contains(&ext) {
                        out.push(path);
                        if out.len() >= 5_000 {
                            return out;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The AWS SDK packages the code imports: `@aws-sdk/…` (v3) and `aws-sdk` (v2).
fn sdk_imports(dir: &Path, skip: Skip) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    for file in sources(dir, &["js", "mjs", "cjs", "ts", "mts", "cts"], skip) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let mut rest = text.as_str();
        while let Some(i) = rest.find("@aws-sdk/") {
            let name: String = rest[i + "@aws-sdk/".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                found.insert(format!("@aws-sdk/{name}"));
            }
            rest = &rest[i + 1..];
        }
        if text.contains("\"aws-sdk\"") || text.contains("'aws-sdk'") {
            found.insert("aws-sdk".into());
        }
    }
    found
}

/// Whether `package` resolves from `dir` (a `node_modules` here or in a parent).
fn resolvable(dir: &Path, package: &str) -> bool {
    dir.ancestors().any(|d| {
        d.join("node_modules")
            .join(package)
            .join("package.json")
            .is_file()
    })
}

async fn run(program: &str, args: &[&str], cwd: &Path, what: &str) -> Result<String, String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{what} needs {program}, which is not on PATH"),
            _ => format!("{what}: cannot run {program}: {e}"),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Installs npm packages into `prefix` unless they are there already.
async fn npm_install(prefix: &Path, packages: &[String], why: &str) -> Result<(), String> {
    let _guard = INSTALL.lock().await;
    let _lock = lock_cache(prefix).await?;
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| {
            let name = p
                .rsplit_once('@')
                .filter(|(n, _)| !n.is_empty())
                .map_or(p.as_str(), |(n, _)| n);
            !prefix
                .join("node_modules")
                .join(name)
                .join("package.json")
                .is_file()
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
    let manifest = prefix.join("package.json");
    if !manifest.is_file() {
        std::fs::write(&manifest, "{\"private\": true}\n")
            .map_err(|e| format!("{}: {e}", manifest.display()))?;
    }
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    tracing::info!(packages = %names.join(" "), into = %prefix.display(), "{why}: installing with npm (once)");
    let mut args = vec!["install", "--no-audit", "--no-fund", "--loglevel=error"];
    args.extend(names.iter().copied());
    run("npm", &args, prefix, why).await.map(|_| ())
}

/// Writes a runtime loop unless it is there with the same content; returns its path.
fn write_loop(data_dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = data_dir.join("runtimes").join(name);
    let dir = path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(path)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Prepares a managed runtime's launch: writes the runtime loop, checks the interpreter,
/// provides the AWS SDK the Lambda runtime would (installed once into `{data_dir}/sdk/`
/// when the function's own dependencies lack it) and sets up TypeScript compilation.
pub async fn prepare(
    spec: &super::FunctionSpec,
    runtime: Runtime,
    data_dir: &Path,
) -> Result<Launch, String> {
    let data_dir = absolute(data_dir);
    let root = &spec.task_root;
    let handler_file = runtime.handler_file(root, &spec.handler)?;
    match runtime {
        Runtime::Node { major } => {
            let path = write_loop(&data_dir, "node.js", NODE_LOOP)?;
            let version = run("node", &["--version"], root, "a Node.js function").await?;
            let installed: u32 = version
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major != 0 && installed != major {
                tracing::warn!(
                    function = %spec.name,
                    "runtime nodejs{major} runs on the installed node {}", version.trim()
                );
            }
            // Lambda provides SDK v3 from nodejs18.x on, v2 before.
            let sdk = data_dir.join("sdk").join("node");
            let wanted: Vec<String> = sdk_imports(root, Skip::new(&data_dir))
                .into_iter()
                .filter(|p| !resolvable(root, p))
                .filter_map(|p| match (p.as_str(), major) {
                    ("aws-sdk", 1..=17) => Some("aws-sdk@2".to_owned()),
                    ("aws-sdk", _) => None,
                    (_, 1..=17) => None,
                    _ => Some(format!("{p}@3")),
                })
                .collect();
            if !wanted.is_empty() {
                npm_install(
                    &sdk,
                    &wanted,
                    &format!(
                        "function {} imports the AWS SDK its runtime provides on Lambda",
                        spec.name
                    ),
                )
                .await?;
            }
            let modules = sdk.join("node_modules");
            let preload = write_loop(&data_dir, "redirect.js", NODE_REDIRECT)?;
            let mut env = vec![
                (
                    "NODE_OPTIONS".to_owned(),
                    format!("--require {}", preload.display()),
                ),
                (
                    "NODE_PATH".to_owned(),
                    format!(
                        "{}:{}",
                        root.join("node_modules").display(),
                        modules.display()
                    ),
                ),
                (
                    "SWITCHBOARD_SDK_NODE_MODULES".to_owned(),
                    modules.display().to_string(),
                ),
            ];
            let ext = handler_file
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("");
            let compile = if matches!(ext, "ts" | "mts" | "cts") {
                let tools = data_dir.join("tools");
                npm_install(
                    &tools,
                    &["esbuild@0".to_owned()],
                    &format!("function {} has a TypeScript handler", spec.name),
                )
                .await?;
                let out = data_dir.join("build").join(&spec.name).join(
                    handler_file
                        .with_extension("js")
                        .file_name()
                        .unwrap_or_default(),
                );
                env.push((
                    "SWITCHBOARD_HANDLER_MODULE".to_owned(),
                    out.display().to_string(),
                ));
                Some(Compile {
                    esbuild: tools.join("node_modules").join(".bin").join("esbuild"),
                    source: handler_file,
                    out,
                    target: format!("node{}", if installed > 0 { installed } else { 18 }),
                    built: tokio::sync::Mutex::new(0),
                })
            } else {
                None
            };
            Ok(Launch {
                command: vec!["node".into(), path.display().to_string()],
                env,
                compile,
            })
        }
        Runtime::Python { minor } => {
            let path = write_loop(&data_dir, "python.py", PYTHON_LOOP)?;
            let exact = format!("python3.{minor}");
            let interpreter = if run(&exact, &["--version"], root, "").await.is_ok() {
                exact
            } else {
                "python3".to_owned()
            };
            let version = run(&interpreter, &["--version"], root, "a Python function").await?;
            let installed = version
                .trim()
                .trim_start_matches("Python 3.")
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok());
            if installed != Some(minor) {
                tracing::warn!(
                    function = %spec.name,
                    "runtime python3.{minor} runs on the installed {}", version.trim()
                );
            }
            let sdk = data_dir.join("sdk").join("python");
            let site = write_loop(&data_dir, "python-site/sitecustomize.py", PYTHON_REDIRECT)?;
            let site = site.parent().unwrap_or(&data_dir).to_owned();
            let python_path = format!("{}:{}:{}", root.display(), site.display(), sdk.display());
            let uses_boto3 = sources(root, &["py"], Skip::new(&data_dir))
                .iter()
                .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("boto3")));
            if uses_boto3 {
                let has_boto3 = tokio::process::Command::new(&interpreter)
                    .args(["-c", "import boto3"])
                    .env("PYTHONPATH", &python_path)
                    .current_dir(root)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .await
                    .is_ok_and(|s| s.success());
                if !has_boto3 {
                    let _guard = INSTALL.lock().await;
                    let _lock = lock_cache(&sdk).await?;
                    tracing::info!(
                        function = %spec.name, into = %sdk.display(),
                        "the function imports boto3, which its runtime provides on Lambda: installing with pip (once)"
                    );
                    let target = sdk.display().to_string();
                    run(
                        &interpreter,
                        &[
                            "-m", "pip", "install", "--quiet", "--target", &target, "boto3",
                        ],
                        root,
                        "installing boto3",
                    )
                    .await
                    .map_err(|e| format!("{e} (is pip installed for {interpreter}?)"))?;
                }
            }
            Ok(Launch {
                command: vec![interpreter, "-u".into(), path.display().to_string()],
                env: vec![("PYTHONPATH".to_owned(), python_path)],
                compile: None,
            })
        }
        Runtime::Provided | Runtime::Go => Err("not a managed runtime".into()),
    }
}

impl Launch {
    /// Compiles a TypeScript handler if the code changed since the last build (generation
    /// `generation`); the error is the compiler's.
    pub async fn compile(&self, generation: u64) -> Result<(), String> {
        let Some(compile) = &self.compile else {
            return Ok(());
        };
        let mut built = compile.built.lock().await;
        if *built == generation + 1 && compile.out.is_file() {
            return Ok(());
        }
        let out = format!("--outfile={}", compile.out.display());
        let target = format!("--target={}", compile.target);
        let source = compile.source.display().to_string();
        let args = [
            source.as_str(),
            "--bundle",
            "--platform=node",
            "--format=cjs",
            "--packages=external",
            "--sourcemap=inline",
            "--log-level=error",
            target.as_str(),
            out.as_str(),
        ];
        let dir = compile.source.parent().unwrap_or(Path::new("."));
        let program = compile.esbuild.display().to_string();
        run(&program, &args, dir, "compiling the TypeScript handler").await?;
        *built = generation + 1;
        Ok(())
    }
}

/// A cheap fingerprint of a code directory: files, total size, newest change.
fn fingerprint(dir: &Path, skip: Skip) -> (usize, u64, u128) {
    let mut count = 0;
    let mut size = 0;
    let mut newest = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if !skip.dir(&name.to_string_lossy(), Some(&meta)) {
                    stack.push(entry.path());
                }
                continue;
            }
            count += 1;
            size += meta.len();
            let modified = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            newest = newest.max(modified);
            if count >= 20_000 {
                return (count, size, newest);
            }
        }
    }
    (count, size, newest)
}

/// How often a code directory is looked at for changes.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Watches a function's code directory until `stop`: a change bumps the function's code
/// generation, so idle processes stop and new invocations go to fresh ones.
pub(super) async fn watch_code(
    function: std::sync::Arc<super::LambdaFunction>,
    stop: tokio_util::sync::CancellationToken,
    data_dir: PathBuf,
) {
    let dir = function.spec.task_root.clone();
    let skip = Skip::new(&data_dir);
    let scan = |dir: PathBuf| tokio::task::spawn_blocking(move || fingerprint(&dir, skip));
    let Ok(mut last) = scan(dir.clone()).await else {
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        let Ok(now) = scan(dir.clone()).await else {
            return;
        };
        if now != last {
            last = now;
            function
                .code_generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            function.code_changed.notify_waiters();
            tracing::info!(function = %function.spec.name, "code changed; new invocations go to fresh processes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names() {
        assert_eq!(
            Runtime::parse("nodejs20.x").unwrap(),
            Runtime::Node { major: 20 }
        );
        assert_eq!(
            Runtime::parse("nodejs8.10").unwrap(),
            Runtime::Node { major: 8 }
        );
        assert_eq!(
            Runtime::parse("python3.12").unwrap(),
            Runtime::Python { minor: 12 }
        );
        assert_eq!(
            Runtime::parse("provided.al2023").unwrap(),
            Runtime::Provided
        );
        assert_eq!(Runtime::parse("go1.x").unwrap(), Runtime::Go);
        let e = Runtime::parse("java21").unwrap_err();
        assert!(e.contains("unknown runtime \"java21\""), "{e}");
        assert!(Runtime::parse("python2.7").is_err());
        assert!(
            Runtime::parse("nodejs8.10")
                .unwrap()
                .retired_warning("nodejs8.10")
                .unwrap()
                .contains("retired")
        );
        assert!(
            Runtime::parse("python3.7")
                .unwrap()
                .retired_warning("python3.7")
                .is_some()
        );
        assert!(
            Runtime::parse("nodejs22.x")
                .unwrap()
                .retired_warning("nodejs22.x")
                .is_none()
        );
    }

    #[test]
    fn node_handlers_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_node_handler("app.handler"), Some(("app", "handler")));
        assert_eq!(
            split_node_handler("src/functions/send-message/handler.main"),
            Some(("src/functions/send-message/handler", "main"))
        );
        assert_eq!(
            split_node_handler("lib/app.handlers.connect"),
            Some(("lib/app", "handlers.connect"))
        );
        assert_eq!(split_node_handler("nodot"), None);
        assert_eq!(split_node_handler("a.b/c"), None);
    }

    #[test]
    fn scans_skip_dependencies_and_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |p: &str, text: &str| {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("app.js", "import '@aws-sdk/client-dynamodb';");
        write("node_modules/x/index.js", "require('@aws-sdk/client-s3')");
        write(
            "switchboard-data/build/f/app.js",
            "require('@aws-sdk/client-sqs')",
        );
        let skip = Skip::new(&root.join("switchboard-data"));
        let before = fingerprint(root, skip);
        assert_eq!(before.0, 1, "only app.js counts");
        write("switchboard-data/build/f/other.js", "x");
        write("node_modules/y.js", "y");
        write(".git/HEAD", "z");
        assert_eq!(fingerprint(root, skip), before);
        assert_eq!(
            sdk_imports(root, skip).into_iter().collect::<Vec<_>>(),
            ["@aws-sdk/client-dynamodb"]
        );
        write("app.js", "exports.handler = async () => 2;");
        assert_ne!(fingerprint(root, skip), before);
    }

    #[test]
    fn handler_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/f")).unwrap();
        std::fs::write(dir.path().join("src/f/handler.ts"), "").unwrap();
        std::fs::write(dir.path().join("app.py"), "").unwrap();
        let node = Runtime::Node { major: 20 };
        assert!(
            node.handler_file(dir.path(), "src/f/handler.main")
                .unwrap()
                .ends_with("src/f/handler.ts")
        );
        let e = node.handler_file(dir.path(), "missing.main").unwrap_err();
        assert!(e.contains("no missing.js"), "{e}");
        let py = Runtime::Python { minor: 12 };
        assert!(py.handler_file(dir.path(), "app.handler").is_ok());
        assert!(py.handler_file(dir.path(), "nope.handler").is_err());
        let e = Runtime::Provided.handler_file(dir.path(), "x").unwrap_err();
        assert!(e.contains("bootstrap does not exist"), "{e}");
    }
}
