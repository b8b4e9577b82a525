//! The report of one run: what was found and done, and the text `chatfiles check` prints for it.

use std::fmt;
use std::path::PathBuf;

use crate::storage::is_valid_key;

/// What is wrong with one file row's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Nothing at the object's path.
    Missing,
    /// The row's key is not one we issue, so it names no object.
    InvalidKey,
    /// Something other than a regular file (a directory, a symlink) at the object's path.
    NotAFile,
    Size {
        actual: u64,
        recorded: i64,
    },
    Sha256Mismatch,
}

/// A file row whose bytes are missing or corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    pub id: i64,
    pub chat_id: i64,
    pub object_key: String,
    pub problem: Problem,
}

impl DamagedFile {
    pub fn is_missing(&self) -> bool {
        self.problem == Problem::Missing
    }
}

/// Something in `objects/` or `tmp/` (or in the bucket) that no row accounts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the storage directory, e.g. `objects/ab/ab12…` or `tmp/x.part`; in a bucket,
    /// the object's name under the prefix.
    pub path: PathBuf,
    pub is_dir: bool,
    /// The id of an unfinished multipart upload of that name (buckets only).
    pub upload_id: Option<String>,
    /// Whether `--repair` removed it.
    pub removed: bool,
}

impl Entry {
    pub(super) fn new(path: PathBuf, is_dir: bool) -> Self {
        Self {
            path,
            is_dir,
            upload_id: None,
            removed: false,
        }
    }

    pub(super) fn upload(name: PathBuf, upload_id: String) -> Self {
        Self {
            upload_id: Some(upload_id),
            ..Self::new(name, false)
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", escape_controls(&self.path.to_string_lossy()))?;
        if self.is_dir {
            write!(f, "/")?;
        }
        if let Some(upload) = &self.upload_id {
            write!(f, " (upload {})", escape_controls(upload))?;
        }
        Ok(())
    }
}

/// `text` with control characters escaped: a file name may hold a newline or a terminal escape
/// sequence, and must not forge or garble a report line.
fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Everything one run found (and, with `--repair`, did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub repair: bool,
    /// The bucket checked (`s3://…/ at <endpoint>`); `None` for the storage directory. There,
    /// `temp` holds unfinished multipart uploads.
    pub bucket: Option<String>,
    /// The service held the storage lock: temp files are uploads in flight, not leftovers.
    pub service_running: bool,
    /// File rows checked, and the bytes they record.
    pub files: u64,
    pub bytes: u64,
    /// `PRAGMA quick_check` lines other than `ok`.
    pub database: Vec<String>,
    pub damaged_files: Vec<DamagedFile>,
    pub orphans: Vec<Entry>,
    pub temp: Vec<Entry>,
    /// Set when `--repair` removed nothing because the database itself is damaged: its rows
    /// cannot be trusted to say which objects are orphans.
    pub repair_withheld: bool,
    /// Repair steps that failed (a removal, a directory sync); the run exits 2.
    pub errors: Vec<String>,
}

impl Report {
    pub fn missing(&self) -> usize {
        self.damaged_files.iter().filter(|f| f.is_missing()).count()
    }

    pub fn corrupt(&self) -> usize {
        self.damaged_files.len() - self.missing()
    }

    /// Temp entries that are leftovers (not uploads in flight).
    fn temp_leftovers(&self) -> usize {
        if self.service_running {
            0
        } else {
            self.temp.len()
        }
    }

    pub fn removed(&self) -> usize {
        self.orphans
            .iter()
            .chain(&self.temp)
            .filter(|e| e.removed)
            .count()
    }

    /// Whether damage remains after this run.
    pub fn is_damaged(&self) -> bool {
        !self.database.is_empty()
            || !self.damaged_files.is_empty()
            || self.orphans.iter().any(|e| !e.removed)
            || (!self.service_running && self.temp.iter().any(|e| !e.removed))
    }
}

fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

fn shown_key(key: &str) -> String {
    if is_valid_key(key) {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(bucket) = &self.bucket {
            writeln!(f, "objects in {bucket}")?;
        }
        for line in &self.database {
            writeln!(f, "database: {}", escape_controls(line))?;
        }
        for file in &self.damaged_files {
            let kind = if file.is_missing() {
                "missing"
            } else {
                "corrupt"
            };
            write!(
                f,
                "{kind} file {} (chat {}): object {}",
                file.id,
                file.chat_id,
                shown_key(&file.object_key)
            )?;
            match &file.problem {
                Problem::Missing => writeln!(f)?,
                Problem::InvalidKey => writeln!(f, ": not a valid object key")?,
                Problem::NotAFile => writeln!(f, ": not a regular file")?,
                Problem::Size { actual, recorded } => {
                    writeln!(f, ": size {actual} != recorded {recorded}")?;
                }
                Problem::Sha256Mismatch => writeln!(f, ": sha256 mismatch")?,
            }
        }
        for entry in &self.orphans {
            writeln!(f, "orphan {entry}")?;
        }
        let temp_word = match (self.service_running, self.bucket.is_some()) {
            (true, _) => "in-flight",
            (false, false) => "temp",
            (false, true) => "unfinished upload",
        };
        let (temp_one, temp_many) = if self.bucket.is_some() {
            ("unfinished upload", "unfinished uploads")
        } else {
            ("temp file", "temp files")
        };
        for entry in &self.temp {
            writeln!(f, "{temp_word} {entry}")?;
        }
        for entry in self.orphans.iter().chain(&self.temp) {
            if entry.removed {
                writeln!(f, "removed {entry}")?;
            }
        }
        for error in &self.errors {
            writeln!(f, "{error}")?;
        }
        if self.repair_withheld {
            writeln!(
                f,
                "note: nothing was removed: the database is damaged, so objects that look \
                 orphaned may still be needed"
            )?;
        }
        if !self.damaged_files.is_empty() {
            writeln!(
                f,
                "note: {} missing or corrupt bytes; check never deletes rows: restore the \
                 objects from a backup or delete those files through the API",
                plural(self.damaged_files.len() as u64, "file has", "files have")
            )?;
        }
        let leftovers = self.orphans.len() + self.temp_leftovers();
        if !self.repair && leftovers > 0 {
            let first = if self.service_running {
                "stop chatfiles, then run"
            } else {
                "run"
            };
            writeln!(
                f,
                "note: {first} `chatfiles check --repair` to remove orphans and {temp_many}"
            )?;
        }

        write!(
            f,
            "checked {} ({} bytes): {} missing, {} corrupt, {}, {}",
            plural(self.files, "file", "files"),
            self.bytes,
            self.missing(),
            self.corrupt(),
            plural(self.orphans.len() as u64, "orphan", "orphans"),
            plural(self.temp_leftovers() as u64, temp_one, temp_many),
        )?;
        if self.service_running && !self.temp.is_empty() {
            write!(f, ", {} in-flight", self.temp.len())?;
        }
        if self.repair {
            write!(f, ", {} removed", self.removed())?;
        }
        if !self.database.is_empty() {
            write!(f, ", database damaged")?;
        }
        let verdict = if self.is_damaged() {
            "damage found"
        } else {
            "ok"
        };
        writeln!(f, ": {verdict}")
    }
}

#[cfg(test)]
mod tests {
    use crate::check::tests::{fixture, lines};

    #[test]
    fn control_characters_in_names_cannot_forge_lines() {
        let fx = fixture();
        fx.write("tmp/a\nchecked 0 files: ok", b"x");
        let report = fx.check(false);
        assert_eq!(lines(&report)[0], "temp tmp/a\\nchecked 0 files: ok");
    }
}
