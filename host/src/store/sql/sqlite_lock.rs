//! One server per SQLite database. A second Switchyard on the same file would take back the first one's leases
//! at start (`release_foreign_leases` assumes they are a crashed run's) and send deliveries in flight a second
//! time; SQLite's own locks only keep their writes apart. `run` takes the lock; a tool that only opens the
//! store (a test reading the database, say) does not need it.
//!
//! The lock is on a file of its own beside the database (`<database>.lock`), never on the database file: closing
//! any descriptor of the database releases SQLite's POSIX locks on it in this process. The lock file stays after
//! the process ends, as deleting it could let two processes each lock a different file; the kernel drops the
//! lock itself when its holder exits, however it exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use super::dialect::{is_in_memory, Dialect};

use crate::store::{StoreError, StoreResult};

/// Held while the server runs; dropping it releases the lock.
#[derive(Debug)]
pub struct ProcessLock {
    _file: File,
}

/// Locks the SQLite database `url` names for this process (None for PostgreSQL, which several nodes share, and
/// for an in-memory database, which no other process can open), or says who holds it.
pub fn lock_database(url: &str) -> StoreResult<Option<ProcessLock>> {
    match Dialect::from_url(url)? {
        Dialect::Sqlite if !is_in_memory(url) => lock(url).map(Some),
        Dialect::Sqlite | Dialect::Postgres => Ok(None),
    }
}

fn lock(url: &str) -> StoreResult<ProcessLock> {
    let path = lock_path(url)?;
    let file =
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| {
            StoreError::Unavailable(format!("cannot open the SQLite lock file {}: {e}", path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(ProcessLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "the SQLite database is in use by another Switchyard process (lock file {}); the embedded database \
             serves one process, use PostgreSQL for several nodes",
            path.display()
        ))),
        Err(TryLockError::Error(e)) => {
            Err(StoreError::Unavailable(format!("cannot lock the SQLite lock file {}: {e}", path.display())))
        }
    }
}

fn lock_path(url: &str) -> StoreResult<PathBuf> {
    let options = SqliteConnectOptions::from_str(url)?;
    let mut path = canonical(options.get_filename()).into_os_string();
    path.push(".lock");
    Ok(PathBuf::from(path))
}

/// The database's path with symlinks and `..` resolved, so that every spelling of it finds the same lock: the
/// file's own when it exists, else its directory's (the first start creates the file).
fn canonical(database: &Path) -> PathBuf {
    if let Ok(path) = std::fs::canonicalize(database) {
        return path;
    }
    let directory = match database.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(directory), database.file_name()) {
        (Ok(directory), Some(name)) => directory.join(name),
        _ => database.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_lock_file_sits_beside_the_database_however_its_path_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("data")).unwrap();
        std::os::unix::fs::symlink(real.join("data"), real.join("link")).unwrap();
        let expected = real.join("data/x.db.lock");
        for spelling in ["data/x.db", "link/x.db", "data/../link/x.db"] {
            let url = format!("sqlite://{}?mode=rwc", real.join(spelling).display());
            assert_eq!(lock_path(&url).unwrap(), expected, "{spelling}, before the file exists");
        }
        std::fs::write(real.join("data/x.db"), b"").unwrap();
        std::os::unix::fs::symlink(real.join("data/x.db"), real.join("alias.db")).unwrap();
        let url = format!("sqlite://{}", real.join("alias.db").display());
        assert_eq!(lock_path(&url).unwrap(), expected, "a symlink to the file");
    }

    #[test]
    fn only_sqlite_files_are_locked() {
        assert!(lock_database("postgres://u@h/db").unwrap().is_none());
        assert!(lock_database("sqlite::memory:").unwrap().is_none());
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let first = lock(&url).unwrap();
        let refused = lock(&url).unwrap_err().to_string();
        assert!(refused.contains("in use by another Switchyard process"), "{refused}");
        assert!(refused.contains("x.db.lock"), "{refused}");
        drop(first);
        lock(&url).expect("free again once the first holder is gone");
    }
}
