//! A file of JSON records, one per line, for histories the server keeps in
//! its data directory (scheduled-job runs, queries): appended as records
//! come, rewritten whole (atomically) to drop old ones.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{FrontendError, Result};

/// One JSON-lines file.
#[derive(Debug)]
pub struct JsonLines {
    path: PathBuf,
}

impl JsonLines {
    /// The file at `path` (created when first written).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    fn failed(&self, doing: &str) -> impl Fn(std::io::Error) -> FrontendError + '_ {
        let doing = doing.to_string();
        move |e| FrontendError::io(format!("{doing} {}", self.path.display()), e)
    }

    /// Every record in the file, oldest first (none when it is missing). A
    /// line that does not read as a record — the last one, cut short by a
    /// crash — is skipped.
    pub fn read<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.failed("reading")(e)),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `records`, atomically (a new file renamed over
    /// the old one).
    pub fn rewrite<T: Serialize>(&self, records: &[T]) -> Result<()> {
        let lines: Vec<String> = records.iter().map(encode).collect();
        self.rewrite_lines(lines.iter())
    }

    /// Replaces the file with `lines` (records already encoded), atomically.
    pub fn rewrite_lines<'a>(&self, lines: impl Iterator<Item = &'a String>) -> Result<()> {
        let failed = self.failed("writing");
        let staging = self.path.with_extension("jsonl.tmp");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&staging).map_err(&failed)?);
        for line in lines {
            writeln!(file, "{line}").map_err(&failed)?;
        }
        let file = file.into_inner().map_err(|e| failed(e.into_error()))?;
        file.sync_all().map_err(&failed)?;
        std::fs::rename(&staging, &self.path).map_err(&failed)
    }

    /// The file opened for appending (created if missing).
    pub fn open_to_append(&self) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(self.failed("opening"))
    }

    /// Appends `record`; with `sync`, waits until it is on disk.
    pub fn append<T: Serialize>(&self, record: &T, sync: bool) -> Result<()> {
        let failed = self.failed("writing");
        let mut file = self.open_to_append()?;
        writeln!(file, "{}", encode(record)).map_err(&failed)?;
        if sync {
            file.sync_data().map_err(&failed)?;
        }
        Ok(())
    }
}

/// `record` as one line of JSON (without the line break).
pub fn encode<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("history records encode as JSON")
}
