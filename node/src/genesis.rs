//! The genesis file: chain id, the validator set and the funded accounts every node starts from.
//!
//! `HOME/genesis.json`; every node of a chain must hold the same one (its hash is shown in
//! `/status`). Validation names the field at fault, e.g. `validators[2].power: must be > 0`.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::block::Hash;
use crate::config::check_name;
use crate::consensus::validators::{Validator, ValidatorSet};
use crate::state::StakingParams;

/// Why a genesis file is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("{path}: cannot read genesis: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid genesis JSON: {message}")]
    Parse { path: String, message: String },
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        field: String,
        reason: String,
    },
}

/// A genesis validator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// A name for people (the node's moniker).
    pub name: String,
    /// Hex of the validator's ed25519 consensus public key.
    pub public_key: String,
    /// Voting power.
    pub power: u64,
}

/// An account funded at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// Hex of the account's ed25519 public key.
    pub address: String,
    pub balance: u64,
}

/// The genesis file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    /// Milliseconds since the Unix epoch; block 1's time is later.
    pub genesis_time_ms: u64,
    pub validators: Vec<GenesisValidator>,
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    /// Staking, epoch, slashing and reward parameters (`docs/STAKING.md`); devnet defaults.
    #[serde(default)]
    pub staking: StakingParams,
}

/// Largest total of genesis balances and stakes (a quarter of u64, so minting never overflows).
pub const MAX_GENESIS_SUPPLY: u64 = u64::MAX / 4;

/// Largest genesis file accepted.
const MAX_GENESIS_BYTES: u64 = 64 << 20;

fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text).map_err(|_| format!("{text:?} is not hex"))?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not 32 bytes of hex"))?;
    VerifyingKey::from_bytes(&array).map_err(|_| format!("{text:?} is not an ed25519 public key"))
}

impl Genesis {
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let shown = path.display().to_string();
        let read = |source| GenesisError::Read {
            path: shown.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_GENESIS_BYTES {
            return Err(GenesisError::Parse {
                path: shown,
                message: format!("{size} bytes is over the limit of {MAX_GENESIS_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let genesis: Genesis = serde_json::from_str(&text).map_err(|e| GenesisError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        genesis.validate(&shown)?;
        Ok(genesis)
    }

    /// Writes the file (pretty JSON) atomically: a temporary file renamed over the target.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("genesis serialises");
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, text + "\n")?;
        std::fs::rename(&temporary, path)
    }

    /// Checks every field; errors name the field.
    pub fn validate(&self, origin: &str) -> Result<(), GenesisError> {
        let invalid = |field: String, reason: String| GenesisError::Invalid {
            origin: origin.to_string(),
            field,
            reason,
        };
        check_name(&self.chain_id).map_err(|reason| invalid("chain_id".into(), reason))?;
        if self.validators.is_empty() {
            return Err(invalid(
                "validators".into(),
                "at least one validator is needed".into(),
            ));
        }
        let mut keys = std::collections::HashMap::new();
        for (index, validator) in self.validators.iter().enumerate() {
            let field = |name: &str| format!("validators[{index}].{name}");
            check_name(&validator.name).map_err(|reason| invalid(field("name"), reason))?;
            parse_key(&validator.public_key)
                .map_err(|reason| invalid(field("public_key"), reason))?;
            if let Some(first) = keys.insert(validator.public_key.to_ascii_lowercase(), index) {
                return Err(invalid(
                    field("public_key"),
                    format!("same key as validators[{first}]"),
                ));
            }
            if validator.power == 0 {
                return Err(invalid(field("power"), "must be > 0".into()));
            }
        }
        let mut addresses = std::collections::HashMap::new();
        for (index, account) in self.accounts.iter().enumerate() {
            let field = |name: &str| format!("accounts[{index}].{name}");
            parse_key(&account.address).map_err(|reason| invalid(field("address"), reason))?;
            if let Some(first) = addresses.insert(account.address.to_ascii_lowercase(), index) {
                return Err(invalid(
                    field("address"),
                    format!("same address as accounts[{first}]"),
                ));
            }
        }
        self.validator_set()
            .map_err(|error| invalid("validators".into(), error.to_string()))?;
        self.staking
            .validate()
            .map_err(|(field, reason)| invalid(field.into(), reason))?;
        // Rewards are minted into u64 balances: leave the supply ample headroom.
        let supply: u128 = self
            .accounts
            .iter()
            .map(|account| u128::from(account.balance))
            .chain(self.validators.iter().map(|v| u128::from(v.power)))
            .sum();
        if supply > u128::from(MAX_GENESIS_SUPPLY) {
            return Err(invalid(
                "accounts".into(),
                format!("balances and stakes sum to {supply}, over {MAX_GENESIS_SUPPLY}"),
            ));
        }
        Ok(())
    }

    /// The validator set of height 1.
    pub fn validator_set(
        &self,
    ) -> Result<ValidatorSet, crate::consensus::validators::ValidatorSetError> {
        ValidatorSet::new(
            self.validators
                .iter()
                .map(|validator| Validator {
                    public_key: parse_key(&validator.public_key)
                        .expect("checked by validate() before use"),
                    power: validator.power,
                })
                .collect(),
        )
    }

    /// Accounts as (public key bytes, balance).
    pub fn account_balances(&self) -> Vec<([u8; 32], u64)> {
        self.accounts
            .iter()
            .map(|account| {
                let key = parse_key(&account.address).expect("checked by validate() before use");
                (key.to_bytes(), account.balance)
            })
            .collect()
    }

    /// Hash of the canonical JSON; nodes with different genesis files show different hashes.
    pub fn hash(&self) -> Hash {
        Hash::digest(
            serde_json::to_string(self)
                .expect("genesis serialises")
                .as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> String {
        hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
        )
    }

    fn genesis() -> Genesis {
        Genesis {
            chain_id: "test".into(),
            genesis_time_ms: 0,
            validators: (0..4)
                .map(|i| GenesisValidator {
                    name: format!("node{i}"),
                    public_key: key(i + 1),
                    power: 10,
                })
                .collect(),
            accounts: vec![GenesisAccount {
                address: key(9),
                balance: 100,
            }],
            staking: StakingParams::devnet(),
        }
    }

    #[test]
    fn round_trips_and_names_bad_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("genesis.json");
        let good = genesis();
        good.save(&path).unwrap();
        assert_eq!(Genesis::load(&path).unwrap(), good);
        assert_eq!(good.validator_set().unwrap().len(), 4);

        let mut bad = genesis();
        bad.validators[3].power = 0;
        let error = bad.validate("g").unwrap_err().to_string();
        assert_eq!(error, "g: validators[3].power: must be > 0");

        let mut bad = genesis();
        bad.validators[2].public_key = bad.validators[0].public_key.clone();
        let error = bad.validate("g").unwrap_err().to_string();
        assert!(
            error.contains("validators[2].public_key: same key as validators[0]"),
            "{error}"
        );

        let mut bad = genesis();
        bad.accounts[0].address = "zz".into();
        let error = bad.validate("g").unwrap_err().to_string();
        assert!(error.contains("accounts[0].address"), "{error}");

        let mut bad = genesis();
        bad.staking.epoch_length = 1;
        let error = bad.validate("g").unwrap_err().to_string();
        assert_eq!(error, "g: staking.epoch_length: must be at least 2");

        std::fs::write(&path, "{\"chain_id\": 5}").unwrap();
        let error = Genesis::load(&path).unwrap_err().to_string();
        assert!(error.contains("invalid genesis JSON"), "{error}");
    }
}
