//! `blyan-lazyfs`: mounts a directory through a FUSE layer that holds every unsynced write in
//! memory, for disk faults (`docs/CHAOS.md`, `disk` `power_loss` and `slow`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use blyan_chaos::lazyfs::{LazyFs, LazyState};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "blyan-lazyfs",
    version,
    about = "Mount DIR through a FUSE layer that loses unsynced writes on a simulated power loss",
    long_about = "Mounts --mount over --backing (a pass-through of names) and keeps every byte \
written through it in memory until that file is fsynced. Signals: SIGUSR1 is a power loss \
(every unsynced byte is dropped, the filesystem unmounted, exit 0); SIGTERM or SIGINT is a clean \
shutdown (everything written back and synced first). Each fsync first waits the number of \
milliseconds in --fsync-delay-file (re-read every 100 ms; missing or empty: 0), a slow disk. \
Prints `mounted <DIR>` once the mount answers, and one line for how it ended. Needs /dev/fuse \
and the right to mount (root, or fusermount3)."
)]
struct Args {
    /// The directory that holds the data (created if missing).
    #[arg(long)]
    backing: PathBuf,
    /// Where to mount it (created if missing; must be empty).
    #[arg(long)]
    mount: PathBuf,
    /// A file holding the fsync delay in milliseconds (a slow disk), re-read every 100 ms.
    #[arg(long)]
    fsync_delay_file: Option<PathBuf>,
    /// Unsynced bytes held before the file written is written back (a kernel's writeback).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_dirty_mib: u64,
}

/// The delay the file holds: a number of milliseconds, at most a minute.
fn read_delay(path: &std::path::Path) -> Result<u64, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(format!("{}: {error}", path.display())),
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    match text.parse::<u64>() {
        Ok(ms) if ms <= 60_000 => Ok(ms),
        _ => Err(format!(
            "{}: {text:?} is not a delay in milliseconds (0-60000)",
            path.display()
        )),
    }
}

fn watch_delay(path: PathBuf, delay: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut said = String::new();
        loop {
            match read_delay(&path) {
                Ok(ms) => {
                    if delay.swap(ms, Ordering::Relaxed) != ms {
                        println!("fsync delay {ms} ms");
                    }
                }
                Err(error) if error != said => {
                    eprintln!(
                        "error: {error}; keeping {} ms",
                        delay.load(Ordering::Relaxed)
                    );
                    said = error;
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for dir in [&args.backing, &args.mount] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let backing = std::fs::canonicalize(&args.backing)?;
    let state = Arc::new(Mutex::new(LazyState::new(
        &backing,
        args.max_dirty_mib << 20,
    )));
    let delay = Arc::new(AtomicU64::new(0));
    if let Some(path) = &args.fsync_delay_file {
        delay.store(
            read_delay(path).map_err(anyhow::Error::msg)?,
            Ordering::Relaxed,
        );
        watch_delay(path.clone(), delay.clone());
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("blyan-lazyfs".into()),
        fuser::MountOption::RW,
    ];
    let session = fuser::spawn_mount(LazyFs::new(state.clone(), delay), &args.mount, &config)
        .with_context(|| {
            format!(
                "mounting {} over FUSE (needs /dev/fuse and the right to mount)",
                args.mount.display()
            )
        })?;
    println!("mounted {}", args.mount.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let power_loss = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok::<bool, std::io::Error>(tokio::select! {
            _ = usr1.recv() => true,
            _ = term.recv() => false,
            _ = int.recv() => false,
        })
    })?;
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if power_loss {
        let lost = state.power_loss();
        println!(
            "power loss: {} unsynced bytes in {} files dropped",
            lost.bytes, lost.files
        );
    } else {
        let kept = state
            .write_back_all()
            .map_err(|error| anyhow::anyhow!("writing unsynced data back: {error:?}"))?;
        println!(
            "clean shutdown: {} unsynced bytes in {} files written back",
            kept.bytes, kept.files
        );
    }
    drop(state);
    unmount(&args.mount)?;
    // The session ends once the kernel says the filesystem is gone.
    session
        .join()
        .with_context(|| format!("ending the session of {}", args.mount.display()))?;
    Ok(())
}

/// Unmounts `mount`. A process that was just killed may still be closing its files there
/// (the kernel sends their last flushes here): busy is retried for 5 s, then the mount is
/// detached, which ends it once the last file is closed.
fn unmount(mount: &std::path::Path) -> anyhow::Result<()> {
    let path = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: umount2(2) on a NUL-terminated path; no memory is handed over.
        if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EBUSY) {
            return Err(error).with_context(|| format!("unmounting {}", mount.display()));
        }
        if std::time::Instant::now() > deadline {
            eprintln!("{} still busy after 5 s: detached", mount.display());
            // SAFETY: as above.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            return Err(error).with_context(|| format!("detaching {}", mount.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
