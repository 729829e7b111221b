//! A SQLite VFS that hands each commit's WAL frames to the kernel in one `pwrite` instead of two per frame.
//!
//! SQLite writes a WAL frame as two calls, its 24-byte header and then its page, so a 40-page commit makes about
//! 80 system calls before its one `fdatasync`, and each call pays the kernel's per-write costs (the inode lock,
//! timestamps, dirty accounting) again. This VFS wraps the platform's default one. For WAL files only, it
//! gathers writes that continue one another in memory and issues them as one write: at a commit frame (its
//! header, then its page), and before anything could observe the file (a sync, a read, a truncation, a size query, a file
//! control or a close), at a gap, and at a size limit.
//!
//! Durability is unchanged: SQLite promises nothing about a write until its sync, and every sync first writes
//! what was gathered. Other connections never read gathered bytes either. They read only committed frames, and
//! a commit's frames are all in the file before SQLite goes on to publish them in the wal-index, whatever
//! `PRAGMA synchronous` says: the commit frame is the last one SQLite writes, and it is recognised by its
//! header (so is a commit frame's header SQLite rewrites after writing the frames). Frames of a transaction still open (a large one spills pages to the WAL) may stay gathered; only its
//! own connection reads them, through this file, which writes them out first. A process that dies with bytes
//! gathered has lost only frames that were never synced and never committed, as if it had died before writing
//! them.
//!
//! Only the writer connection opens the database through this VFS (see `Dialect::open_writer`).

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// The name the writer's connection URL asks for (`?vfs=`).
pub(super) const NAME: &str = "switchyard-wal";
const NAME_C: &CStr = c"switchyard-wal";

/// The most bytes one write hands to the inner VFS. The unix VFS masks a write's length to 17 bits
/// (`seekAndWriteFd`), so a longer write would be cut short and fail as a full disk. It also bounds what a long
/// transaction that spills pages to the WAL holds in memory.
const WRITE_LIMIT: usize = (1 << 17) - 1;

/// Registers the VFS with SQLite once per process; later calls return the first call's result.
pub(super) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED.get_or_init(register_once).clone()
}

/// The platform's VFS that every call ends in; set once, before the wrapper is registered.
static INNER: OnceLock<InnerVfs> = OnceLock::new();

struct InnerVfs(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite's VFS objects are immutable once registered and safe to call from any thread.
unsafe impl Send for InnerVfs {}
unsafe impl Sync for InnerVfs {}

fn register_once() -> Result<(), String> {
    // SAFETY: sqlite3_vfs_find initialises SQLite if needed and returns the default VFS, which lives forever.
    let inner = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if inner.is_null() {
        return Err("SQLite has no default VFS".into());
    }
    // SAFETY: `inner` is a valid, registered VFS.
    let inner_vfs = unsafe { *inner };
    if inner_vfs.iVersion < 1 || inner_vfs.xOpen.is_none() {
        return Err("SQLite's default VFS cannot open files".into());
    }
    INNER.set(InnerVfs(inner)).map_err(|_| "the WAL VFS was set up twice".to_string())?;
    // Everything but opening a file is the inner VFS's own function. It is handed this VFS rather than its
    // own, which the unix VFS's functions other than xOpen ignore; pAppData stays the inner VFS's for the rest.
    let vfs = Box::new(ffi::sqlite3_vfs {
        szOsFile: c_int::try_from(file_size(inner_vfs.szOsFile)).map_err(|_| "file object too large")?,
        pNext: ptr::null_mut(),
        zName: NAME_C.as_ptr(),
        xOpen: Some(open),
        ..inner_vfs
    });
    // SAFETY: the VFS object is leaked, so it outlives every connection, as SQLite requires.
    let rc = unsafe { ffi::sqlite3_vfs_register(Box::into_raw(vfs), 0) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("registering the WAL VFS failed with SQLite code {rc}"))
    }
}

fn inner_vfs() -> *mut ffi::sqlite3_vfs {
    INNER.get().expect("the WAL VFS opens files only after registration").0
}

/// SQLite's handle for a file opened through this VFS: the wrapper's fields, then the inner VFS's file object.
#[repr(C)]
struct WrappedFile {
    /// First, so SQLite sees a `sqlite3_file`: it reads only `pMethods`.
    base: ffi::sqlite3_file,
    /// `Some` for WAL files.
    gathered: Option<Box<Gathered>>,
}

/// The inner file object starts at the first 8-byte boundary after the wrapper's fields.
const INNER_OFFSET: usize = std::mem::size_of::<WrappedFile>().next_multiple_of(8);

fn file_size(inner: c_int) -> usize {
    INNER_OFFSET + usize::try_from(inner).unwrap_or(0)
}

/// # Safety
/// `file` points to a `WrappedFile` with its inner file object behind it.
unsafe fn inner_file(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().add(INNER_OFFSET).cast()
}

/// # Safety
/// `file` is an open inner file object.
unsafe fn methods<'a>(file: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    &*(*file).pMethods
}

/// The size of a WAL frame's header, which SQLite writes on its own before the frame's page.
const FRAME_HEADER_BYTES: usize = 24;

/// Whether a write is the header of a commit frame: a frame header whose second field, the database's size
/// in pages after the commit, is not zero (SQLite's WAL format; zero marks a frame that does not commit).
fn is_commit_frame_header(data: &[u8]) -> bool {
    data.len() == FRAME_HEADER_BYTES && data[4..8] != [0; 4]
}

/// Consecutive writes not yet handed to the inner file.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    offset: i64,
    bytes: Vec<u8>,
    /// The last write was a commit frame's header, so the next one, its page, ends the commit.
    commit_page_next: bool,
}

impl Gathered {
    /// Adds a write. What is gathered goes to `write_out` before this write when this one does not continue it
    /// or would take it past [`WRITE_LIMIT`], and with this write when this one is a commit frame's header or
    /// page.
    pub(super) fn add(&mut self, data: &[u8], offset: i64, mut write_out: impl FnMut(&[u8], i64) -> c_int) -> c_int {
        let continues = offset == self.end() && self.bytes.len() + data.len() <= WRITE_LIMIT;
        if !continues {
            let rc = self.drain(&mut write_out);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if self.bytes.is_empty() {
            self.offset = offset;
        }
        self.bytes.extend_from_slice(data);
        // Out with the commit frame's header at once, not only with its page: SQLite also rewrites the headers
        // of a transaction's frames after writing them (when the transaction wrote a page twice), the commit
        // frame's last, and no page follows that one.
        let commit_header = is_commit_frame_header(data);
        let commit_page = std::mem::replace(&mut self.commit_page_next, commit_header);
        if commit_header || commit_page {
            return self.drain(&mut write_out);
        }
        ffi::SQLITE_OK
    }

    /// Hands everything gathered to `write_out` and forgets it, keeping the buffer's memory for the next commit.
    /// On failure the bytes are forgotten too: SQLite treats a failed write as an I/O error and rolls back.
    pub(super) fn drain(&mut self, write_out: &mut impl FnMut(&[u8], i64) -> c_int) -> c_int {
        if self.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = write_out(&self.bytes, self.offset);
        self.bytes.clear();
        rc
    }

    fn end(&self) -> i64 {
        self.offset + self.bytes.len() as i64
    }
}

/// # Safety
/// `file` is an open `WrappedFile`.
unsafe fn write_out(file: *mut ffi::sqlite3_file) -> c_int {
    let wrapped = &mut *file.cast::<WrappedFile>();
    let Some(gathered) = wrapped.gathered.as_deref_mut() else { return ffi::SQLITE_OK };
    gathered.drain(&mut inner_writer(inner_file(file)))
}

/// Writes gathered bytes to the inner file.
///
/// # Safety
/// `inner` is an open inner file object, and stays open while the writer is used.
unsafe fn inner_writer(inner: *mut ffi::sqlite3_file) -> impl FnMut(&[u8], i64) -> c_int {
    let x_write = methods(inner).xWrite.expect("every VFS file can be written");
    move |bytes, offset| match c_int::try_from(bytes.len()) {
        // SAFETY: as promised by the caller of `inner_writer`; `bytes` is valid for `len` bytes.
        Ok(len) => unsafe { x_write(inner, bytes.as_ptr().cast(), len, offset) },
        Err(_) => ffi::SQLITE_IOERR_WRITE,
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let inner_vfs = inner_vfs();
    let inner = inner_file(file);
    ptr::write(
        file.cast::<WrappedFile>(),
        WrappedFile { base: ffi::sqlite3_file { pMethods: ptr::null() }, gathered: None },
    );
    let x_open = (*inner_vfs).xOpen.expect("checked at registration");
    let rc = x_open(inner_vfs, name, inner, flags, out_flags);
    if (*inner).pMethods.is_null() {
        // Nothing to close: SQLite calls no method of a file whose pMethods is NULL.
        return rc;
    }
    if methods(inner).iVersion < 3 {
        // The wrapper's method table is version 3 and forwards every call; a shorter inner table lacks some.
        if let Some(close) = methods(inner).xClose {
            close(inner);
        }
        return ffi::SQLITE_CANTOPEN;
    }
    let wrapped = &mut *file.cast::<WrappedFile>();
    if flags & ffi::SQLITE_OPEN_WAL != 0 {
        wrapped.gathered = Some(Box::default());
    }
    wrapped.base.pMethods = &METHODS;
    rc
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size_of),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Calls the inner file's method `$method`; after `write out first;`, once this file's gathered bytes are written.
macro_rules! forward {
    ($file:ident, $method:ident $(, $arg:expr)*) => {{
        let inner = inner_file($file);
        (methods(inner).$method.expect(concat!("a version 3 VFS file has ", stringify!($method))))(inner $(, $arg)*)
    }};
    (write out first; $file:ident, $method:ident $(, $arg:expr)*) => {{
        let rc = write_out($file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        forward!($file, $method $(, $arg)*)
    }};
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let written = write_out(file);
    let closed = forward!(file, xClose);
    ptr::drop_in_place(file.cast::<WrappedFile>());
    if written != ffi::SQLITE_OK {
        written
    } else {
        closed
    }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    forward!(write out first; file, xRead, buf, amount, offset)
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: i64) -> c_int {
    let wrapped = &mut *file.cast::<WrappedFile>();
    let Some(gathered) = wrapped.gathered.as_deref_mut() else {
        return forward!(file, xWrite, buf, amount, offset);
    };
    let data = std::slice::from_raw_parts(buf.cast::<u8>(), usize::try_from(amount).unwrap_or(0));
    gathered.add(data, offset, inner_writer(inner_file(file)))
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    forward!(write out first; file, xTruncate, size)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    forward!(write out first; file, xSync, flags)
}

unsafe extern "C" fn file_size_of(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    forward!(write out first; file, xFileSize, size)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xLock, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xUnlock, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, reserved: *mut c_int) -> c_int {
    forward!(file, xCheckReservedLock, reserved)
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    forward!(write out first; file, xFileControl, op, arg)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xSectorSize)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xDeviceCharacteristics)
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(file, xShmMap, page, page_size, extend, out)
}

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    forward!(file, xShmLock, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    forward!(file, xShmBarrier)
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    forward!(file, xShmUnmap, delete)
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    forward!(write out first; file, xFetch, offset, amount, out)
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    forward!(file, xUnfetch, offset, page)
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor, Row, SqliteConnection};

    use super::*;

    async fn connect(path: &std::path::Path, vfs: &str, synchronous: &str) -> SqliteConnection {
        register().unwrap();
        let url = format!("sqlite://{}?mode=rwc&vfs={vfs}", path.display());
        let mut connection = SqliteConnection::connect(&url).await.unwrap();
        // A small page cache, so the large transaction below spills frames to the WAL before it commits.
        for pragma in
            ["PRAGMA journal_mode = WAL", &format!("PRAGMA synchronous = {synchronous}"), "PRAGMA cache_size = 8"]
        {
            connection.execute(pragma).await.unwrap();
        }
        connection
    }

    async fn count(connection: &mut SqliteConnection) -> (i64, i64) {
        let row = sqlx::query("SELECT count(*), coalesce(sum(length(body)), 0) FROM t")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    async fn integrity(connection: &mut SqliteConnection) -> String {
        sqlx::query("PRAGMA integrity_check").fetch_one(connection).await.unwrap().get(0)
    }

    /// Every commit through the gathering VFS is whole in the files when it returns: another connection (on the
    /// platform's own VFS) sees it, and so does a copy of the files taken then, which is what a process that
    /// dies at that moment leaves behind. With `synchronous = NORMAL` no sync writes the gathered bytes out at
    /// the commit, so that case rests on the commit frame alone.
    #[tokio::test]
    async fn commits_are_in_the_files_when_they_return() {
        for synchronous in ["FULL", "NORMAL"] {
            commits_are_in_the_files_when_they_return_with(synchronous).await;
        }
    }

    async fn commits_are_in_the_files_when_they_return_with(synchronous: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gathered.db");
        let mut writer = connect(&path, NAME, synchronous).await;
        writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)").await.unwrap();
        let mut reader = connect(&path, "unix", synchronous).await;

        let mut expected = (0, 0);
        // Small commits, then one far larger than the cache and than one write to the inner VFS.
        for (rows, size) in [(1, 10), (20, 300), (3, 5000), (2000, 1000)] {
            let mut transaction = writer.begin().await.unwrap();
            for _ in 0..rows {
                sqlx::query("INSERT INTO t (body) VALUES (?)")
                    .bind("x".repeat(size))
                    .execute(&mut *transaction)
                    .await
                    .unwrap();
            }
            transaction.commit().await.unwrap();
            expected = (expected.0 + rows, expected.1 + rows * size as i64);
            assert_eq!(count(&mut reader).await, expected);

            let copy = dir.path().join(format!("copy-{rows}.db"));
            std::fs::copy(&path, &copy).unwrap();
            std::fs::copy(dir.path().join("gathered.db-wal"), dir.path().join(format!("copy-{rows}.db-wal"))).unwrap();
            let mut recovered = connect(&copy, "unix", synchronous).await;
            assert_eq!(count(&mut recovered).await, expected, "after {rows} rows, synchronous {synchronous}");
            assert_eq!(integrity(&mut recovered).await, "ok");
        }

        // A checkpoint, then the WAL starting over from its first frame, as the store's checkpointer makes it.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut reader).await.unwrap();
        writer.execute("DELETE FROM t WHERE id % 2 = 0").await.unwrap();
        let remaining = sqlx::query("SELECT count(*) FROM t").fetch_one(&mut reader).await.unwrap().get::<i64, _>(0);
        assert_eq!(remaining, (expected.0 + 1) / 2);

        writer.close().await.unwrap();
        reader.close().await.unwrap();
        let mut reopened = connect(&path, "unix", synchronous).await;
        assert_eq!(integrity(&mut reopened).await, "ok");
        assert_eq!(
            sqlx::query("SELECT count(*) FROM t").fetch_one(&mut reopened).await.unwrap().get::<i64, _>(0),
            remaining
        );
    }

    fn recorder(log: &mut Vec<(i64, Vec<u8>)>) -> impl FnMut(&[u8], i64) -> c_int + '_ {
        |bytes, offset| {
            log.push((offset, bytes.to_vec()));
            ffi::SQLITE_OK
        }
    }

    #[test]
    fn consecutive_writes_go_out_as_one() {
        let mut gathered = Gathered::default();
        let mut log = Vec::new();
        assert_eq!(gathered.add(b"head", 32, recorder(&mut log)), ffi::SQLITE_OK);
        assert_eq!(gathered.add(b"page", 36, recorder(&mut log)), ffi::SQLITE_OK);
        assert!(log.is_empty(), "nothing is written before it has to be");
        gathered.drain(&mut recorder(&mut log));
        assert_eq!(log, vec![(32, b"headpage".to_vec())]);
        gathered.drain(&mut recorder(&mut log));
        assert_eq!(log.len(), 1, "drained bytes are not written twice");
    }

    fn frame_header(database_pages_after_commit: u32) -> Vec<u8> {
        let mut header = vec![0u8; FRAME_HEADER_BYTES];
        header[0..4].copy_from_slice(&9u32.to_be_bytes());
        header[4..8].copy_from_slice(&database_pages_after_commit.to_be_bytes());
        header
    }

    #[test]
    fn a_commit_goes_out_with_its_last_page() {
        let mut gathered = Gathered::default();
        let mut log = Vec::new();
        let page = vec![1u8; 4096];
        let mut offset = 32;
        for header in [frame_header(0), frame_header(0), frame_header(12)] {
            gathered.add(&header, offset, recorder(&mut log));
            gathered.add(&page, offset + FRAME_HEADER_BYTES as i64, recorder(&mut log));
            offset += (FRAME_HEADER_BYTES + page.len()) as i64;
        }
        let frame = FRAME_HEADER_BYTES + page.len();
        let commit_page_at = 32 + 2 * frame + FRAME_HEADER_BYTES;
        assert_eq!(
            log.iter().map(|(offset, bytes)| (*offset, bytes.len())).collect::<Vec<_>>(),
            vec![(32, commit_page_at - 32), (commit_page_at as i64, page.len())],
            "three frames in two writes, the last as soon as the commit frame is complete"
        );

        // A transaction's frames before its commit frame (pages it spills) wait for the commit.
        gathered.add(&frame_header(0), offset, recorder(&mut log));
        gathered.add(&page, offset + FRAME_HEADER_BYTES as i64, recorder(&mut log));
        assert_eq!(log.len(), 2);

        // A commit frame's header rewritten on its own goes out at once.
        gathered.drain(&mut recorder(&mut log));
        gathered.add(&frame_header(13), 32 + 2 * frame as i64, recorder(&mut log));
        assert_eq!(log.len(), 4);
        assert_eq!(log[3], (32 + 2 * frame as i64, frame_header(13)));
    }

    #[test]
    fn a_gap_writes_out_what_came_before() {
        let mut gathered = Gathered::default();
        let mut log = Vec::new();
        gathered.add(b"one", 0, recorder(&mut log));
        gathered.add(b"two", 100, recorder(&mut log));
        assert_eq!(log, vec![(0, b"one".to_vec())]);
        gathered.add(b"back", 3, recorder(&mut log));
        gathered.drain(&mut recorder(&mut log));
        assert_eq!(log, vec![(0, b"one".to_vec()), (100, b"two".to_vec()), (3, b"back".to_vec())]);
    }

    #[test]
    fn no_write_out_passes_the_limit_and_failures_are_reported() {
        let mut gathered = Gathered::default();
        let mut log = Vec::new();
        let page = vec![7u8; 4096];
        let pages = 2 * WRITE_LIMIT / page.len();
        for n in 0..pages {
            gathered.add(&page, (n * page.len()) as i64, recorder(&mut log));
        }
        gathered.drain(&mut recorder(&mut log));
        assert!(log.iter().all(|(_, bytes)| bytes.len() <= WRITE_LIMIT));
        assert_eq!(log.len(), 3, "{pages} pages of 4 KiB in writes of at most 128 KiB");
        let written: Vec<u8> = log.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
        assert_eq!(written.len(), pages * page.len());
        assert_eq!(log[1].0, log[0].1.len() as i64, "each write starts where the one before ended");

        gathered.add(b"x", 0, |_, _| ffi::SQLITE_IOERR_WRITE);
        assert_eq!(gathered.drain(&mut |_: &[u8], _| ffi::SQLITE_IOERR_WRITE), ffi::SQLITE_IOERR_WRITE);
        assert_eq!(gathered.drain(&mut |_: &[u8], _| panic!("nothing is left")), ffi::SQLITE_OK);
    }
}
