//! The JSON report (`ferry.bench/v1`, described by `docs/bench-schema.json`): every run, every
//! parameter, the machine. [`read`] refuses files of another schema version with a message that
//! names both versions, before looking at the rest of the file.

use crate::model::{Report, SCHEMA};
use std::io;
use std::path::{Path, PathBuf};

/// Why a report file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not JSON, or not a `ferry.bench/v1` report.
    #[error("{path} is not a valid {SCHEMA} report: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The file has no `schema` field or another schema version.
    #[error("{path} has schema {found:?}; this ferry reads {SCHEMA:?} only (re-run `ferry bench` with this version, or compare with the ferry that wrote it)")]
    Schema {
        /// The file.
        path: PathBuf,
        /// The `schema` it declares (empty when missing).
        found: String,
    },
}

/// The report as pretty-printed JSON.
pub fn to_string(report: &Report) -> io::Result<String> {
    let mut s = serde_json::to_string_pretty(report).map_err(io::Error::other)?;
    s.push('\n');
    Ok(s)
}

/// Writes the report to `path` as pretty-printed JSON.
pub fn write(report: &Report, path: &Path) -> io::Result<()> {
    std::fs::write(path, to_string(report)?)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Parses a report from JSON text; `path` only names it in errors.
pub fn from_str(text: &str, path: &Path) -> Result<Report, ReadError> {
    let parse = |source| ReadError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(parse)?;
    let found = value
        .get("schema")
        .and_then(|s| s.as_str())
        .unwrap_or_default();
    if found != SCHEMA {
        return Err(ReadError::Schema {
            path: path.to_path_buf(),
            found: found.to_string(),
        });
    }
    serde_json::from_value(value).map_err(parse)
}

/// Reads a report written by [`write()`], refusing other schema versions.
pub fn read(path: &Path) -> Result<Report, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_str(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_schema_versions_are_refused() {
        let p = Path::new("old.json");
        let e = from_str(r#"{"schema":"ferry.bench/v0","results":[]}"#, p).unwrap_err();
        assert!(matches!(&e, ReadError::Schema { found, .. } if found == "ferry.bench/v0"));
        assert!(e.to_string().contains("ferry.bench/v1"), "{e}");
        let e = from_str(r#"{"results":[]}"#, p).unwrap_err();
        assert!(matches!(&e, ReadError::Schema { found, .. } if found.is_empty()));
        let e = from_str("not json", p).unwrap_err();
        assert!(matches!(e, ReadError::Parse { .. }));
        let e = from_str(r#"{"schema":"ferry.bench/v1","results":3}"#, p).unwrap_err();
        assert!(matches!(e, ReadError::Parse { .. }), "{e}");
        let e = read(Path::new("/nonexistent/report.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/report.json"), "{e}");
    }

    #[test]
    fn round_trip() {
        let r = Report {
            schema: SCHEMA.into(),
            partial: true,
            warnings: vec!["busy".into()],
            ..Default::default()
        };
        let back = from_str(&to_string(&r).unwrap(), Path::new("x")).unwrap();
        assert_eq!(back, r);
    }
}
