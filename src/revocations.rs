//! A counter of "sessions were ended behind the service's back", shared between processes.
//!
//! The service remembers the sessions it has read (see [`crate::session`]), so that a request
//! needs no database read to know who sent it. What ends sessions without going through the
//! service's own session store — `chatfiles user disable`, run as another process, and a
//! password change — bumps this counter after it commits; the service reads the counter on every
//! request and, when it moved, reads sessions from the database again. So a disabled account is
//! locked out at once, not when a remembered session runs out.
//!
//! The counter is eight bytes at the start of a file beside the database
//! (`<database>-sessions`), mapped into memory by every process that uses it: reading it is a
//! plain atomic load, no system call on the request path.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;

const LEN: u64 = size_of::<u64>() as u64;

/// The shared counter, mapped.
pub struct Revocations {
    map: MmapRaw,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("count", &self.count())
            .finish()
    }
}

/// The counter's file for a database.
pub fn path_for(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-sessions");
    PathBuf::from(name)
}

impl Revocations {
    /// Maps the counter of `database`. The service creates its file (owner-only) when missing;
    /// the commands do not (`create` false): without the file, no service has it mapped, and a
    /// file they created, as root say, could keep the service from mapping it.
    pub fn open(database: &Path, create: bool) -> io::Result<Self> {
        let path = path_for(database);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        // Two processes creating it at once both find it short and extend it with zeros; a
        // counter already written is never shortened.
        if file.metadata()?.len() < LEN {
            file.set_len(LEN)?;
        }
        // The mapping covers bytes that exist (the file is at least LEN long). Nothing of ours
        // shortens the file; one shortened by hand would fault the process, as any mapped
        // file does.
        let map = memmap2::MmapOptions::new()
            .len(LEN as usize)
            .map_raw(&file)?;
        Ok(Self { map })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the map is page-aligned (so aligned for u64), LEN bytes long and lives as
        // long as `self`; these bytes are only ever accessed atomically, here and by the other
        // processes mapping the file.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().cast::<u64>()) }
    }

    /// How many times sessions were ended behind the service's back.
    pub fn count(&self) -> u64 {
        self.counter().load(Ordering::SeqCst)
    }

    /// Records that sessions were ended: call it after the change has committed.
    pub fn bump(&self) {
        self.counter().fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_in_one_mapping_shows_in_another() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let database = dir.path().join("chatfiles.db");
        // The commands never create the file.
        let missing = Revocations::open(&database, false).map(|_| ());
        assert_eq!(missing.map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
        let service = Revocations::open(&database, true)?;
        let before = service.count();
        // As `chatfiles user disable` does, from its own mapping of the same file.
        Revocations::open(&database, false)?.bump();
        assert_eq!(service.count(), before + 1);
        // Reopening keeps the count.
        assert_eq!(Revocations::open(&database, true)?.count(), before + 1);
        assert_eq!(
            path_for(&database),
            dir.path().join("chatfiles.db-sessions")
        );
        Ok(())
    }
}
