//! The connection table: one empty file per connection id in a directory.

use std::io;
use std::path::PathBuf;

/// The directory of connection ids.
#[derive(Debug, Clone)]
pub struct Table {
    dir: PathBuf,
}

impl Table {
    /// The table in `CONNECTIONS_DIR` (created if missing), or in the temporary directory.
    pub fn from_env() -> io::Result<Self> {
        let dir = std::env::var_os("CONNECTIONS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("lambda-chat-connections"));
        Table::open(dir)
    }

    /// The table in `dir` (created if missing).
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Table { dir })
    }

    /// The path of an id's file; ids are API Gateway's (base64url and `=`), nothing else.
    fn path(&self, id: &str) -> io::Result<PathBuf> {
        let valid = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='));
        if valid {
            Ok(self.dir.join(id))
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{id:?} is not a connection id"),
            ))
        }
    }

    /// Adds a connection id.
    pub fn put(&self, id: &str) -> io::Result<()> {
        std::fs::write(self.path(id)?, b"")
    }

    /// Removes a connection id; removing one that is not there is fine.
    pub fn delete(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every connection id.
    pub fn scan(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                ids.push(name.to_owned());
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_scan_delete() {
        let dir = tempfile::tempdir().unwrap();
        let t = Table::open(dir.path().join("t")).unwrap();
        t.put("Tq3mxb7WNjMCFhA=").unwrap();
        t.put("Tq3mxb7WNjMCFhB=").unwrap();
        let mut ids = t.scan().unwrap();
        ids.sort();
        assert_eq!(ids, ["Tq3mxb7WNjMCFhA=", "Tq3mxb7WNjMCFhB="]);
        t.delete("Tq3mxb7WNjMCFhA=").unwrap();
        t.delete("Tq3mxb7WNjMCFhA=").unwrap();
        assert_eq!(t.scan().unwrap(), ["Tq3mxb7WNjMCFhB="]);
        assert!(t.put("../escape").is_err());
    }
}
