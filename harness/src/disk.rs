//! Disk faults on the process backend (`kind = "disk"`, `docs/CHAOS.md`): a node's data
//! directory on a size-limited tmpfs of its own, filled with a ballast file to make the disk
//! full and emptied to free it; or on `blyan-lazyfs` (the chaos crate's FUSE layer), whose
//! fsyncs can be held (a slow disk) and whose unsynced writes a power loss drops. Mounting
//! needs root, mount(8) and, for the FUSE layer, /dev/fuse.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::testnet::record::DevnetState;

/// The file that fills a node's disk.
pub const BALLAST: &str = "disk-full.ballast";

/// Mounts a tmpfs of `size_mb` MiB on `dir` (created if missing).
pub fn mount_tmpfs(dir: &Path, size_mb: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let output = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("mount(8): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mounting a {size_mb} MiB tmpfs on {} for a disk fault needs root and mount(8): {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// The mount points at or below `dir`, deepest first (`/proc/mounts`).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|point| point.starts_with(&dir))
        .collect();
    found.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    found
}

/// Unmounts every mount at or below `dir` (a devnet's tmpfs disks); what cannot be unmounted
/// is left, and said by the next `rm` of the directory.
pub fn unmount_under(dir: &Path) {
    for point in mounts_under(dir) {
        let _ = Command::new("umount").arg(&point).status();
    }
}

/// Fills the filesystem under `dir` with a ballast file until no space is left; the bytes
/// written. Bounded by the 4 GiB a disk fault's tmpfs can have.
pub fn fill(dir: &Path) -> Result<u64, String> {
    let path = dir.join(BALLAST);
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < 4 << 30 {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    // What a partial write left in the page cache counts too: the disk is full now.
    let _ = file.sync_all();
    Ok(written)
}

/// Removes the ballast [`fill`] wrote.
pub fn free(dir: &Path) -> Result<(), String> {
    let path = dir.join(BALLAST);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Where a node's data directory keeps what survives a power loss, under `blyan-lazyfs`.
pub fn backing_dir(data: &Path) -> PathBuf {
    data.with_file_name("data.lazyfs")
}

/// The file `blyan-lazyfs` reads its fsync delay from (a slow disk).
pub fn fsync_delay_file(data: &Path) -> PathBuf {
    data.with_file_name("fsync-delay-ms")
}

/// Whether `dir` is a mount point now (`/proc/mounts`).
fn is_mount_point(dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/mounts").is_ok_and(|table| {
        table
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .any(|point| Path::new(point) == dir)
    })
}

/// Whether `pid` is a running `blyan-lazyfs`.
pub fn is_lazyfs_process(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|command| {
        command
            .split(|byte| *byte == 0)
            .next()
            .is_some_and(|first| first.ends_with(b"blyan-lazyfs"))
    })
}

/// Puts the data directory `data` on `blyan-lazyfs` (next to `node_bin`): what it held moves
/// to [`backing_dir`] first. Returns the layer's pid once the mount is there (at most 10 s);
/// its output goes to `lazyfs.log` beside the data directory.
pub fn mount_lazyfs(node_bin: &Path, data: &Path) -> Result<u32, String> {
    use std::os::unix::process::CommandExt;
    let bin = node_bin.with_file_name("blyan-lazyfs");
    if !bin.is_file() {
        return Err(format!(
            "{} missing (a slow or power-loss disk needs it): cargo build -p blyan-chaos",
            bin.display()
        ));
    }
    let backing = backing_dir(data);
    if data.exists() && !backing.exists() {
        std::fs::rename(data, &backing).map_err(|e| format!("{}: {e}", data.display()))?;
    }
    let log_path = data.with_file_name("lazyfs.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(&bin)
        .arg("--backing")
        .arg(&backing)
        .arg("--mount")
        .arg(data)
        .arg("--fsync-delay-file")
        .arg(fsync_delay_file(data))
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !is_mount_point(data) {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || std::time::Instant::now() > deadline {
            let _ = child.kill();
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = text.lines().last().unwrap_or("no output");
            return Err(format!(
                "blyan-lazyfs did not mount {} (needs /dev/fuse and root): {last}",
                data.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

/// Ends `blyan-lazyfs` `pid` with `signal` (SIGUSR1: a power loss; SIGTERM: everything
/// written back) and waits, at most 10 s, until it has gone and `data` is unmounted.
pub fn end_lazyfs(pid: u32, signal: i32, data: &Path) -> Result<(), String> {
    if is_lazyfs_process(pid) {
        // SAFETY: kill(2) on the pid of the layer this devnet started; no memory is touched.
        unsafe { libc::kill(pid as i32, signal) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while is_lazyfs_process(pid) || is_mount_point(data) {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "blyan-lazyfs {pid} did not unmount {} within 10 s",
                data.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Every fsync under `data` is held `ms` from now on (0: none); `blyan-lazyfs` reads it
/// within 100 ms.
pub fn set_fsync_delay(data: &Path, ms: u64) -> Result<(), String> {
    let path = fsync_delay_file(data);
    std::fs::write(&path, format!("{ms}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    Ok(())
}

/// Puts the data directories a devnet's disk faults need on their layers before any node
/// starts: a tmpfs of `size_mb` for each of `tmpfs` (full disks), `blyan-lazyfs` (next to
/// `node_bin`) for each of `lazyfs` (slow disks, power losses), whose pids go into `state`. The
/// host paths serve processes and containers alike (a container's home is a recursive bind of
/// the node's home, so it sees the mount under it). On an error what was mounted is released.
pub fn prepare(
    state: &mut DevnetState,
    dir: &Path,
    node_bin: &Path,
    tmpfs: &[(String, u64)],
    lazyfs: &[String],
) -> Result<(), String> {
    let data = |state: &DevnetState, name: &str| {
        let node = state.nodes.iter().position(|node| node.moniker == name)?;
        Some((
            node,
            blyan_node::home::Home::new(&state.nodes[node].home).data(),
        ))
    };
    let mut result = Ok(());
    for (name, size_mb) in tmpfs {
        if let Some((_, path)) = data(state, name) {
            result = result
                .and_then(|()| mount_tmpfs(&path, *size_mb).map_err(|e| format!("{name}: {e}")));
        }
    }
    for name in lazyfs {
        if let (Ok(()), Some((node, path))) = (&result, data(state, name)) {
            match mount_lazyfs(node_bin, &path) {
                Ok(pid) => state.nodes[node].lazyfs_pid = Some(pid),
                Err(e) => result = Err(format!("{name}: {e}")),
            }
        }
    }
    if result.is_err() {
        release(state, dir);
    }
    result
}

/// Ends a devnet's FUSE layers (each writes back what it holds) and unmounts everything under
/// `dir`; the nodes must be down.
pub fn release(state: &mut DevnetState, dir: &Path) {
    for node in &mut state.nodes {
        if let Some(pid) = node.lazyfs_pid.take() {
            let data = blyan_node::home::Home::new(&node.home).data();
            let _ = end_lazyfs(pid, libc::SIGTERM, &data);
        }
    }
    unmount_under(dir);
}
