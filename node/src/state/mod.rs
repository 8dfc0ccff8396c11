//! The chain state and its rules: accounts, staking, epochs and validator rotation, slashing,
//! rewards, registered experts, and the app hash. `docs/STAKING.md` explains the parameters,
//! formulas and epoch timeline; this module is their one implementation.
//!
//! State is an ordered key-value map ([`store::Store`]); every rule reads and writes it through
//! an [`store::Overlay`], so a block's effect is a set of writes that is hashed, committed with
//! the block in one atomic RocksDB batch, and then applied in memory.
//!
//! | key | value |
//! |---|---|
//! | `a/ADDR` | account: balance, nonce (16 bytes) |
//! | `v/KEY` | validator record (JSON) |
//! | `d/VALIDATOR DELEGATOR` | bonded amount (8 bytes) |
//! | `u/HEIGHT DELEGATOR VALIDATOR` | amount unbonding until HEIGHT (8 bytes) |
//! | `s/EPOCH` | the validator set of an epoch: key and power, in order (40 bytes each) |
//! | `x/KEY HEIGHT ROUND STEP` | an equivocation already punished (JSON) |
//! | `e/CONTENT_HASH` | a registered expert (JSON) |
//! | `m/supply` | genesis supply, minted and burned (JSON) |

pub mod store;
pub use blyan_wire::tx;

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::block::Hash;
use crate::consensus::types::{Evidence, VoteKind};
use crate::consensus::validators::Validator;
use store::{Overlay, Store, Writes};
use tx::{Tx, TxBody, TxError};

/// Basis points: 10,000 is 100%.
pub const BPS: u64 = 10_000;

/// Staking, epoch, slashing and reward parameters, from genesis (`staking`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StakingParams {
    /// Blocks per epoch (at least 2); the validator set changes only between epochs.
    pub epoch_length: u64,
    /// Size of the active set: the top validators by bonded stake.
    pub max_validators: u32,
    /// Blocks an undelegation waits before the tokens are back in the balance.
    pub unbonding_blocks: u64,
    /// Minted every block and paid, with the block's fees, to the proposer and the signers.
    pub block_reward: u64,
    /// The proposer's share of a block's rewards, in basis points.
    pub proposer_bonus_bps: u64,
    /// Fraction of stake burned for double signing, in basis points.
    pub double_sign_slash_bps: u64,
    /// Fraction of stake burned for downtime, in basis points.
    pub downtime_slash_bps: u64,
    /// Downtime is judged over this many recent blocks ...
    pub downtime_window: u32,
    /// ... and punished when more than this many of them lack the validator's signature.
    pub downtime_max_missed: u32,
    /// Blocks a validator jailed for downtime must wait before `unjail`.
    pub downtime_jail_blocks: u64,
    /// Evidence about a height more than this many blocks old is refused.
    pub evidence_max_age: u64,
}

impl Default for StakingParams {
    fn default() -> Self {
        StakingParams::devnet()
    }
}

impl StakingParams {
    /// Short epochs and windows, for devnets and tests.
    pub fn devnet() -> StakingParams {
        StakingParams {
            epoch_length: 100,
            max_validators: 100,
            unbonding_blocks: 100,
            block_reward: 10,
            proposer_bonus_bps: 1_000,
            double_sign_slash_bps: 500,
            downtime_slash_bps: 100,
            downtime_window: 100,
            downtime_max_missed: 50,
            downtime_jail_blocks: 100,
            evidence_max_age: 100,
        }
    }

    /// A mainnet profile at one block a second: six-hour epochs, 21-day unbonding.
    pub fn mainnet() -> StakingParams {
        StakingParams {
            epoch_length: 6 * 3600,
            max_validators: 100,
            unbonding_blocks: 21 * 24 * 3600,
            block_reward: 1_000,
            proposer_bonus_bps: 500,
            double_sign_slash_bps: 500,
            downtime_slash_bps: 1,
            downtime_window: 10_000,
            downtime_max_missed: 9_500,
            downtime_jail_blocks: 600,
            evidence_max_age: 100_000,
        }
    }

    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.epoch_length < 2 {
            return Err(("staking.epoch_length", "must be at least 2".into()));
        }
        if self.max_validators == 0 {
            return Err(("staking.max_validators", "must be > 0".into()));
        }
        for (field, value) in [
            ("staking.proposer_bonus_bps", self.proposer_bonus_bps),
            ("staking.double_sign_slash_bps", self.double_sign_slash_bps),
            ("staking.downtime_slash_bps", self.downtime_slash_bps),
        ] {
            if value > BPS {
                return Err((field, format!("{value} is over {BPS} (100%)")));
            }
        }
        if self.downtime_window == 0 {
            return Err(("staking.downtime_window", "must be > 0".into()));
        }
        if self.downtime_max_missed >= self.downtime_window {
            return Err((
                "staking.downtime_max_missed",
                format!(
                    "must be less than downtime_window ({})",
                    self.downtime_window
                ),
            ));
        }
        if self.unbonding_blocks == 0 {
            return Err(("staking.unbonding_blocks", "must be > 0".into()));
        }
        if self.evidence_max_age == 0 {
            return Err(("staking.evidence_max_age", "must be > 0".into()));
        }
        if self.evidence_max_age > self.unbonding_blocks {
            return Err((
                "staking.evidence_max_age",
                format!(
                    "{} is longer than unbonding_blocks ({}): stake could finish unbonding \
                     before the evidence of an equivocation it was bonded for is judged",
                    self.evidence_max_age, self.unbonding_blocks
                ),
            ));
        }
        Ok(())
    }

    /// The epoch of a height: epoch `k` is heights `k*E+1 ..= (k+1)*E`.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height.max(1).saturating_sub(1) / self.epoch_length
    }

    /// The first height of an epoch.
    pub fn epoch_start(&self, epoch: u64) -> u64 {
        epoch * self.epoch_length + 1
    }
}

/// An account: balance and the next nonce it must use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
}

impl Account {
    fn encode(&self) -> Vec<u8> {
        [self.balance.to_be_bytes(), self.nonce.to_be_bytes()].concat()
    }

    fn decode(bytes: &[u8]) -> Account {
        assert_eq!(bytes.len(), 16, "account records are 16 bytes");
        Account {
            balance: u64::from_be_bytes(bytes[..8].try_into().expect("checked")),
            nonce: u64::from_be_bytes(bytes[8..].try_into().expect("checked")),
        }
    }
}

/// A validator's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorRecord {
    /// Bonded stake: the sum of its delegations (its own included).
    pub tokens: u64,
    pub commission_bps: u64,
    pub jailed: bool,
    /// The first height at which `unjail` is accepted.
    pub jailed_until: u64,
    /// Jailed forever for double signing.
    pub tombstoned: bool,
    /// Missed-signature bits of the downtime window (one per block, ring buffer).
    pub window: Vec<u8>,
    pub window_pos: u64,
    pub missed: u32,
    /// Total burned from it by slashing.
    pub slashed: u64,
    pub created_height: u64,
}

/// Genesis supply, and what was minted and burned since: the whole state's tokens always sum
/// to `genesis + minted - burned`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supply {
    pub genesis: u64,
    pub minted: u64,
    pub burned: u64,
}

/// An equivocation that was punished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub validator: String,
    pub height: u64,
    pub round: u32,
    pub step: String,
    /// The height whose block punished it.
    pub punished_at: u64,
    pub burned: u64,
}

/// A registered expert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertRecord {
    pub owner: String,
    pub content_hash: Hash,
    pub tiles_root: Hash,
    pub name: String,
    pub layer: u32,
    pub tiles: u32,
    pub bytes: u64,
    pub height: u64,
}

/// A member of an epoch's validator set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub key: [u8; 32],
    pub power: u64,
}

/// A set record: each member's key and power (40 bytes a member).
pub fn encode_members(members: &[Member]) -> Vec<u8> {
    members
        .iter()
        .flat_map(|member| member.key.iter().copied().chain(member.power.to_be_bytes()))
        .collect()
}

/// Decodes untrusted bytes into a set (`None` when malformed).
pub fn try_decode_members(bytes: &[u8]) -> Option<Vec<Member>> {
    (bytes.len().is_multiple_of(40) && !bytes.is_empty()).then(|| decode_members(bytes))
}

fn decode_members(bytes: &[u8]) -> Vec<Member> {
    assert_eq!(bytes.len() % 40, 0, "set records are 40 bytes a member");
    bytes
        .chunks(40)
        .map(|chunk| Member {
            key: chunk[..32].try_into().expect("checked"),
            power: u64::from_be_bytes(chunk[32..].try_into().expect("checked")),
        })
        .collect()
}

/// Hash of a validator set (keys and powers, in order), as block headers carry it.
pub fn set_hash(validators: &[Validator]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(b"blyan/validator-set/v1");
    for validator in validators {
        hasher.update(validator.public_key.as_bytes());
        hasher.update(validator.power.to_be_bytes());
    }
    Hash(hasher.finalize().into())
}

/// Members as consensus validators; members whose key is not a valid point are left out (a
/// `create_validator` sender's address is always one: it signed the transaction).
pub fn to_validators(members: &[Member]) -> Vec<Validator> {
    members
        .iter()
        .filter_map(|member| {
            VerifyingKey::from_bytes(&member.key)
                .ok()
                .map(|public_key| Validator {
                    public_key,
                    power: member.power,
                })
        })
        .collect()
}

fn account_key(address: &[u8; 32]) -> Vec<u8> {
    [b"a/".as_slice(), address].concat()
}
fn validator_key(key: &[u8; 32]) -> Vec<u8> {
    [b"v/".as_slice(), key].concat()
}
fn delegation_key(validator: &[u8; 32], delegator: &[u8; 32]) -> Vec<u8> {
    [b"d/".as_slice(), validator, delegator].concat()
}
fn unbonding_prefix(height: u64) -> Vec<u8> {
    [b"u/".as_slice(), &height.to_be_bytes()].concat()
}
/// The state key of an epoch's set.
pub fn set_key(epoch: u64) -> Vec<u8> {
    [b"s/".as_slice(), &epoch.to_be_bytes()].concat()
}
fn expert_key(hash: &Hash) -> Vec<u8> {
    [b"e/".as_slice(), &hash.0].concat()
}
const SUPPLY_KEY: &[u8] = b"m/supply";

/// A state that cannot be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("state record {key} is malformed: {why}")]
    Record { key: String, why: String },
}

/// A key as text: its prefix, then hex.
fn printable_key(key: &[u8]) -> String {
    match key {
        [prefix, b'/', rest @ ..] if prefix.is_ascii_lowercase() => {
            format!("{}/{}", *prefix as char, hex::encode(rest))
        }
        _ => hex::encode(key),
    }
}

/// Whether a record has the shape its key's prefix promises (records of other prefixes are
/// never decoded, so they are let through).
fn check_record(key: &[u8], value: &[u8]) -> Result<(), String> {
    fn json<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<(), String> {
        serde_json::from_slice::<T>(value)
            .map(|_| ())
            .map_err(|error| format!("not the JSON record expected: {error}"))
    }
    fn sized(what: &str, got: usize, want: usize) -> Result<(), String> {
        (got == want)
            .then_some(())
            .ok_or_else(|| format!("{what} of {got} bytes, not {want}"))
    }
    if key == SUPPLY_KEY {
        return json::<Supply>(value);
    }
    let Some((prefix, rest)) = key.split_at_checked(2) else {
        return Ok(());
    };
    match prefix {
        b"a/" => sized("a key", rest.len(), 32).and(sized("a value", value.len(), 16)),
        b"v/" => sized("a key", rest.len(), 32).and_then(|()| json::<ValidatorRecord>(value)),
        b"d/" => sized("a key", rest.len(), 64).and(sized("a value", value.len(), 8)),
        b"u/" => sized("a key", rest.len(), 72).and(sized("a value", value.len(), 8)),
        b"s/" => sized("a key", rest.len(), 8).and_then(|()| {
            try_decode_members(value)
                .map(|_| ())
                .ok_or_else(|| format!("a set record of {} bytes", value.len()))
        }),
        b"e/" => sized("a key", rest.len(), 32).and_then(|()| json::<ExpertRecord>(value)),
        b"x/" => json::<EvidenceRecord>(value),
        _ => Ok(()),
    }
}

fn number(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("amount records are 8 bytes"))
}

fn step_name(kind: VoteKind) -> &'static str {
    match kind {
        VoteKind::Prevote => "prevote",
        VoteKind::Precommit => "precommit",
    }
}

/// What a transaction did in a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// Applied in full.
    Applied,
    /// Paid its fee and used its nonce; changed nothing else, for the reason given.
    Failed(String),
    /// Not executed at all: wrong nonce, or not even the fee in the balance.
    Skipped,
}

/// What a block brings besides transactions.
#[derive(Clone, Debug, Default)]
pub struct BlockInput {
    pub height: u64,
    /// Index of the proposer in the height's set.
    pub proposer: u32,
    /// Indices (in the previous height's set) of the validators whose precommit for the
    /// previous block the block carries; `None` at height 1.
    pub last_signers: Option<Vec<u32>>,
    pub evidence: Vec<Evidence>,
}

/// Something the rules did that operators want to see in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEvent {
    Slashed {
        validator: [u8; 32],
        reason: &'static str,
        burned: u64,
    },
    Jailed {
        validator: [u8; 32],
        until: u64,
    },
    NewSet {
        epoch: u64,
        members: usize,
    },
}

/// The result of executing a block: writes not applied yet.
pub struct Executed {
    pub writes: Writes,
    pub app_hash: Hash,
    pub bucket_updates: Vec<(usize, Hash)>,
    pub outcomes: Vec<TxOutcome>,
    pub events: Vec<StateEvent>,
}

/// Where rewards for served inference (proof of learning) plug in: given the height, the
/// payouts to add to the block's rewards. Minted like the block reward.
pub trait InferenceRewards: Send + Sync {
    fn payouts(&self, height: u64) -> Vec<([u8; 32], u64)>;
}

/// No inference rewards (until the inference issue plugs them in).
pub struct NoInferenceRewards;

impl InferenceRewards for NoInferenceRewards {
    fn payouts(&self, _height: u64) -> Vec<([u8; 32], u64)> {
        Vec::new()
    }
}

/// The chain state and its parameters.
pub struct ChainState {
    pub chain_id: String,
    pub params: StakingParams,
    store: Store,
    /// The last height executed into this state (0: genesis).
    pub height: u64,
}

/// Applies rules over an overlay of the committed state.
struct Exec<'a> {
    overlay: Overlay<'a>,
    params: &'a StakingParams,
    chain_id: &'a str,
    height: u64,
    fees: u64,
    supply: Supply,
    events: Vec<StateEvent>,
}

impl ChainState {
    /// The state at genesis: funded accounts, and each genesis validator bonded to itself with
    /// its power as stake.
    pub fn genesis(
        chain_id: &str,
        params: StakingParams,
        accounts: &[([u8; 32], u64)],
        validators: &[Validator],
    ) -> ChainState {
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut supply: u128 = 0;
        for (address, balance) in accounts {
            entries.insert(
                account_key(address),
                Account {
                    balance: *balance,
                    nonce: 0,
                }
                .encode(),
            );
            supply += u128::from(*balance);
        }
        let mut members = Vec::new();
        for validator in validators {
            let key = validator.public_key.to_bytes();
            let record = ValidatorRecord {
                tokens: validator.power,
                ..ValidatorRecord::default()
            };
            entries.insert(
                validator_key(&key),
                serde_json::to_vec(&record).expect("serialises"),
            );
            entries.insert(
                delegation_key(&key, &key),
                validator.power.to_be_bytes().to_vec(),
            );
            supply += u128::from(validator.power);
            members.push(Member {
                key,
                power: validator.power,
            });
        }
        entries.insert(set_key(0), encode_members(&members));
        let supply = Supply {
            genesis: u64::try_from(supply).expect("genesis validation bounds the supply"),
            minted: 0,
            burned: 0,
        };
        entries.insert(
            SUPPLY_KEY.to_vec(),
            serde_json::to_vec(&supply).expect("serialises"),
        );
        ChainState {
            chain_id: chain_id.to_string(),
            params,
            store: Store::from_entries(entries),
            height: 0,
        }
    }

    /// A state loaded from storage (or a verified snapshot) at `height`. Every record is
    /// decoded once here, so a malformed one is an error naming its key, and the accessors
    /// below may take the records' shape as given.
    pub fn from_entries(
        chain_id: &str,
        params: StakingParams,
        height: u64,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<ChainState, StateError> {
        for (key, value) in &entries {
            check_record(key, value).map_err(|why| StateError::Record {
                key: printable_key(key),
                why,
            })?;
        }
        Ok(ChainState {
            chain_id: chain_id.to_string(),
            params,
            store: Store::from_entries(entries),
            height,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The app hash of this state.
    pub fn app_hash(&self) -> Hash {
        self.store.root()
    }

    pub fn account(&self, address: &[u8; 32]) -> Account {
        self.store
            .get(&account_key(address))
            .map(Account::decode)
            .unwrap_or_default()
    }

    pub fn validator(&self, key: &[u8; 32]) -> Option<ValidatorRecord> {
        self.store
            .get(&validator_key(key))
            .map(|bytes| serde_json::from_slice(bytes).expect("validator records are JSON"))
    }

    /// Every validator record, by key.
    pub fn validators(&self) -> Vec<([u8; 32], ValidatorRecord)> {
        self.store
            .scan(b"v/")
            .map(|(key, value)| {
                (
                    key[2..].try_into().expect("validator keys are 34 bytes"),
                    serde_json::from_slice(value).expect("validator records are JSON"),
                )
            })
            .collect()
    }

    /// Delegations to `validator`: (delegator, amount).
    pub fn delegations(&self, validator: &[u8; 32]) -> Vec<([u8; 32], u64)> {
        let prefix = [b"d/".as_slice(), validator].concat();
        self.store
            .scan(&prefix)
            .map(|(key, value)| (key[34..].try_into().expect("66-byte keys"), number(value)))
            .collect()
    }

    /// Pending unbondings: (matures at, delegator, validator, amount).
    pub fn unbondings(&self) -> Vec<(u64, [u8; 32], [u8; 32], u64)> {
        self.store
            .scan(b"u/")
            .map(|(key, value)| {
                (
                    number(&key[2..10]),
                    key[10..42].try_into().expect("74-byte keys"),
                    key[42..74].try_into().expect("74-byte keys"),
                    number(value),
                )
            })
            .collect()
    }

    /// The validator set of an epoch, if still kept.
    pub fn members(&self, epoch: u64) -> Option<Vec<Member>> {
        self.store.get(&set_key(epoch)).map(decode_members)
    }

    /// The validator set of a height (as consensus uses it), if still kept.
    pub fn validators_at(&self, height: u64) -> Option<Vec<Validator>> {
        self.members(self.params.epoch_of(height))
            .map(|members| to_validators(&members))
    }

    pub fn evidence(&self) -> Vec<EvidenceRecord> {
        self.store
            .scan(b"x/")
            .map(|(_, value)| serde_json::from_slice(value).expect("evidence records are JSON"))
            .collect()
    }

    pub fn experts(&self) -> Vec<ExpertRecord> {
        self.store
            .scan(b"e/")
            .map(|(_, value)| serde_json::from_slice(value).expect("expert records are JSON"))
            .collect()
    }

    pub fn supply(&self) -> Supply {
        self.store
            .get(SUPPLY_KEY)
            .map(|bytes| serde_json::from_slice(bytes).expect("supply is JSON"))
            .unwrap_or_default()
    }

    /// Every token in the state: balances, bonded stake and unbonding amounts.
    pub fn total_tokens(&self) -> u128 {
        let balances: u128 = self
            .store
            .scan(b"a/")
            .map(|(_, value)| u128::from(Account::decode(value).balance))
            .sum();
        let bonded: u128 = self
            .validators()
            .iter()
            .map(|(_, record)| u128::from(record.tokens))
            .sum();
        let unbonding: u128 = self
            .unbondings()
            .iter()
            .map(|(_, _, _, amount)| u128::from(*amount))
            .sum();
        balances + bonded + unbonding
    }

    fn exec(&self, height: u64) -> Exec<'_> {
        Exec {
            overlay: Overlay::new(&self.store),
            params: &self.params,
            chain_id: &self.chain_id,
            height,
            fees: 0,
            supply: self.supply(),
            events: Vec::new(),
        }
    }

    /// Checks a transaction for the mempool against the committed state: signature, nonce
    /// (within `pending` + [`MAX_NONCE_GAP`] ahead), the fee and amount in the balance, and,
    /// when it is the account's next transaction, that it would not fail.
    pub fn check_tx(&self, tx: &Tx, pending: u64) -> Result<(), TxError> {
        tx.verify(&self.chain_id)?;
        let account = self.account(&tx.from);
        if tx.nonce < account.nonce {
            return Err(TxError::StaleNonce {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        if tx.nonce > account.nonce + pending + MAX_NONCE_GAP {
            return Err(TxError::NonceGap {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        let needed = u128::from(tx.body.spends()) + u128::from(tx.fee);
        if u128::from(account.balance) < needed {
            return Err(TxError::InsufficientFunds {
                balance: account.balance,
                needed,
            });
        }
        if tx.nonce == account.nonce && !matches!(tx.body, TxBody::Transfer { .. }) {
            let mut exec = self.exec(self.height + 1);
            if let TxOutcome::Failed(reason) = exec.apply_tx(tx) {
                return Err(TxError::WouldFail(reason));
            }
        }
        Ok(())
    }

    /// Whether evidence would punish someone in the next block (`Err`: why not).
    pub fn would_punish(&self, evidence: &Evidence) -> Result<(), String> {
        self.exec(self.height + 1).double_sign(evidence)
    }

    /// Executes a block (its transactions already verified) over this state; nothing changes
    /// until [`ChainState::commit`].
    pub fn execute(
        &self,
        input: &BlockInput,
        txs: &[Tx],
        inference: &dyn InferenceRewards,
    ) -> Executed {
        assert_eq!(
            input.height,
            self.height + 1,
            "blocks execute in height order"
        );
        let mut exec = self.exec(input.height);
        for evidence in &input.evidence {
            if let Err(reason) = exec.double_sign(evidence) {
                tracing::debug!(%reason, "block evidence skipped");
            }
        }
        if let Some(signers) = &input.last_signers {
            exec.downtime(signers);
        }
        let outcomes: Vec<TxOutcome> = txs.iter().map(|tx| exec.apply_tx(tx)).collect();
        exec.mature_unbondings();
        exec.rewards(input, inference);
        exec.maybe_next_set();
        exec.overlay.put(
            SUPPLY_KEY.to_vec(),
            serde_json::to_vec(&exec.supply).expect("serialises"),
        );
        let Exec {
            overlay, events, ..
        } = exec;
        let writes = overlay.writes;
        let (app_hash, bucket_updates) = self.store.root_after(&writes);
        Executed {
            writes,
            app_hash,
            bucket_updates,
            outcomes,
            events,
        }
    }

    /// Applies an executed block.
    pub fn commit(&mut self, executed: Executed) {
        self.store
            .apply(executed.writes, executed.app_hash, &executed.bucket_updates);
        self.height += 1;
    }
}

/// How far past the account nonce (plus pending ones) a mempool transaction may be.
pub const MAX_NONCE_GAP: u64 = 64;

impl Exec<'_> {
    fn account(&self, address: &[u8; 32]) -> Account {
        self.overlay
            .get(&account_key(address))
            .map(|bytes| Account::decode(&bytes))
            .unwrap_or_default()
    }

    fn set_account(&mut self, address: &[u8; 32], account: Account) {
        self.overlay.put(account_key(address), account.encode());
    }

    fn credit(&mut self, address: &[u8; 32], amount: u64) {
        if amount == 0 {
            return;
        }
        let mut account = self.account(address);
        account.balance = account
            .balance
            .checked_add(amount)
            .expect("balances are bounded by the supply, which fits a u64");
        self.set_account(address, account);
    }

    fn validator(&self, key: &[u8; 32]) -> Option<ValidatorRecord> {
        self.overlay
            .get(&validator_key(key))
            .map(|bytes| serde_json::from_slice(&bytes).expect("validator records are JSON"))
    }

    fn set_validator(&mut self, key: &[u8; 32], record: &ValidatorRecord) {
        self.overlay.put(
            validator_key(key),
            serde_json::to_vec(record).expect("serialises"),
        );
    }

    fn delegation(&self, validator: &[u8; 32], delegator: &[u8; 32]) -> u64 {
        self.overlay
            .get(&delegation_key(validator, delegator))
            .map_or(0, |bytes| number(&bytes))
    }

    fn set_delegation(&mut self, validator: &[u8; 32], delegator: &[u8; 32], amount: u64) {
        let key = delegation_key(validator, delegator);
        if amount == 0 {
            self.overlay.delete(key);
        } else {
            self.overlay.put(key, amount.to_be_bytes().to_vec());
        }
    }

    fn delegations(&self, validator: &[u8; 32]) -> Vec<([u8; 32], u64)> {
        let prefix = [b"d/".as_slice(), validator].concat();
        self.overlay
            .scan(&prefix)
            .into_iter()
            .map(|(key, value)| (key[34..].try_into().expect("66-byte keys"), number(&value)))
            .collect()
    }

    fn members(&self, epoch: u64) -> Option<Vec<Member>> {
        self.overlay
            .get(&set_key(epoch))
            .map(|b| decode_members(&b))
    }

    /// Burns `bps` of a validator's stake, from each delegation pro rata (rounded down per
    /// delegation); returns the amount burned.
    fn slash(&mut self, key: &[u8; 32], record: &mut ValidatorRecord, bps: u64) -> u64 {
        let mut burned = 0u64;
        for (delegator, amount) in self.delegations(key) {
            let cut = (u128::from(amount) * u128::from(bps) / u128::from(BPS)) as u64;
            if cut > 0 {
                self.set_delegation(key, &delegator, amount - cut);
                burned += cut;
            }
        }
        record.tokens -= burned;
        record.slashed += burned;
        self.supply.burned += burned;
        burned
    }

    /// Burns `bps` of every unbonding from validator `key` that began at or after height
    /// `since`: that stake was bonded at the infraction. Returns what was burned.
    fn slash_unbonding(&mut self, key: &[u8; 32], since: u64, bps: u64) -> u64 {
        let mut burned = 0u64;
        for (entry, value) in self.overlay.scan(b"u/") {
            if entry[42..74] != key[..] {
                continue;
            }
            let began = number(&entry[2..10]).saturating_sub(self.params.unbonding_blocks);
            if began < since {
                continue;
            }
            let amount = number(&value);
            let cut = (u128::from(amount) * u128::from(bps) / u128::from(BPS)) as u64;
            if cut == 0 {
                continue;
            }
            if amount == cut {
                self.overlay.delete(entry);
            } else {
                self.overlay
                    .put(entry, (amount - cut).to_be_bytes().to_vec());
            }
            burned += cut;
        }
        self.supply.burned += burned;
        burned
    }

    fn punished(&mut self, validator: [u8; 32], reason: &'static str, burned: u64, until: u64) {
        self.events.push(StateEvent::Slashed {
            validator,
            reason,
            burned,
        });
        self.events.push(StateEvent::Jailed { validator, until });
    }

    /// Punishes a double sign; the reason when the evidence does not count.
    fn double_sign(&mut self, evidence: &Evidence) -> Result<(), String> {
        let vote = evidence.first.vote;
        if vote.height > self.height {
            return Err(format!(
                "evidence is about height {}, after this block",
                vote.height
            ));
        }
        if self.height - vote.height > self.params.evidence_max_age {
            return Err(format!(
                "evidence about height {} is older than {} blocks",
                vote.height, self.params.evidence_max_age
            ));
        }
        let epoch = self.params.epoch_of(vote.height);
        let members = self
            .members(epoch)
            .ok_or_else(|| format!("the validator set of height {} is not kept", vote.height))?;
        let member = members
            .get(vote.validator as usize)
            .copied()
            .ok_or_else(|| format!("no validator {} at height {}", vote.validator, vote.height))?;
        let public = VerifyingKey::from_bytes(&member.key)
            .map_err(|_| "the validator's key is not a valid point".to_string())?;
        if !evidence.is_valid(self.chain_id, &public) {
            return Err("the two votes are not a signed equivocation".into());
        }
        let record_key = [
            b"x/".as_slice(),
            &member.key,
            &vote.height.to_be_bytes(),
            &vote.round.to_be_bytes(),
            &[u8::from(vote.kind == VoteKind::Precommit)],
        ]
        .concat();
        if self.overlay.get(&record_key).is_some() {
            return Err("this equivocation was already punished".into());
        }
        let mut record = self
            .validator(&member.key)
            .ok_or_else(|| "the validator has no record".to_string())?;
        if record.tombstoned {
            return Err("the validator is already tombstoned".into());
        }
        let bps = self.params.double_sign_slash_bps;
        let unbonding = self.slash_unbonding(&member.key, vote.height, bps);
        record.slashed += unbonding;
        let burned = self.slash(&member.key, &mut record, bps) + unbonding;
        record.tombstoned = true;
        record.jailed = true;
        record.jailed_until = u64::MAX;
        self.set_validator(&member.key, &record);
        let stored = EvidenceRecord {
            validator: hex::encode(member.key),
            height: vote.height,
            round: vote.round,
            step: step_name(vote.kind).into(),
            punished_at: self.height,
            burned,
        };
        self.overlay
            .put(record_key, serde_json::to_vec(&stored).expect("serialises"));
        self.punished(member.key, "double sign", burned, u64::MAX);
        Ok(())
    }

    /// Records who signed the previous block; jails and slashes validators past the limit.
    fn downtime(&mut self, signers: &[u32]) {
        let previous = self.height - 1;
        let Some(members) = self.members(self.params.epoch_of(previous)) else {
            return;
        };
        let window = u64::from(self.params.downtime_window);
        for (index, member) in members.iter().enumerate() {
            let Some(mut record) = self.validator(&member.key) else {
                continue;
            };
            if record.jailed {
                continue;
            }
            let missed = !signers.contains(&(index as u32));
            record.window.resize(window.div_ceil(8) as usize, 0);
            let position = (record.window_pos % window) as usize;
            let (byte, bit) = (position / 8, 1u8 << (position % 8));
            if record.window[byte] & bit != 0 {
                record.missed -= 1;
            }
            if missed {
                record.window[byte] |= bit;
                record.missed += 1;
            } else {
                record.window[byte] &= !bit;
            }
            record.window_pos += 1;
            if record.missed > self.params.downtime_max_missed {
                let burned = self.slash(&member.key, &mut record, self.params.downtime_slash_bps);
                record.jailed = true;
                record.jailed_until = self.height + self.params.downtime_jail_blocks;
                record.window.fill(0);
                record.missed = 0;
                record.window_pos = 0;
                self.punished(member.key, "downtime", burned, record.jailed_until);
            }
            self.set_validator(&member.key, &record);
        }
    }

    /// Applies one transaction: the fee and nonce first, then the body, whose checks all come
    /// before its writes (so a failing body changes nothing).
    fn apply_tx(&mut self, tx: &Tx) -> TxOutcome {
        let mut account = self.account(&tx.from);
        if tx.nonce != account.nonce || account.balance < tx.fee {
            return TxOutcome::Skipped;
        }
        account.balance -= tx.fee;
        account.nonce += 1;
        self.set_account(&tx.from, account);
        self.fees += tx.fee;
        match self.apply_body(&tx.from, &tx.body) {
            Ok(()) => TxOutcome::Applied,
            Err(reason) => TxOutcome::Failed(reason),
        }
    }

    fn apply_body(&mut self, from: &[u8; 32], body: &TxBody) -> Result<(), String> {
        match body {
            TxBody::Transfer { to, amount } => {
                self.debit(from, *amount)?;
                self.credit(to, *amount);
                Ok(())
            }
            TxBody::CreateValidator {
                amount,
                commission_bps,
            } => self.create_validator(from, *amount, *commission_bps),
            TxBody::Delegate { validator, amount } => self.delegate(from, validator, *amount),
            TxBody::Undelegate { validator, amount } => self.undelegate(from, validator, *amount),
            TxBody::Unjail => self.unjail(from),
            TxBody::RegisterExpert {
                content_hash,
                tiles_root,
                name,
                layer,
                tiles,
                bytes,
            } => {
                let key = expert_key(content_hash);
                if self.overlay.get(&key).is_some() {
                    return Err(format!("expert {content_hash} is already registered"));
                }
                let record = ExpertRecord {
                    owner: hex::encode(from),
                    content_hash: *content_hash,
                    tiles_root: *tiles_root,
                    name: name.clone(),
                    layer: *layer,
                    tiles: *tiles,
                    bytes: *bytes,
                    height: self.height,
                };
                self.overlay
                    .put(key, serde_json::to_vec(&record).expect("serialises"));
                Ok(())
            }
            TxBody::SubmitEvidence { evidence } => self.double_sign(evidence),
        }
    }

    /// Takes `amount` from `from`'s balance, or says the balance is short.
    fn debit(&mut self, from: &[u8; 32], amount: u64) -> Result<(), String> {
        let mut sender = self.account(from);
        if amount > sender.balance {
            return Err(format!("balance {} is less than {amount}", sender.balance));
        }
        sender.balance -= amount;
        self.set_account(from, sender);
        Ok(())
    }

    fn create_validator(
        &mut self,
        from: &[u8; 32],
        amount: u64,
        commission_bps: u32,
    ) -> Result<(), String> {
        if self.validator(from).is_some() {
            return Err("already a validator".into());
        }
        if amount == 0 {
            return Err("self-bond must be > 0".into());
        }
        if u64::from(commission_bps) > BPS {
            return Err(format!("commission {commission_bps} bps is over {BPS}"));
        }
        VerifyingKey::from_bytes(from)
            .map_err(|_| "the address is not a valid consensus key".to_string())?;
        self.debit(from, amount)?;
        let record = ValidatorRecord {
            tokens: amount,
            commission_bps: u64::from(commission_bps),
            created_height: self.height,
            ..ValidatorRecord::default()
        };
        self.set_validator(from, &record);
        self.set_delegation(from, from, amount);
        Ok(())
    }

    fn delegate(
        &mut self,
        from: &[u8; 32],
        validator: &[u8; 32],
        amount: u64,
    ) -> Result<(), String> {
        let mut record = self
            .validator(validator)
            .ok_or_else(|| format!("{} is not a validator", hex::encode(validator)))?;
        if record.tombstoned {
            return Err("the validator is tombstoned".into());
        }
        if amount == 0 {
            return Err("amount must be > 0".into());
        }
        self.debit(from, amount)?;
        record.tokens += amount;
        self.set_validator(validator, &record);
        let bonded = self.delegation(validator, from);
        self.set_delegation(validator, from, bonded + amount);
        Ok(())
    }

    fn undelegate(
        &mut self,
        from: &[u8; 32],
        validator: &[u8; 32],
        amount: u64,
    ) -> Result<(), String> {
        let bonded = self.delegation(validator, from);
        if amount == 0 || amount > bonded {
            return Err(format!(
                "amount {amount} is not between 1 and the bonded {bonded}"
            ));
        }
        let mut record = self
            .validator(validator)
            .ok_or_else(|| "no such validator".to_string())?;
        record.tokens -= amount;
        self.set_validator(validator, &record);
        self.set_delegation(validator, from, bonded - amount);
        let matures = self.height + self.params.unbonding_blocks;
        let key = [unbonding_prefix(matures).as_slice(), from, validator].concat();
        let pending = self.overlay.get(&key).map_or(0, |bytes| number(&bytes));
        self.overlay
            .put(key, (pending + amount).to_be_bytes().to_vec());
        Ok(())
    }

    fn unjail(&mut self, from: &[u8; 32]) -> Result<(), String> {
        let mut record = self
            .validator(from)
            .ok_or_else(|| "not a validator".to_string())?;
        if record.tombstoned {
            return Err("tombstoned for double signing: never unjailed".into());
        }
        if !record.jailed {
            return Err("not jailed".into());
        }
        if self.height < record.jailed_until {
            return Err(format!("jailed until height {}", record.jailed_until));
        }
        record.jailed = false;
        record.jailed_until = 0;
        self.set_validator(from, &record);
        Ok(())
    }

    fn mature_unbondings(&mut self) {
        for (key, value) in self.overlay.scan(&unbonding_prefix(self.height)) {
            let delegator: [u8; 32] = key[10..42].try_into().expect("74-byte keys");
            self.credit(&delegator, number(&value));
            self.overlay.delete(key);
        }
    }

    /// Pays `amount` to a validator: its commission to its own account, the rest to its
    /// delegators pro rata (rounded down), what rounding leaves to the validator's account.
    fn pay_validator(&mut self, key: &[u8; 32], amount: u64) {
        let commission_bps = self.validator(key).map_or(0, |r| r.commission_bps);
        let commission = (u128::from(amount) * u128::from(commission_bps) / u128::from(BPS)) as u64;
        let rest = amount - commission;
        let delegations = self.delegations(key);
        let total: u128 = delegations.iter().map(|(_, a)| u128::from(*a)).sum();
        let mut paid = 0u64;
        for (delegator, bonded) in delegations {
            let share = (u128::from(rest) * u128::from(bonded))
                .checked_div(total)
                .unwrap_or(0) as u64;
            self.credit(&delegator, share);
            paid += share;
        }
        self.credit(key, amount - paid);
    }

    /// Mints the block reward and pays it with the fees: the proposer bonus to the proposer,
    /// the rest to the previous block's signers pro rata to power (rounding left-overs to the
    /// proposer); inference rewards as the hook gives them.
    fn rewards(&mut self, input: &BlockInput, inference: &dyn InferenceRewards) {
        let pool = self.params.block_reward + self.fees;
        self.supply.minted += self.params.block_reward;
        let proposer = self
            .members(self.params.epoch_of(self.height))
            .and_then(|members| members.get(input.proposer as usize).map(|m| m.key));
        let signers: Vec<Member> = match &input.last_signers {
            Some(indices) => {
                let members = self
                    .members(self.params.epoch_of(self.height - 1))
                    .unwrap_or_default();
                indices
                    .iter()
                    .filter_map(|index| members.get(*index as usize).copied())
                    .collect()
            }
            None => Vec::new(),
        };
        let signed_power: u128 = signers.iter().map(|m| u128::from(m.power)).sum();
        let bonus = match proposer {
            Some(_) if signed_power > 0 => {
                (u128::from(pool) * u128::from(self.params.proposer_bonus_bps) / u128::from(BPS))
                    as u64
            }
            Some(_) => pool,
            None => 0,
        };
        let rest = pool - bonus;
        let mut paid = 0u64;
        for signer in &signers {
            let share = (u128::from(rest) * u128::from(signer.power))
                .checked_div(signed_power)
                .unwrap_or(0) as u64;
            self.pay_validator(&signer.key, share);
            paid += share;
        }
        let left = rest - paid;
        match proposer {
            Some(key) => self.pay_validator(&key, bonus + left),
            None if signed_power > 0 => self.pay_validator(&signers[0].key, left),
            None => self.supply.burned += pool,
        }
        for (address, amount) in inference.payouts(self.height) {
            self.supply.minted += amount;
            self.credit(&address, amount);
        }
    }

    /// One block before an epoch ends, fixes the next epoch's set: the top `max_validators`
    /// unjailed validators by stake (ties by key), power equal to stake. An empty result keeps
    /// the current set (the chain must have validators).
    fn maybe_next_set(&mut self) {
        let epoch_length = self.params.epoch_length;
        if !(self.height + 1).is_multiple_of(epoch_length) {
            return;
        }
        let next_epoch = (self.height + 1) / epoch_length;
        let mut candidates: Vec<([u8; 32], u64)> = self
            .overlay
            .scan(b"v/")
            .into_iter()
            .filter_map(|(key, value)| {
                let record: ValidatorRecord =
                    serde_json::from_slice(&value).expect("validator records are JSON");
                (!record.jailed && !record.tombstoned && record.tokens > 0)
                    .then(|| (key[2..].try_into().expect("34-byte keys"), record.tokens))
            })
            .collect();
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        candidates.truncate(self.params.max_validators as usize);
        let mut members: Vec<Member> = candidates
            .into_iter()
            .map(|(key, power)| Member { key, power })
            .collect();
        let total: u128 = members.iter().map(|m| u128::from(m.power)).sum();
        if members.is_empty() || total > u128::from(crate::consensus::validators::MAX_TOTAL_POWER) {
            members = self
                .members(next_epoch - 1)
                .expect("the current epoch's set is kept");
        }
        self.events.push(StateEvent::NewSet {
            epoch: next_epoch,
            members: members.len(),
        });
        self.overlay
            .put(set_key(next_epoch), encode_members(&members));
        // Sets older than evidence can reach are dropped.
        let oldest_height = (self.height + 1).saturating_sub(self.params.evidence_max_age);
        let oldest_epoch = self.params.epoch_of(oldest_height);
        for (key, _) in self.overlay.scan(b"s/") {
            if number(&key[2..10]) < oldest_epoch {
                self.overlay.delete(key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
