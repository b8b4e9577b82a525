//! `--repair`: removing the orphans and temp files the check found, durably.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::{Report, relative};

/// Removes orphans and temp files, then syncs the directories it changed so the removals
/// survive a crash. Failures are recorded, not raised: the report still shows what was done.
pub(super) fn remove_leftovers(storage_dir: &Path, report: &mut Report) {
    let mut changed = BTreeSet::new();
    for entry in report.orphans.iter_mut().chain(report.temp.iter_mut()) {
        let path = storage_dir.join(&entry.path);
        let result = if entry.is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                report.errors.push(format!("cannot remove {entry}: {err}"));
                continue;
            }
        }
        entry.removed = true;
        if let Some(parent) = path.parent() {
            changed.insert(parent.to_path_buf());
        }
    }
    for dir in changed {
        if let Err(err) = File::open(&dir).and_then(|d| d.sync_all()) {
            report.errors.push(format!(
                "cannot sync {}: {err}",
                relative(storage_dir, &dir).display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::check::tests::{CHAT, fixture, last_line, lines};
    use crate::storage::new_key;

    #[test]
    fn repair_is_refused_while_the_service_runs() {
        let fx = fixture();
        fx.write("tmp/abc.part", b"partial");
        let _service = fx.lock();
        let err = check(&fx.storage_dir, &fx.database, true)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert_eq!(
            err,
            format!(
                "chatfiles is running on {}; stop it before check --repair",
                fx.storage_dir.display()
            )
        );
        assert!(fx.storage_dir.join("tmp/abc.part").exists());
    }

    #[test]
    fn repair_removes_orphans_and_temp_files_but_keeps_rows() {
        let fx = fixture();
        let (_, kept) = fx.add(b"kept");
        let (lost_id, lost) = fx.add(b"lost");
        fs::remove_file(fx.path_of(&lost)).unwrap_or_else(|e| panic!("{e}"));
        let stray = new_key();
        let stray_path = format!("objects/{}/{stray}", &stray[..2]);
        fx.write(&stray_path, b"stray");
        fx.write("objects/zz/inner/deep", b"deep");
        fx.write("tmp/abc.part", b"partial");

        let report = fx.check(true);
        assert!(report.is_damaged(), "the missing row remains");
        assert_eq!(report.errors, Vec::<String>::new());
        let lines = lines(&report);
        for line in [
            format!("removed {stray_path}"),
            "removed objects/zz/".to_owned(),
            "removed tmp/abc.part".to_owned(),
            format!("missing file {lost_id} (chat {CHAT}): object {lost}"),
        ] {
            assert!(lines.contains(&line), "no {line:?} in {lines:#?}");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.contains("restore the objects from a backup"))
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some(
                "checked 2 files (8 bytes): 1 missing, 0 corrupt, 2 orphans, 1 temp file, \
                 3 removed: damage found"
            )
        );
        assert!(!fx.storage_dir.join(&stray_path).exists());
        assert!(!fx.storage_dir.join("objects/zz").exists());
        assert!(!fx.storage_dir.join("tmp/abc.part").exists());
        assert_eq!(fs::read(fx.path_of(&kept)).ok(), Some(b"kept".to_vec()));
        let rows: i64 = fx
            .conn
            .query_row("SELECT count(*) FROM chat_conversation_file", [], |r| {
                r.get(0)
            })
            .unwrap_or_default();
        assert_eq!(rows, 2);

        let again = fx.check(true);
        assert_eq!(again.orphans, []);
        assert_eq!(again.temp, []);
        assert_eq!(again.missing(), 1);
    }

    #[test]
    fn a_full_repair_leaves_a_clean_store() {
        let fx = fixture();
        fx.add(b"kept");
        fx.write("objects/ab/stray", b"x");
        let report = fx.check(true);
        assert!(!report.is_damaged(), "{report}");
        assert_eq!(
            last_line(&report),
            "checked 1 file (4 bytes): 0 missing, 0 corrupt, 1 orphan, 0 temp files, 1 removed: ok"
        );
        assert!(!fx.check(false).is_damaged());
    }
}
