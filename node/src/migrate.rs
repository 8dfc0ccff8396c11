//! `blyan-node migrate`: the legacy file-based chain imported into a home, each block replayed
//! over the home's genesis state so that the node starts on the imported tip and commits on
//! top of it. The legacy format and the import's checks are in [`crate::storage::legacy`].
//!
//! An imported block carries the legacy record as its one (opaque) transaction and no commit
//! certificate: the legacy chain had no validators. It changes the state the way an empty
//! block without a proposer does (the epoch clock advances, unbondings mature; its reward is
//! minted and burned, so no one is paid for it). The first native block after the imported
//! tip carries no last commit, as the first block of a chain does.

use std::path::Path;

use crate::app::App;
use crate::block::{Block, Hash};
use crate::genesis::Genesis;
use crate::node::set_records;
use crate::state::{set_hash, BlockInput, Executed};
use crate::storage::keys::app_hash_key;
use crate::storage::legacy::{self, ImportReport, LegacyError, Replay, Replayed};
use crate::storage::Storage;

/// The proposer index of an imported block: no one (out of every set's range).
pub const NO_PROPOSER: u32 = u32::MAX;

/// Replays imported blocks over the [`App`]'s state, opened at the storage's tip when the
/// first block is built (after the import's checks, so that their errors come first).
pub struct StateReplay<'a> {
    storage: &'a Storage,
    genesis: &'a Genesis,
    app: Option<App>,
    pending: Option<Executed>,
}

impl<'a> StateReplay<'a> {
    pub fn new(storage: &'a Storage, genesis: &'a Genesis) -> StateReplay<'a> {
        StateReplay {
            storage,
            genesis,
            app: None,
            pending: None,
        }
    }

    fn app(&mut self) -> Result<&App, String> {
        if self.app.is_none() {
            let app = App::open(self.storage, self.genesis).map_err(|error| error.to_string())?;
            self.app = Some(app);
        }
        Ok(self.app.as_ref().expect("just opened"))
    }
}

impl Replay for StateReplay<'_> {
    fn block(
        &mut self,
        height: u64,
        time_ms: u64,
        prev_hash: Hash,
        record: Vec<u8>,
    ) -> Result<Replayed, String> {
        let chain_id = self.genesis.chain_id.clone();
        let app = self.app()?;
        let validators = app
            .read()
            .validators_at(height)
            .ok_or_else(|| format!("the state holds no validator set for height {height}"))?;
        let input = BlockInput {
            height,
            proposer: NO_PROPOSER,
            last_signers: None,
            evidence: Vec::new(),
        };
        let executed = app.execute(&input, &[]);
        let mut block = Block::new(
            &chain_id,
            height,
            time_ms,
            prev_hash,
            app.app_hash(),
            vec![record],
        );
        block.header.proposer = NO_PROPOSER;
        block.header.validators_hash = set_hash(&validators);
        let changes = app.changes(&executed);
        let mut records = vec![(app_hash_key(height), executed.app_hash.0.to_vec())];
        records.extend(set_records(height, app, &executed));
        self.pending = Some(executed);
        Ok(Replayed {
            block,
            changes,
            records,
        })
    }

    fn committed(&mut self) {
        let executed = self
            .pending
            .take()
            .expect("committed() follows block() once");
        self.app
            .as_mut()
            .expect("block() opened the state")
            .committed(executed);
    }
}

/// Imports `from` into `storage` (verified first, see [`legacy::import`]), building the state
/// of every block.
pub fn import(
    from: &Path,
    storage: &Storage,
    genesis: &Genesis,
) -> Result<ImportReport, LegacyError> {
    let mut replay = StateReplay::new(storage, genesis);
    legacy::import(from, storage, &genesis.chain_id, &mut replay)
}

pub mod v1;

#[cfg(test)]
mod tests;
