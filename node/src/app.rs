//! The application: signed transfer transactions between accounts funded in genesis, the
//! account state, the app hash, and the bounded mempool.
//!
//! A transaction is `version, kind, from, to, amount, fee, nonce, signature` (154 bytes); the
//! signature covers the chain id and every other field, so a transaction cannot be replayed on
//! another chain, and the per-account nonce stops replay on this one. A transaction that does
//! not apply (wrong nonce, too little balance) changes nothing; the block stays valid.
//!
//! The app hash after height `h` is `SHA-256(domain, app hash after h-1, h, the block's state
//! changes in key order)`, starting from a hash of the genesis accounts: every honest node that
//! applied the same blocks holds the same one.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::block::{Block, Hash};
use crate::storage::{StateChange, Storage, StorageError};

pub const TX_VERSION: u8 = 1;
pub const TX_KIND_TRANSFER: u8 = 1;
pub const TX_BYTES: usize = 2 + 32 + 32 + 8 * 3 + 64;

/// Why a transaction is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error("invalid signature")]
    BadSignature,
    #[error("nonce {got} already used (account nonce is {expected})")]
    StaleNonce { expected: u64, got: u64 },
    #[error("nonce {got} is too far ahead of the account nonce {expected}")]
    NonceGap { expected: u64, got: u64 },
    #[error("balance {balance} is less than amount + fee {needed}")]
    InsufficientFunds { balance: u64, needed: u128 },
    #[error("already in the mempool")]
    Duplicate,
    #[error("mempool is full ({0})")]
    MempoolFull(String),
}

/// A signed transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tx {
    pub from: [u8; 32],
    pub to: [u8; 32],
    pub amount: u64,
    pub fee: u64,
    pub nonce: u64,
    pub signature: [u8; 64],
}

fn tx_sign_bytes(chain_id: &str, tx: &Tx) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(128);
    bytes.extend_from_slice(b"blyan/tx/v1");
    bytes.push(chain_id.len() as u8);
    bytes.extend_from_slice(chain_id.as_bytes());
    bytes.extend_from_slice(&tx.encode()[..TX_BYTES - 64]);
    bytes
}

impl Tx {
    /// A transfer signed by `key`.
    pub fn transfer(
        chain_id: &str,
        key: &SigningKey,
        to: [u8; 32],
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Tx {
        let mut tx = Tx {
            from: key.verifying_key().to_bytes(),
            to,
            amount,
            fee,
            nonce,
            signature: [0; 64],
        };
        tx.signature = key.sign(&tx_sign_bytes(chain_id, &tx)).to_bytes();
        tx
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TX_BYTES);
        out.push(TX_VERSION);
        out.push(TX_KIND_TRANSFER);
        out.extend_from_slice(&self.from);
        out.extend_from_slice(&self.to);
        out.extend_from_slice(&self.amount.to_be_bytes());
        out.extend_from_slice(&self.fee.to_be_bytes());
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes untrusted bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Tx, TxError> {
        if bytes.len() != TX_BYTES {
            return Err(TxError::Malformed(format!(
                "{} bytes, a transfer is {TX_BYTES}",
                bytes.len()
            )));
        }
        if bytes[0] != TX_VERSION {
            return Err(TxError::Malformed(format!("unknown version {}", bytes[0])));
        }
        if bytes[1] != TX_KIND_TRANSFER {
            return Err(TxError::Malformed(format!("unknown kind {}", bytes[1])));
        }
        let array = |range: std::ops::Range<usize>| -> [u8; 32] {
            bytes[range].try_into().expect("length checked above")
        };
        let number =
            |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("length checked"));
        Ok(Tx {
            from: array(2..34),
            to: array(34..66),
            amount: number(66),
            fee: number(74),
            nonce: number(82),
            signature: bytes[90..154].try_into().expect("length checked above"),
        })
    }

    pub fn hash(&self) -> Hash {
        Hash::digest(&self.encode())
    }

    pub fn verify(&self, chain_id: &str) -> Result<(), TxError> {
        let key = VerifyingKey::from_bytes(&self.from).map_err(|_| TxError::BadSignature)?;
        key.verify(
            &tx_sign_bytes(chain_id, self),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| TxError::BadSignature)
    }
}

/// Verifies every transaction of a block at once (one batch); the first error otherwise.
/// Transactions for which `verified` says yes are not checked again: the caller vouches that it
/// verified exactly these bytes before (its mempool holds them; the hash covers the signature).
pub fn verify_block_txs(
    chain_id: &str,
    txs: &[Vec<u8>],
    verified: &dyn Fn(&Hash) -> bool,
) -> Result<Vec<Tx>, TxError> {
    let decoded: Vec<Tx> = txs
        .iter()
        .map(|tx| Tx::decode(tx))
        .collect::<Result<_, _>>()?;
    let unchecked: Vec<&Tx> = decoded.iter().filter(|tx| !verified(&tx.hash())).collect();
    if unchecked.is_empty() {
        return Ok(decoded);
    }
    let messages: Vec<Vec<u8>> = unchecked
        .iter()
        .map(|tx| tx_sign_bytes(chain_id, tx))
        .collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<Signature> = unchecked
        .iter()
        .map(|tx| Signature::from_bytes(&tx.signature))
        .collect();
    let keys: Vec<VerifyingKey> = unchecked
        .iter()
        .map(|tx| VerifyingKey::from_bytes(&tx.from).map_err(|_| TxError::BadSignature))
        .collect::<Result<_, _>>()?;
    ed25519_dalek::verify_batch(&message_refs, &signatures, &keys)
        .map_err(|_| TxError::BadSignature)?;
    Ok(decoded)
}

/// An account: balance and the next nonce it must use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
}

fn account_key(address: &[u8; 32]) -> Vec<u8> {
    [b"a/".as_slice(), address].concat()
}

const APP_HASH_KEY: &[u8] = b"m/app_hash";

impl Account {
    fn encode(&self) -> Vec<u8> {
        [self.balance.to_be_bytes(), self.nonce.to_be_bytes()].concat()
    }

    fn decode(bytes: &[u8]) -> Option<Account> {
        if bytes.len() != 16 {
            return None;
        }
        Some(Account {
            balance: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            nonce: u64::from_be_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

/// An account as committed in `storage`; `genesis_balance` for one never written.
pub fn committed_account(
    storage: &Storage,
    address: &[u8; 32],
    genesis_balance: u64,
) -> Result<Account, StorageError> {
    match storage.state_get(&account_key(address))? {
        Some(bytes) => Account::decode(&bytes).ok_or_else(|| StorageError::Corrupt {
            path: storage.path().to_path_buf(),
            detail: format!("account {} is not 16 bytes", hex::encode(address)),
        }),
        None => Ok(Account {
            balance: genesis_balance,
            nonce: 0,
        }),
    }
}

/// What a transaction did in a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    Applied,
    Skipped,
}

/// The result of executing a block, to be committed with it.
pub struct Executed {
    pub changes: Vec<StateChange>,
    pub app_hash: Hash,
    pub outcomes: Vec<TxOutcome>,
}

/// The account state over the node's storage; genesis balances are the default of an account
/// never written.
pub struct App {
    storage: Arc<Storage>,
    genesis_accounts: HashMap<[u8; 32], u64>,
    app_hash: Hash,
}

impl App {
    pub fn new(storage: Arc<Storage>, accounts: &[([u8; 32], u64)]) -> Result<App, StorageError> {
        let mut hasher = Sha256::new();
        hasher.update(b"blyan/genesis-accounts/v1");
        let sorted: BTreeMap<[u8; 32], u64> = accounts.iter().copied().collect();
        for (address, balance) in &sorted {
            hasher.update(address);
            hasher.update(balance.to_be_bytes());
        }
        let genesis_hash = Hash(hasher.finalize().into());
        let app_hash = match storage.state_get(APP_HASH_KEY)? {
            Some(bytes) if bytes.len() == 32 => Hash(bytes.try_into().expect("length checked")),
            Some(_) => {
                return Err(StorageError::Corrupt {
                    path: storage.path().to_path_buf(),
                    detail: "app hash is not 32 bytes".into(),
                })
            }
            None => genesis_hash,
        };
        Ok(App {
            storage,
            genesis_accounts: sorted.into_iter().collect(),
            app_hash,
        })
    }

    /// The app hash after the latest committed block (what the next block's header carries).
    pub fn app_hash(&self) -> Hash {
        self.app_hash
    }

    pub fn account(&self, address: &[u8; 32]) -> Result<Account, StorageError> {
        committed_account(
            &self.storage,
            address,
            self.genesis_accounts.get(address).copied().unwrap_or(0),
        )
    }

    /// Checks a transaction against the committed state, for the mempool.
    pub fn check(&self, chain_id: &str, tx: &Tx, pending_nonces: u64) -> Result<(), TxError> {
        tx.verify(chain_id)?;
        let account = self
            .account(&tx.from)
            .map_err(|error| TxError::Malformed(format!("cannot read account: {error}")))?;
        if tx.nonce < account.nonce {
            return Err(TxError::StaleNonce {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        if tx.nonce > account.nonce + pending_nonces + MAX_NONCE_GAP {
            return Err(TxError::NonceGap {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        let needed = u128::from(tx.amount) + u128::from(tx.fee);
        if u128::from(account.balance) < needed {
            return Err(TxError::InsufficientFunds {
                balance: account.balance,
                needed,
            });
        }
        Ok(())
    }

    /// Executes a block's (already verified) transactions; nothing is written until the caller
    /// commits the changes, then calls [`App::committed`].
    pub fn execute(&self, height: u64, txs: &[Tx]) -> Result<Executed, StorageError> {
        let mut touched: BTreeMap<[u8; 32], Account> = BTreeMap::new();
        let mut outcomes = Vec::with_capacity(txs.len());
        for tx in txs {
            let mut from = match touched.get(&tx.from) {
                Some(account) => *account,
                None => self.account(&tx.from)?,
            };
            let needed = u128::from(tx.amount) + u128::from(tx.fee);
            if tx.nonce != from.nonce || u128::from(from.balance) < needed {
                outcomes.push(TxOutcome::Skipped);
                continue;
            }
            from.balance -= tx.amount + tx.fee;
            from.nonce += 1;
            touched.insert(tx.from, from);
            let mut to = match touched.get(&tx.to) {
                Some(account) => *account,
                None => self.account(&tx.to)?,
            };
            to.balance = to.balance.saturating_add(tx.amount);
            touched.insert(tx.to, to);
            outcomes.push(TxOutcome::Applied);
        }
        let mut hasher = Sha256::new();
        hasher.update(b"blyan/app/v1");
        hasher.update(self.app_hash.0);
        hasher.update(height.to_be_bytes());
        let mut changes = Vec::with_capacity(touched.len() + 1);
        for (address, account) in &touched {
            let key = account_key(address);
            let value = account.encode();
            hasher.update((key.len() as u32).to_be_bytes());
            hasher.update(&key);
            hasher.update(&value);
            changes.push(StateChange::Put(key, value));
        }
        let app_hash = Hash(hasher.finalize().into());
        changes.push(StateChange::Put(APP_HASH_KEY.to_vec(), app_hash.0.to_vec()));
        Ok(Executed {
            changes,
            app_hash,
            outcomes,
        })
    }

    /// Records that an executed block was committed.
    pub fn committed(&mut self, app_hash: Hash) {
        self.app_hash = app_hash;
    }
}

/// How far past the account nonce (plus pending ones) a mempool transaction may be.
pub const MAX_NONCE_GAP: u64 = 64;

/// Mempool limits.
#[derive(Clone, Copy, Debug)]
pub struct MempoolLimits {
    pub max_txs: usize,
    pub max_bytes: usize,
    /// How long a transaction may wait before `update` drops it.
    pub ttl: std::time::Duration,
}

/// Pending transactions in arrival order, deduplicated by hash.
pub struct Mempool {
    limits: MempoolLimits,
    order: VecDeque<Hash>,
    txs: HashMap<Hash, Tx>,
    arrived: HashMap<Hash, std::time::Instant>,
    per_sender: HashMap<[u8; 32], u64>,
    bytes: usize,
}

impl Mempool {
    pub fn new(limits: MempoolLimits) -> Mempool {
        Mempool {
            limits,
            order: VecDeque::new(),
            txs: HashMap::new(),
            arrived: HashMap::new(),
            per_sender: HashMap::new(),
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.txs.contains_key(hash)
    }

    /// Pending transactions of `sender`.
    pub fn pending_from(&self, sender: &[u8; 32]) -> u64 {
        self.per_sender.get(sender).copied().unwrap_or(0)
    }

    /// Adds a checked transaction.
    pub fn insert(&mut self, tx: Tx) -> Result<Hash, TxError> {
        let hash = tx.hash();
        if self.txs.contains_key(&hash) {
            return Err(TxError::Duplicate);
        }
        if self.txs.len() >= self.limits.max_txs {
            return Err(TxError::MempoolFull(format!(
                "{} transactions",
                self.limits.max_txs
            )));
        }
        if self.bytes + TX_BYTES > self.limits.max_bytes {
            return Err(TxError::MempoolFull(format!(
                "{} bytes",
                self.limits.max_bytes
            )));
        }
        self.bytes += TX_BYTES;
        *self.per_sender.entry(tx.from).or_default() += 1;
        self.order.push_back(hash);
        self.txs.insert(hash, tx);
        self.arrived.insert(hash, std::time::Instant::now());
        Ok(hash)
    }

    /// Up to `max_txs` transactions for a block: senders in the order their first pending
    /// transaction arrived, each sender's transactions in nonce order and only while the nonces
    /// run on without a gap from `account_nonce(sender)`. A transaction after a gap (its
    /// predecessor not yet here, as gossip may deliver them out of order) waits for a later
    /// block instead of being committed unexecuted.
    pub fn reap(&self, max_txs: usize, account_nonce: impl Fn(&[u8; 32]) -> u64) -> Vec<Tx> {
        let mut senders: Vec<[u8; 32]> = Vec::new();
        let mut by_sender: HashMap<[u8; 32], Vec<&Tx>> = HashMap::new();
        for tx in self.order.iter().filter_map(|hash| self.txs.get(hash)) {
            let entry = by_sender.entry(tx.from).or_default();
            if entry.is_empty() {
                senders.push(tx.from);
            }
            entry.push(tx);
        }
        let mut picked = Vec::with_capacity(max_txs.min(self.txs.len()));
        for sender in senders {
            let mut txs = by_sender.remove(&sender).unwrap_or_default();
            txs.sort_by_key(|tx| tx.nonce);
            let mut next = account_nonce(&sender);
            for tx in txs {
                if picked.len() == max_txs {
                    return picked;
                }
                if tx.nonce < next {
                    continue;
                }
                if tx.nonce > next {
                    break;
                }
                picked.push(tx.clone());
                next += 1;
            }
        }
        picked
    }

    /// Drops committed transactions, those whose nonce the chain has passed and those older
    /// than the TTL.
    pub fn update(&mut self, committed: &HashSet<Hash>, app: &App) {
        let mut nonces: HashMap<[u8; 32], u64> = HashMap::new();
        let mut keep = VecDeque::with_capacity(self.order.len());
        for hash in self.order.drain(..) {
            let Some(tx) = self.txs.get(&hash) else {
                continue;
            };
            let nonce = *nonces
                .entry(tx.from)
                .or_insert_with(|| app.account(&tx.from).map(|a| a.nonce).unwrap_or(0));
            let expired = self
                .arrived
                .get(&hash)
                .is_some_and(|arrived| arrived.elapsed() > self.limits.ttl);
            if committed.contains(&hash) || tx.nonce < nonce || expired {
                let tx = self.txs.remove(&hash).expect("present");
                self.arrived.remove(&hash);
                self.bytes -= TX_BYTES;
                if let Some(count) = self.per_sender.get_mut(&tx.from) {
                    *count -= 1;
                    if *count == 0 {
                        self.per_sender.remove(&tx.from);
                    }
                }
            } else {
                keep.push_back(hash);
            }
        }
        self.order = keep;
    }
}

/// What the next block must match: the chain and the tip it builds on.
pub struct Expected<'a> {
    pub chain_id: &'a str,
    pub height: u64,
    pub prev_hash: Hash,
    pub prev_time_ms: u64,
    pub app_hash: Hash,
    pub max_txs: usize,
}

/// Checks a block's shape against the chain and verifies its transactions (those `verified`
/// vouches for are skipped, see [`verify_block_txs`]).
pub fn check_block(
    block: &Block,
    expected: &Expected,
    verified: &dyn Fn(&Hash) -> bool,
) -> Result<Vec<Tx>, String> {
    let Expected {
        chain_id,
        height,
        prev_hash,
        prev_time_ms,
        app_hash,
        max_txs,
    } = *expected;
    let header = &block.header;
    if header.chain_id != chain_id {
        return Err(format!(
            "chain id {:?}, expected {chain_id:?}",
            header.chain_id
        ));
    }
    if header.height != height {
        return Err(format!("height {}, expected {height}", header.height));
    }
    if header.prev_hash != prev_hash {
        return Err(format!("parent {}, expected {prev_hash}", header.prev_hash));
    }
    if header.app_hash != app_hash {
        return Err(format!("app hash {}, expected {app_hash}", header.app_hash));
    }
    if header.time_ms <= prev_time_ms {
        return Err(format!(
            "time {} is not after the parent's {prev_time_ms}",
            header.time_ms
        ));
    }
    if block.txs.len() > max_txs {
        return Err(format!("{} transactions, limit {max_txs}", block.txs.len()));
    }
    if !block.data_hash_matches() {
        return Err("data hash does not match the transactions".into());
    }
    verify_block_txs(chain_id, &block.txs, verified).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn setup() -> (tempfile::TempDir, App) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(Storage::open(dir.path(), &StorageConfig::default()).unwrap());
        let app = App::new(storage, &[(key(1).verifying_key().to_bytes(), 1000)]).unwrap();
        (dir, app)
    }

    #[test]
    fn transfer_round_trips_and_signature_binds_chain_and_fields() {
        let tx = Tx::transfer("c", &key(1), [2; 32], 10, 1, 0);
        let decoded = Tx::decode(&tx.encode()).unwrap();
        assert_eq!(decoded, tx);
        assert!(tx.verify("c").is_ok());
        assert_eq!(tx.verify("other"), Err(TxError::BadSignature));
        let mut changed = tx.clone();
        changed.amount = 11;
        assert_eq!(changed.verify("c"), Err(TxError::BadSignature));
        assert!(matches!(Tx::decode(&[1; 10]), Err(TxError::Malformed(_))));
        let mut bad_kind = tx.encode();
        bad_kind[1] = 9;
        assert!(matches!(Tx::decode(&bad_kind), Err(TxError::Malformed(_))));
        let mut txs = vec![
            tx.encode(),
            Tx::transfer("c", &key(1), [2; 32], 1, 1, 1).encode(),
        ];
        assert_eq!(verify_block_txs("c", &txs, &|_| false).unwrap().len(), 2);
        txs[1][70] ^= 1;
        assert_eq!(
            verify_block_txs("c", &txs, &|_| false),
            Err(TxError::BadSignature)
        );
        // Vouching for the good one skips only that one: the altered one is still caught.
        let good = Tx::decode(&txs[0]).unwrap().hash();
        assert_eq!(
            verify_block_txs("c", &txs, &|hash| *hash == good),
            Err(TxError::BadSignature)
        );
    }

    #[test]
    fn execution_applies_valid_transfers_skips_bad_nonce_and_overdraft() {
        let (_dir, app) = setup();
        let alice = key(1);
        let bob = key(2).verifying_key().to_bytes();
        let txs = vec![
            Tx::transfer("c", &alice, bob, 100, 1, 0),
            Tx::transfer("c", &alice, bob, 100, 1, 0), // replayed nonce
            Tx::transfer("c", &alice, bob, 5000, 1, 1), // overdraft
            Tx::transfer("c", &alice, bob, 50, 1, 1),
        ];
        let executed = app.execute(1, &txs).unwrap();
        assert_eq!(
            executed.outcomes,
            vec![
                TxOutcome::Applied,
                TxOutcome::Skipped,
                TxOutcome::Skipped,
                TxOutcome::Applied
            ]
        );
        let again = app.execute(1, &txs).unwrap();
        assert_eq!(again.app_hash, executed.app_hash, "deterministic");
        assert_ne!(executed.app_hash, app.app_hash());
        let balances: Vec<Vec<u8>> = executed
            .changes
            .iter()
            .filter_map(|change| match change {
                StateChange::Put(key, value) if key.starts_with(b"a/") => Some(value.clone()),
                _ => None,
            })
            .collect();
        let accounts: Vec<Account> = balances
            .iter()
            .map(|b| Account::decode(b).unwrap())
            .collect();
        assert!(accounts.contains(&Account {
            balance: 848,
            nonce: 2
        }));
        assert!(accounts.contains(&Account {
            balance: 150,
            nonce: 0
        }));
    }

    #[test]
    fn reap_stops_at_a_nonce_gap_and_keeps_senders_in_arrival_order() {
        let alice = SigningKey::from_bytes(&[1; 32]);
        let bob = SigningKey::from_bytes(&[2; 32]);
        let mut pool = Mempool::new(MempoolLimits {
            max_txs: 100,
            max_bytes: 1 << 20,
            ttl: std::time::Duration::from_secs(60),
        });
        // Gossip delivered alice's nonce 2 before her nonce 1.
        for (key, nonce) in [(&alice, 0), (&bob, 0), (&alice, 2), (&bob, 1)] {
            pool.insert(Tx::transfer("c", key, [9; 32], 1, 1, nonce))
                .unwrap();
        }
        let picked: Vec<(u8, u64)> = pool
            .reap(10, |_| 0)
            .iter()
            .map(|tx| (tx.from[0], tx.nonce))
            .collect();
        let (a, b) = (
            alice.verifying_key().to_bytes()[0],
            bob.verifying_key().to_bytes()[0],
        );
        assert_eq!(
            picked,
            vec![(a, 0), (b, 0), (b, 1)],
            "alice's 2 waits for 1"
        );
        pool.insert(Tx::transfer("c", &alice, [9; 32], 1, 1, 1))
            .unwrap();
        assert_eq!(pool.reap(10, |_| 0).len(), 5, "the gap is filled");
    }

    #[test]
    fn transactions_older_than_the_ttl_are_dropped_at_the_next_update() {
        let (_dir, app) = setup();
        let alice = key(1);
        let mut pool = Mempool::new(MempoolLimits {
            max_txs: 100,
            max_bytes: 1 << 20,
            ttl: std::time::Duration::from_millis(50),
        });
        // Nonce 5 never comes due (0..4 never arrive).
        pool.insert(Tx::transfer("c", &alice, [9; 32], 1, 1, 5))
            .unwrap();
        pool.update(&HashSet::new(), &app);
        assert_eq!(pool.len(), 1, "young: kept");
        std::thread::sleep(std::time::Duration::from_millis(60));
        pool.update(&HashSet::new(), &app);
        assert!(pool.is_empty(), "past the TTL: dropped");
        assert_eq!(pool.pending_from(&alice.verifying_key().to_bytes()), 0);
    }

    #[test]
    fn mempool_dedups_bounds_and_drops_committed() {
        let (_dir, app) = setup();
        let alice = key(1);
        let mut pool = Mempool::new(MempoolLimits {
            max_txs: 3,
            max_bytes: 1 << 20,
            ttl: std::time::Duration::from_secs(60),
        });
        let first = Tx::transfer("c", &alice, [2; 32], 1, 1, 1);
        let zero = Tx::transfer("c", &alice, [2; 32], 1, 1, 0);
        app.check("c", &first, 0).unwrap();
        pool.insert(first.clone()).unwrap();
        assert_eq!(pool.insert(first.clone()), Err(TxError::Duplicate));
        pool.insert(zero.clone()).unwrap();
        pool.insert(Tx::transfer("c", &alice, [2; 32], 1, 1, 2))
            .unwrap();
        assert!(matches!(
            pool.insert(Tx::transfer("c", &alice, [2; 32], 1, 1, 3)),
            Err(TxError::MempoolFull(_))
        ));
        let reaped = pool.reap(10, |_| 0);
        assert_eq!(
            reaped.iter().map(|tx| tx.nonce).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(pool.reap(2, |_| 0).len(), 2, "at most max_txs");
        // The account is at nonce 1: nonce 0 is stale and left out, 1 and 2 follow on.
        let reaped = pool.reap(10, |_| 1);
        assert_eq!(
            reaped.iter().map(|tx| tx.nonce).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let committed: HashSet<Hash> = [zero.hash()].into_iter().collect();
        pool.update(&committed, &app);
        assert_eq!(pool.len(), 2);
        assert!(!pool.contains(&zero.hash()));
        assert!(matches!(
            app.check("c", &Tx::transfer("c", &alice, [2; 32], 5000, 1, 0), 0),
            Err(TxError::InsufficientFunds { .. })
        ));
        assert!(matches!(
            app.check("c", &Tx::transfer("c", &alice, [2; 32], 1, 1, 500), 0),
            Err(TxError::NonceGap { .. })
        ));
    }
}
