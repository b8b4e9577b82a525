//! The objects on disk: each row's object present, a regular file, of its recorded size and
//! SHA-256; and what lies under `objects/` or `tmp/` without a row.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Entry, Problem};
use crate::storage::is_valid_key;

/// Objects are hashed through a buffer this large, never read whole.
pub(super) const HASH_BUFFER: usize = 1 << 20;

fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_gone(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// What, if anything, is wrong with the object at `path` against its row.
pub(super) fn verify(
    path: &Path,
    recorded_size: i64,
    recorded_sha256: &str,
    buffer: &mut [u8],
) -> io::Result<Option<Problem>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if is_gone(&err) => return Ok(Some(Problem::Missing)),
        Err(err) => return Err(err),
    };
    // The download route would follow a symlink out of the storage directory.
    if !meta.file_type().is_file() {
        return Ok(Some(Problem::NotAFile));
    }
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if is_gone(&err) => return Ok(Some(Problem::Missing)),
        Err(err) => return Err(err),
    };
    let size_problem = |actual: u64| {
        (u64::try_from(recorded_size).ok() != Some(actual)).then_some(Problem::Size {
            actual,
            recorded: recorded_size,
        })
    };
    if let Some(problem) = size_problem(file.metadata()?.len()) {
        return Ok(Some(problem));
    }
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    loop {
        let n = match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buffer[..n]);
        read += n as u64;
    }
    // Only a file changing under us gets here: its length at open time no longer holds.
    if let Some(problem) = size_problem(read) {
        return Ok(Some(problem));
    }
    let actual = hex::encode(hasher.finalize());
    Ok((!actual.eq_ignore_ascii_case(recorded_sha256)).then_some(Problem::Sha256Mismatch))
}

/// Sorted entries of `dir`: (name, is a directory, not following symlinks). A missing `dir` is
/// empty: the service creates it, and its absence is damage only if rows need it.
fn sorted_entries(dir: &Path) -> io::Result<Vec<(std::ffi::OsString, bool)>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry?;
        entries.push((entry.file_name(), entry.file_type()?.is_dir()));
    }
    entries.sort();
    Ok(entries)
}

/// Everything under `objects/` that is not a referenced object at its exact path. A directory
/// that is not a shard is one orphan, however much it holds; empty shards are normal (the
/// service never removes them).
pub(super) fn orphans(objects: &Path, referenced: &HashSet<&str>) -> io::Result<Vec<Entry>> {
    let base = Path::new("objects");
    let mut found = Vec::new();
    for (shard, is_dir) in sorted_entries(objects)? {
        let shard_name = shard.to_str().filter(|s| is_shard_name(s));
        let Some(shard_name) = shard_name.filter(|_| is_dir) else {
            found.push(Entry::new(base.join(&shard), is_dir));
            continue;
        };
        for (name, is_dir) in sorted_entries(&objects.join(&shard))? {
            let in_place = name.to_str().is_some_and(|key| {
                referenced.contains(key) && is_valid_key(key) && key.starts_with(shard_name)
            });
            if !in_place {
                found.push(Entry::new(base.join(&shard).join(&name), is_dir));
            }
        }
    }
    Ok(found)
}

pub(super) fn temp_entries(tmp: &Path) -> io::Result<Vec<Entry>> {
    let base = Path::new("tmp");
    Ok(sorted_entries(tmp)?
        .into_iter()
        .map(|(name, is_dir)| Entry::new(base.join(name), is_dir))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::DamagedFile;
    use crate::check::tests::{CHAT, fixture, last_line, lines};
    use crate::storage::{new_key, object_path_in};

    #[test]
    fn a_clean_store_passes() {
        let fx = fixture();
        fx.add(b"hello");
        fx.add(&vec![7u8; HASH_BUFFER * 2 + 3]);
        fx.add(b"");
        let report = fx.check(false);
        assert!(!report.is_damaged(), "{report}");
        assert_eq!(report.files, 3);
        let bytes = 5 + HASH_BUFFER * 2 + 3;
        assert_eq!(
            lines(&report),
            [format!(
                "checked 3 files ({bytes} bytes): 0 missing, 0 corrupt, 0 orphans, 0 temp files: ok"
            )]
        );
    }

    #[test]
    fn an_empty_store_passes() {
        let fx = fixture();
        let report = fx.check(false);
        assert!(!report.is_damaged());
        assert_eq!(
            last_line(&report),
            "checked 0 files (0 bytes): 0 missing, 0 corrupt, 0 orphans, 0 temp files: ok"
        );
    }

    #[test]
    fn a_missing_object_is_damage() {
        let fx = fixture();
        fx.add(b"kept");
        let (id, key) = fx.add(b"lost");
        fs::remove_file(fx.path_of(&key)).unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert!(report.is_damaged());
        assert_eq!(
            report.damaged_files,
            [DamagedFile {
                id,
                chat_id: CHAT,
                object_key: key.clone(),
                problem: Problem::Missing
            }]
        );
        let lines = lines(&report);
        assert_eq!(
            lines[0],
            format!("missing file {id} (chat {CHAT}): object {key}")
        );
        assert!(lines[1].starts_with("note: 1 file has missing or corrupt bytes"));
        assert_eq!(
            lines[2],
            "checked 2 files (8 bytes): 1 missing, 0 corrupt, 0 orphans, 0 temp files: damage found"
        );
    }

    #[test]
    fn a_missing_shard_directory_is_a_missing_object() {
        let fx = fixture();
        let (_, key) = fx.add(b"x");
        let shard = fx.path_of(&key).parent().map(Path::to_path_buf);
        fs::remove_dir_all(shard.unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert_eq!(report.missing(), 1, "{report}");
    }

    #[test]
    fn a_truncated_object_is_corrupt() {
        let fx = fixture();
        let (id, key) = fx.add(b"hello");
        fs::write(fx.path_of(&key), b"hel").unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert!(report.is_damaged());
        assert_eq!(report.corrupt(), 1);
        assert_eq!(
            lines(&report)[0],
            format!("corrupt file {id} (chat {CHAT}): object {key}: size 3 != recorded 5")
        );
        assert!(
            last_line(&report)
                .ends_with("0 missing, 1 corrupt, 0 orphans, 0 temp files: damage found")
        );
    }

    #[test]
    fn changed_bytes_of_the_same_size_are_corrupt() {
        let fx = fixture();
        let (id, key) = fx.add(b"hello");
        fs::write(fx.path_of(&key), b"jello").unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert_eq!(report.damaged_files[0].problem, Problem::Sha256Mismatch);
        assert_eq!(
            lines(&report)[0],
            format!("corrupt file {id} (chat {CHAT}): object {key}: sha256 mismatch")
        );
    }

    #[test]
    fn a_row_with_a_bad_key_or_a_non_file_is_corrupt() {
        let fx = fixture();
        fx.insert_row("../../etc/passwd", 1, "00");
        let bad_id = fx.conn.last_insert_rowid();
        let key = new_key();
        fs::create_dir_all(fx.path_of(&key)).unwrap_or_else(|e| panic!("{e}"));
        fx.insert_row(&key, 0, &hex::encode(Sha256::digest(b"")));
        let dir_id = fx.conn.last_insert_rowid();
        let report = fx.check(false);
        assert_eq!(report.corrupt(), 2, "{report}");
        assert_eq!(report.orphans, [], "a referenced path is never an orphan");
        let lines = lines(&report);
        assert_eq!(
            lines[0],
            format!(
                "corrupt file {bad_id} (chat {CHAT}): object \"../../etc/passwd\": not a valid object key"
            )
        );
        assert_eq!(
            lines[1],
            format!("corrupt file {dir_id} (chat {CHAT}): object {key}: not a regular file")
        );
    }

    #[test]
    fn unreferenced_entries_under_objects_are_orphans() {
        let fx = fixture();
        fx.add(b"kept");
        let stray = new_key();
        fx.write(&format!("objects/{}/{stray}", &stray[..2]), b"stray");
        fx.write("objects/loose", b"loose");
        fx.write("objects/zz/inner/deep", b"deep");
        // A referenced key in the wrong shard: the row's object is missing, the file an orphan.
        let (id, misplaced) = fx.add(b"moved");
        let wrong_shard = if misplaced.starts_with("00") {
            "01"
        } else {
            "00"
        };
        fx.write(&format!("objects/{wrong_shard}/{misplaced}"), b"moved");
        fs::remove_file(fx.path_of(&misplaced)).unwrap_or_else(|e| panic!("{e}"));

        let report = fx.check(false);
        assert!(report.is_damaged());
        let mut expected = vec![
            format!("orphan objects/{}/{stray}", &stray[..2]),
            "orphan objects/loose".to_owned(),
            "orphan objects/zz/".to_owned(),
            format!("orphan objects/{wrong_shard}/{misplaced}"),
        ];
        expected.sort();
        let orphans: Vec<String> = lines(&report)
            .into_iter()
            .filter(|l| l.starts_with("orphan "))
            .collect();
        assert_eq!(orphans, expected);
        assert_eq!(report.damaged_files.len(), 1);
        assert_eq!(report.damaged_files[0].id, id);
        assert!(
            last_line(&report)
                .ends_with("1 missing, 0 corrupt, 4 orphans, 0 temp files: damage found")
        );
    }

    #[test]
    fn empty_shards_are_not_orphans() {
        let fx = fixture();
        fs::create_dir_all(fx.storage_dir.join("objects/ab")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!fx.check(false).is_damaged());
    }

    #[test]
    fn temp_files_are_damage_unless_the_service_runs() {
        let fx = fixture();
        fx.add(b"kept");
        fx.write("tmp/abc.part", b"partial");
        let report = fx.check(false);
        assert!(report.is_damaged());
        assert!(lines(&report).contains(&"temp tmp/abc.part".to_owned()));
        assert!(last_line(&report).ends_with("0 orphans, 1 temp file: damage found"));

        let _service = fx.lock();
        let report = fx.check(false);
        assert!(report.service_running);
        assert!(!report.is_damaged(), "{report}");
        assert_eq!(lines(&report)[0], "in-flight tmp/abc.part");
        assert!(last_line(&report).ends_with("0 orphans, 0 temp files, 1 in-flight: ok"));

        fx.write("objects/ab/stray", b"x");
        assert!(
            fx.check(false).is_damaged(),
            "orphans count while the service runs"
        );
    }
    #[test]
    fn a_symlink_in_place_of_an_object_is_corrupt() {
        let fx = fixture();
        let (id, key) = fx.add(b"hello");
        let outside = fx.storage_dir.join("outside");
        fs::write(&outside, b"hello").unwrap_or_else(|e| panic!("{e}"));
        fs::remove_file(fx.path_of(&key)).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&outside, fx.path_of(&key)).unwrap_or_else(|e| panic!("{e}"));
        let report = fx.check(false);
        assert_eq!(
            lines(&report)[0],
            format!("corrupt file {id} (chat {CHAT}): object {key}: not a regular file")
        );
    }

    #[test]
    fn object_paths_match_the_storage_layout() {
        let fx = fixture();
        let key = new_key();
        assert_eq!(
            object_path_in(&fx.storage_dir.join("objects"), &key),
            fx.storage.object_path(&key)
        );
        assert_eq!(
            object_path_in(&fx.storage_dir.join("objects"), "../x"),
            None
        );
    }
}
