//! Disk faults on the process backend (`kind = "disk"`, `docs/CHAOS.md`): a node's data
//! directory on a size-limited tmpfs of its own, filled with a ballast file to make the disk
//! full and emptied to free it. Mounting needs root and mount(8).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

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
