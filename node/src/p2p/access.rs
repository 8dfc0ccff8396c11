//! Who may connect: an optional allowlist of peer ids (a permissioned devnet: nobody else
//! connects) and a revocation list (these peers never connect, and are cut off when added),
//! both plain files reloaded while the node runs.
//!
//! File format: one peer id per line; `#` starts a comment; blank lines are skipped. A file
//! that does not parse is refused as a whole and the lists in force stay (fail closed: a typo
//! never opens the node to everyone).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use libp2p::PeerId;

/// Why a peer list could not be loaded; names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{path}: cannot read peer list: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {text:?} is not a peer id: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        text: String,
        reason: String,
    },
}

/// Parses a peer list (see the module documentation).
pub fn parse_peer_list(path: &Path, text: &str) -> Result<HashSet<PeerId>, AccessError> {
    let mut peers = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let peer = entry
            .parse::<PeerId>()
            .map_err(|error| AccessError::Parse {
                path: path.to_path_buf(),
                line: index + 1,
                text: entry.to_string(),
                reason: error.to_string(),
            })?;
        peers.insert(peer);
    }
    Ok(peers)
}

/// Reads and parses a peer list file.
pub fn read_peer_list(path: &Path) -> Result<HashSet<PeerId>, AccessError> {
    let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_peer_list(path, &text)
}

/// One watched list file: reloaded when its modification time or size changes.
#[derive(Debug)]
pub struct WatchedList {
    pub path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    /// The stamp of the last load that failed (reported once, not every poll).
    failed: Option<Option<(SystemTime, u64)>>,
}

impl WatchedList {
    pub fn new(path: PathBuf) -> WatchedList {
        WatchedList {
            path,
            stamp: None,
            failed: None,
        }
    }

    fn current_stamp(&self) -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(&self.path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// The list, when the file changed since the last successful load (or `force`); `None`
    /// when unchanged.
    pub fn poll(&mut self, force: bool) -> Option<Result<HashSet<PeerId>, AccessError>> {
        let stamp = self.current_stamp();
        if !force && stamp.is_some() && stamp == self.stamp {
            return None;
        }
        if !force && self.failed == Some(stamp) {
            return None;
        }
        let result = read_peer_list(&self.path);
        if result.is_ok() {
            self.stamp = stamp;
            self.failed = None;
        } else {
            self.failed = Some(stamp);
        }
        Some(result)
    }
}

/// What changes when new lists are applied, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub allowed: Vec<PeerId>,
    pub disallowed: Vec<PeerId>,
    pub revoked: Vec<PeerId>,
    pub unrevoked: Vec<PeerId>,
}

/// The difference between two sets: (added, removed).
pub fn diff(old: &HashSet<PeerId>, new: &HashSet<PeerId>) -> (Vec<PeerId>, Vec<PeerId>) {
    let added = new.difference(old).copied().collect();
    let removed = old.difference(new).copied().collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn parses_ids_comments_and_blank_lines() {
        let (a, b) = (peer(), peer());
        let text = format!("# validators\n{a}  # node0\n\n   {b}\n");
        let peers = parse_peer_list(Path::new("allow.txt"), &text).expect("valid list");
        assert_eq!(peers, HashSet::from([a, b]));
    }

    #[test]
    fn a_bad_line_is_named_and_refuses_the_whole_file() {
        let a = peer();
        let text = format!("{a}\nnot-a-peer\n");
        let error = parse_peer_list(Path::new("allow.txt"), &text).expect_err("line 2 is bad");
        let message = error.to_string();
        assert!(
            message.starts_with("allow.txt:2: \"not-a-peer\""),
            "{message}"
        );
    }

    #[test]
    fn a_changed_file_is_reloaded_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("revoked.txt");
        let (a, b) = (peer(), peer());
        std::fs::write(&path, format!("{a}\n")).expect("write");
        let mut watched = WatchedList::new(path.clone());
        let first = watched.poll(false).expect("first load").expect("valid");
        assert_eq!(first, HashSet::from([a]));
        assert!(watched.poll(false).is_none(), "unchanged file reloaded");
        // A longer file: the size differs even within one mtime tick.
        std::fs::write(&path, format!("{a}\n{b}\n")).expect("write");
        let second = watched.poll(false).expect("changed").expect("valid");
        assert_eq!(second, HashSet::from([a, b]));
        let (added, removed) = diff(&first, &second);
        assert_eq!((added, removed), (vec![b], vec![]));
    }
}
