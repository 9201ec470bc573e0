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
