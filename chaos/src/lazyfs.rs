//! A FUSE filesystem that keeps what was written but not synced in its own memory, so that a
//! simulated power loss can drop it (the model of LazyFS, which Jepsen uses): `disk` faults
//! `power_loss` and `slow` (`docs/CHAOS.md`).
//!
//! It passes a backing directory through. Names (create, mkdir, rename, unlink) reach the backing
//! directory at once, as on a journaled filesystem that commits metadata early; file **contents**
//! written through the mount stay in this process, per file, in 4 KiB pages, until that file is
//! fsynced (or until more than `max_dirty` bytes are held, when the file written is written back,
//! as a kernel's writeback would). [`LazyState::power_loss`] forgets every unsynced byte;
//! [`LazyState::write_back_all`] keeps them (a clean shutdown). After either, the filesystem is
//! unmounted, which also drops the kernel's page cache of it. Every fsync first waits the
//! current fsync delay (a slow disk).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const PAGE: u64 = 4096;
const TTL: Duration = Duration::from_secs(1);

/// What a file holds that its backing file does not yet.
struct Dirty {
    /// Pages written since the last sync, whole (read from the backing file where not written).
    pages: BTreeMap<u64, Box<[u8]>>,
    /// The file's size as its writers see it.
    size: u64,
    /// Bytes of the backing file that still hold the file's data (a truncation in memory
    /// makes the backing bytes past it stale).
    valid: u64,
}

/// Counts for the log line a fault prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unsynced {
    pub files: usize,
    pub bytes: u64,
}

/// The filesystem's state, shared by the FUSE session and the process that injects faults.
pub struct LazyState {
    backing: PathBuf,
    /// Inode number to path relative to `backing` (root: empty path, inode 1).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_inode: u64,
    dirty: HashMap<u64, Dirty>,
    dirty_bytes: u64,
    max_dirty: u64,
    files: HashMap<u64, File>,
}

fn errno(error: io::Error) -> Errno {
    Errno::from(error)
}

fn time(seconds: i64, nanos: i64) -> SystemTime {
    if seconds < 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::new(seconds as u64, nanos.clamp(0, 999_999_999) as u32)
}

fn attr_of(inode: u64, meta: &Metadata, size: Option<u64>) -> FileAttr {
    let kind = if meta.is_dir() {
        FileType::Directory
    } else if meta.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(inode),
        size: size.unwrap_or(meta.len()),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: PAGE as u32,
        flags: 0,
    }
}

/// Reads up to `buf.len()` bytes at `offset`, stopping early at the end of the file.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl LazyState {
    /// A state over `backing`, writing a file back once more than `max_dirty` bytes are held.
    pub fn new(backing: &Path, max_dirty: u64) -> LazyState {
        LazyState {
            backing: backing.to_path_buf(),
            paths: HashMap::from([(1, PathBuf::new())]),
            inodes: HashMap::from([(PathBuf::new(), 1)]),
            next_inode: 2,
            dirty: HashMap::new(),
            dirty_bytes: 0,
            max_dirty,
            files: HashMap::new(),
        }
    }

    fn relative(&self, inode: u64) -> Result<&PathBuf, Errno> {
        self.paths.get(&inode).ok_or(Errno::ENOENT)
    }

    fn full(&self, inode: u64) -> Result<PathBuf, Errno> {
        Ok(self.backing.join(self.relative(inode)?))
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.relative(parent)?.join(name))
    }

    fn inode_for(&mut self, relative: PathBuf) -> u64 {
        if let Some(inode) = self.inodes.get(&relative) {
            return *inode;
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.paths.insert(inode, relative.clone());
        self.inodes.insert(relative, inode);
        inode
    }

    /// Forgets the file at `relative` and what it held unsynced (it was removed or replaced).
    fn forget_path(&mut self, relative: &Path) {
        if let Some(inode) = self.inodes.remove(relative) {
            self.paths.remove(&inode);
            self.files.remove(&inode);
            if let Some(dirty) = self.dirty.remove(&inode) {
                self.dirty_bytes -= dirty.pages.len() as u64 * PAGE;
            }
        }
    }

    fn attr(&self, inode: u64) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.full(inode)?).map_err(errno)?;
        Ok(attr_of(
            inode,
            &meta,
            self.dirty.get(&inode).map(|dirty| dirty.size),
        ))
    }

    fn entry(&mut self, relative: PathBuf) -> Result<FileAttr, Errno> {
        std::fs::symlink_metadata(self.backing.join(&relative)).map_err(errno)?;
        let inode = self.inode_for(relative);
        self.attr(inode)
    }

    fn open_file(&mut self, inode: u64) -> Result<(), Errno> {
        if !self.files.contains_key(&inode) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.full(inode)?)
                .map_err(errno)?;
            self.files.insert(inode, file);
        }
        Ok(())
    }

    /// The file's unsynced state, started from its backing file.
    fn dirty_mut(&mut self, inode: u64) -> Result<&mut Dirty, Errno> {
        self.open_file(inode)?;
        if !self.dirty.contains_key(&inode) {
            let len = self.files[&inode].metadata().map_err(errno)?.len();
            self.dirty.insert(
                inode,
                Dirty {
                    pages: BTreeMap::new(),
                    size: len,
                    valid: len,
                },
            );
        }
        Ok(self.dirty.get_mut(&inode).expect("inserted above"))
    }

    /// `size` bytes at `offset` as the file's writers see them.
    pub fn read(&mut self, inode: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        self.open_file(inode)?;
        let file = &self.files[&inode];
        let (len, valid) = match self.dirty.get(&inode) {
            Some(dirty) => (dirty.size, dirty.valid),
            None => {
                let len = file.metadata().map_err(errno)?.len();
                (len, len)
            }
        };
        let end = len.min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let backed = end.min(valid);
        if offset < backed {
            read_at(file, &mut buf[..(backed - offset) as usize], offset).map_err(errno)?;
        }
        if let Some(dirty) = self.dirty.get(&inode) {
            for (index, page) in dirty.pages.range(offset / PAGE..=(end - 1) / PAGE) {
                let start = (index * PAGE).max(offset);
                let stop = ((index + 1) * PAGE).min(end);
                buf[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(
                    &page[(start - index * PAGE) as usize..(stop - index * PAGE) as usize],
                );
            }
        }
        Ok(buf)
    }

    /// Writes `data` at `offset` into memory; written back once too much is held.
    pub fn write(&mut self, inode: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        self.dirty_mut(inode)?;
        let file = &self.files[&inode];
        let dirty = self.dirty.get_mut(&inode).expect("made above");
        let end = offset + data.len() as u64;
        let mut added = 0;
        for index in offset / PAGE..=(end - 1) / PAGE {
            if !dirty.pages.contains_key(&index) {
                let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
                let start = index * PAGE;
                if start < dirty.valid {
                    let n = PAGE.min(dirty.valid - start) as usize;
                    read_at(file, &mut page[..n], start).map_err(errno)?;
                }
                dirty.pages.insert(index, page);
                added += PAGE;
            }
            let page = dirty.pages.get_mut(&index).expect("inserted above");
            let start = (index * PAGE).max(offset);
            let stop = ((index + 1) * PAGE).min(end);
            page[(start - index * PAGE) as usize..(stop - index * PAGE) as usize]
                .copy_from_slice(&data[(start - offset) as usize..(stop - offset) as usize]);
        }
        dirty.size = dirty.size.max(end);
        self.dirty_bytes += added;
        if self.dirty_bytes > self.max_dirty {
            self.write_back(inode, false)?;
        }
        Ok(())
    }

    /// Sets the file's size in memory (bytes past it are gone; bytes added read as zeros).
    pub fn truncate(&mut self, inode: u64, size: u64) -> Result<(), Errno> {
        let dirty = self.dirty_mut(inode)?;
        if size < dirty.size {
            let before = dirty.pages.len();
            dirty.pages.retain(|index, _| index * PAGE < size);
            if let Some(page) = dirty.pages.get_mut(&(size / PAGE)) {
                page[(size % PAGE) as usize..].fill(0);
            }
            let removed = (before - dirty.pages.len()) as u64 * PAGE;
            dirty.valid = dirty.valid.min(size);
            dirty.size = size;
            self.dirty_bytes -= removed;
        } else {
            dirty.valid = dirty.valid.min(dirty.size);
            dirty.size = size;
        }
        Ok(())
    }

    /// Writes the file's unsynced data to its backing file, and fsyncs it when `sync`.
    pub fn write_back(&mut self, inode: u64, sync: bool) -> Result<(), Errno> {
        if !self.dirty.contains_key(&inode) && !sync {
            return Ok(());
        }
        self.open_file(inode)?;
        if let Some(dirty) = self.dirty.remove(&inode) {
            self.dirty_bytes -= dirty.pages.len() as u64 * PAGE;
            let file = &self.files[&inode];
            let result = (|| {
                if file.metadata()?.len() > dirty.valid {
                    file.set_len(dirty.valid)?;
                }
                for (index, page) in &dirty.pages {
                    let start = index * PAGE;
                    if start < dirty.size {
                        let n = PAGE.min(dirty.size - start) as usize;
                        file.write_all_at(&page[..n], start)?;
                    }
                }
                file.set_len(dirty.size)
            })();
            result.map_err(errno)?;
        }
        if sync {
            self.files[&inode].sync_data().map_err(errno)?;
        }
        Ok(())
    }

    /// What is held unsynced now.
    pub fn unsynced(&self) -> Unsynced {
        Unsynced {
            files: self.dirty.len(),
            bytes: self.dirty_bytes,
        }
    }

    /// A power loss: every byte written and not synced is forgotten; what was forgotten.
    pub fn power_loss(&mut self) -> Unsynced {
        let lost = self.unsynced();
        self.dirty.clear();
        self.dirty_bytes = 0;
        self.files.clear();
        lost
    }

    /// A clean shutdown: every unsynced byte written back and synced; the first error.
    pub fn write_back_all(&mut self) -> Result<Unsynced, Errno> {
        let kept = self.unsynced();
        let inodes: Vec<u64> = self.dirty.keys().copied().collect();
        for inode in inodes {
            self.write_back(inode, true)?;
        }
        Ok(kept)
    }

    fn rename(&mut self, from: PathBuf, to: PathBuf, flags: RenameFlags) -> Result<(), Errno> {
        let (source, target) = (self.backing.join(&from), self.backing.join(&to));
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && target.symlink_metadata().is_ok() {
            return Err(Errno::EEXIST);
        }
        std::fs::rename(&source, &target).map_err(errno)?;
        self.forget_path(&to);
        let moved: Vec<(PathBuf, u64)> = self
            .inodes
            .iter()
            .filter(|(path, _)| path.starts_with(&from))
            .map(|(path, inode)| (path.clone(), *inode))
            .collect();
        for (path, inode) in moved {
            let rest = path.strip_prefix(&from).expect("filtered on the prefix");
            // `join` of an empty path would add a trailing slash ("not a directory").
            let renamed = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
            self.inodes.remove(&path);
            self.inodes.insert(renamed.clone(), inode);
            self.paths.insert(inode, renamed);
        }
        Ok(())
    }

    fn create(&mut self, relative: PathBuf, mode: u32, flags: i32) -> Result<FileAttr, Errno> {
        let path = self.backing.join(&relative);
        let existed = path.symlink_metadata().is_ok();
        OpenOptions::new()
            .write(true)
            .create(true)
            .create_new(flags & libc::O_EXCL != 0)
            .mode(mode)
            .open(&path)
            .map_err(errno)?;
        let inode = self.inode_for(relative);
        if existed && flags & libc::O_TRUNC != 0 {
            self.truncate(inode, 0)?;
        }
        self.attr(inode)
    }
}

/// The FUSE filesystem over a shared [`LazyState`].
pub struct LazyFs {
    state: Arc<Mutex<LazyState>>,
    fsync_delay_ms: Arc<AtomicU64>,
}

impl LazyFs {
    pub fn new(state: Arc<Mutex<LazyState>>, fsync_delay_ms: Arc<AtomicU64>) -> LazyFs {
        LazyFs {
            state,
            fsync_delay_ms,
        }
    }

    fn state(&self) -> MutexGuard<'_, LazyState> {
        // A panic inside one request leaves the maps consistent (each request changes them
        // last); go on with them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes `name` under `parent` from the backing directory with `remove` (a file or an
    /// empty directory), forgetting what it held.
    fn remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        remove: fn(&Path) -> io::Result<()>,
    ) -> Result<(), Errno> {
        let mut state = self.state();
        let relative = state.child(parent.0, name)?;
        remove(&state.backing.join(&relative)).map_err(errno)?;
        state.forget_path(&relative);
        Ok(())
    }

    fn slow(&self) {
        let delay = self.fsync_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(error) => reply.error(error),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(error),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        let result = state
            .child(parent.0, name)
            .and_then(|path| state.entry(path));
        reply_entry(reply, result);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let result = (|| {
            let path = state.full(ino.0)?;
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(&path, uid, gid).map_err(errno)?;
            }
            if let Some(size) = size {
                state.truncate(ino.0, size)?;
            }
            state.attr(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|relative| {
            let path = state.backing.join(&relative);
            std::fs::create_dir(&path).map_err(errno)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !umask))
                .map_err(errno)?;
            state.entry(relative)
        });
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.remove(parent, name, |p| std::fs::remove_file(p)),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove(parent, name, |p| std::fs::remove_dir(p)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|from| {
            let to = state.child(newparent.0, newname)?;
            state.rename(from, to, flags)
        });
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let result = if flags.0 & libc::O_TRUNC != 0 {
            state.truncate(ino.0, 0)
        } else {
            state.open_file(ino.0)
        };
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(error) => reply.error(error),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.slow();
        reply_empty(reply, self.state().write_back(ino.0, true));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.state();
        let listed = (|| {
            let relative = state.relative(ino.0)?.clone();
            let mut names: Vec<(String, FileType)> =
                std::fs::read_dir(state.backing.join(&relative))
                    .map_err(errno)?
                    .filter_map(Result::ok)
                    .map(|entry| {
                        let kind = match entry.file_type() {
                            Ok(kind) if kind.is_dir() => FileType::Directory,
                            Ok(kind) if kind.is_symlink() => FileType::Symlink,
                            _ => FileType::RegularFile,
                        };
                        (entry.file_name().to_string_lossy().into_owned(), kind)
                    })
                    .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            Ok::<_, Errno>((relative, names))
        })();
        let (relative, names) = match listed {
            Ok(listed) => listed,
            Err(error) => return reply.error(error),
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (ino.0, FileType::Directory, "..".to_string()),
        ];
        for (name, kind) in names {
            let inode = state.inode_for(relative.join(&name));
            entries.push((inode, kind, name));
        }
        for (index, (inode, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(inode), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.slow();
        let result = self.state().full(ino.0).and_then(|path| {
            File::open(path)
                .and_then(|dir| dir.sync_all())
                .map_err(errno)
        });
        reply_empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let backing = self.state().backing.clone();
        let Ok(path) = std::ffi::CString::new(backing.as_os_str().as_encoded_bytes()) else {
            return reply.error(Errno::EINVAL);
        };
        // SAFETY: `path` is a NUL-terminated string and `stat` a plain struct statvfs fills.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return reply.error(errno(io::Error::last_os_error()));
        }
        reply.statfs(
            stat.f_blocks,
            stat.f_bfree,
            stat.f_bavail,
            stat.f_files,
            stat.f_ffree,
            stat.f_bsize as u32,
            stat.f_namemax as u32,
            stat.f_frsize as u32,
        );
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let result = state
            .child(parent.0, name)
            .and_then(|relative| state.create(relative, mode & !umask, flags));
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(error) => reply.error(error),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Space is not reserved; only the size a plain fallocate sets is kept.
        let result = if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
            Ok(())
        } else if mode == 0 {
            let mut state = self.state();
            state
                .dirty_mut(ino.0)
                .map(|dirty| dirty.size)
                .and_then(|size| {
                    if offset + length > size {
                        state.truncate(ino.0, offset + length)
                    } else {
                        Ok(())
                    }
                })
        } else {
            Err(Errno::EOPNOTSUPP)
        };
        reply_empty(reply, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..20_000, proptest::collection::vec(any::<u8>(), 1..6000))
                .prop_map(|(offset, data)| Op::Write(offset, data)),
            1 => (0u64..24_000).prop_map(Op::Truncate),
            1 => Just(Op::Sync),
        ]
    }

    fn apply(model: &mut Vec<u8>, op: &Op) {
        match op {
            Op::Write(offset, data) => {
                let end = *offset as usize + data.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[*offset as usize..end].copy_from_slice(data);
            }
            Op::Truncate(size) => model.resize(*size as usize, 0),
            Op::Sync => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Reads see every write and truncation; a power loss leaves the backing file exactly
        /// as it was at the last sync (no writeback threshold here: with one, unsynced writes
        /// may reach the backing file early, as a kernel's writeback would).
        #[test]
        fn reads_see_writes_and_a_power_loss_keeps_exactly_the_synced_bytes(
            ops in proptest::collection::vec(op(), 1..40),
            initial in proptest::collection::vec(any::<u8>(), 0..9000),
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("f"), &initial).unwrap();
            let mut state = LazyState::new(dir.path(), u64::MAX);
            let inode = state.entry(PathBuf::from("f")).unwrap().ino.0;
            let (mut model, mut synced) = (initial.clone(), initial);
            for op in &ops {
                match op {
                    Op::Write(offset, data) => state.write(inode, *offset, data).unwrap(),
                    Op::Truncate(size) => state.truncate(inode, *size).unwrap(),
                    Op::Sync => state.write_back(inode, true).unwrap(),
                }
                apply(&mut model, op);
                if matches!(op, Op::Sync) {
                    synced = model.clone();
                }
                prop_assert_eq!(state.attr(inode).unwrap().size, model.len() as u64);
                let read = state.read(inode, 0, u32::MAX).unwrap();
                prop_assert!(read == model, "read differs from the writes after {:?}", op);
            }
            state.power_loss();
            prop_assert!(std::fs::read(dir.path().join("f")).unwrap() == synced);
        }

        /// A clean shutdown leaves the backing file as the writers saw it, also when the
        /// writeback threshold wrote some of it back early.
        #[test]
        fn a_clean_shutdown_writes_everything_back(
            ops in proptest::collection::vec(op(), 1..40),
            max_dirty in 4096u64..40_000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("f"), b"start").unwrap();
            let mut state = LazyState::new(dir.path(), max_dirty);
            let inode = state.entry(PathBuf::from("f")).unwrap().ino.0;
            let mut model = b"start".to_vec();
            for op in &ops {
                match op {
                    Op::Write(offset, data) => state.write(inode, *offset, data).unwrap(),
                    Op::Truncate(size) => state.truncate(inode, *size).unwrap(),
                    Op::Sync => state.write_back(inode, true).unwrap(),
                }
                apply(&mut model, op);
                let read = state.read(inode, 0, u32::MAX).unwrap();
                prop_assert!(read == model, "read differs from the writes after {:?}", op);
            }
            state.write_back_all().unwrap();
            prop_assert!(std::fs::read(dir.path().join("f")).unwrap() == model);
        }
    }

    #[test]
    fn a_file_renamed_over_another_keeps_its_unsynced_data_and_the_other_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        std::fs::write(dir.path().join("b"), b"old").unwrap();
        let mut state = LazyState::new(dir.path(), u64::MAX);
        let a = state.entry(PathBuf::from("a")).unwrap().ino.0;
        let b = state.entry(PathBuf::from("b")).unwrap().ino.0;
        state.write(b, 0, b"unsynced").unwrap();
        state.write(a, 0, b"new").unwrap();
        state
            .rename(PathBuf::from("a"), PathBuf::from("b"), RenameFlags::empty())
            .unwrap();
        assert_eq!(state.read(a, 0, 100).unwrap(), b"new");
        assert_eq!(
            state.unsynced(),
            Unsynced {
                files: 1,
                bytes: PAGE
            }
        );
        assert_eq!(state.entry(PathBuf::from("b")).unwrap().ino.0, a);
        assert_eq!(
            state.power_loss(),
            Unsynced {
                files: 1,
                bytes: PAGE
            }
        );
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"");
    }
}
