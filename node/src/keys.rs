//! Node identity and validator keys, stored as JSON files with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

/// Why a key could not be written or read; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path} already exists; refusing to overwrite a key (use --force to replace it)")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid key file: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    secret_key: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer_id: Option<String>,
}

/// The libp2p identity of a node.
pub struct NodeKey {
    pub keypair: libp2p_identity::Keypair,
}

impl NodeKey {
    pub fn generate() -> NodeKey {
        NodeKey {
            keypair: libp2p_identity::Keypair::generate_ed25519(),
        }
    }

    pub fn peer_id(&self) -> libp2p_identity::PeerId {
        self.keypair.public().to_peer_id()
    }

    fn secret(&self) -> [u8; 32] {
        let ed25519 = self
            .keypair
            .clone()
            .try_into_ed25519()
            .expect("node keys are always ed25519");
        let mut secret = [0u8; 32];
        secret.copy_from_slice(ed25519.secret().as_ref());
        secret
    }

    pub fn write(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        let secret = self.secret();
        let public = SigningKey::from_bytes(&secret).verifying_key();
        let file = KeyFile {
            kind: "ed25519".into(),
            secret_key: hex::encode(secret),
            public_key: hex::encode(public.as_bytes()),
            peer_id: Some(self.peer_id().to_string()),
        };
        write_private(path, &file, force)
    }

    pub fn read(path: &Path) -> Result<NodeKey, KeyError> {
        let (file, secret) = read_file(path)?;
        let keypair = libp2p_identity::Keypair::ed25519_from_bytes(secret).map_err(|error| {
            KeyError::Invalid {
                path: path.to_path_buf(),
                reason: error.to_string(),
            }
        })?;
        let key = NodeKey { keypair };
        if let Some(stated) = file.peer_id {
            if stated != key.peer_id().to_string() {
                return Err(KeyError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!("peer_id {stated} does not match the secret key"),
                });
            }
        }
        Ok(key)
    }
}

/// The consensus signing key of a validator.
pub struct ValidatorKey {
    pub signing: SigningKey,
}

impl ValidatorKey {
    pub fn generate() -> ValidatorKey {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        ValidatorKey {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    pub fn write(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        let file = KeyFile {
            kind: "ed25519".into(),
            secret_key: hex::encode(self.signing.to_bytes()),
            public_key: self.public_hex(),
            peer_id: None,
        };
        write_private(path, &file, force)
    }

    pub fn read(path: &Path) -> Result<ValidatorKey, KeyError> {
        let (_, secret) = read_file(path)?;
        let mut array = [0u8; 32];
        array.copy_from_slice(&secret);
        Ok(ValidatorKey {
            signing: SigningKey::from_bytes(&array),
        })
    }
}

/// A node identity key rotation, signed by the validator key that stays: a peer or operator
/// holding the validator's public key (genesis, `/validators`) can check that the new peer id
/// speaks for the same validator. Written to `keys/node_key_rotation.json` and served at
/// `GET /identity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub old_peer_id: String,
    pub new_peer_id: String,
    pub validator_public_key: String,
    pub rotated_at_unix: u64,
    /// Ed25519 signature (hex) over [`Rotation::message`].
    pub signature: String,
}

impl Rotation {
    fn message(old: &str, new: &str, validator: &str, at: u64) -> Vec<u8> {
        format!("blyan-node-key-rotation/1|{old}|{new}|{validator}|{at}").into_bytes()
    }

    /// Whether the signature is the validator's over these fields.
    pub fn verify(&self) -> bool {
        use ed25519_dalek::{Signature, Verifier, VerifyingKey};
        let Some(public) = hex::decode(&self.validator_public_key)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
        else {
            return false;
        };
        let Some(signature) = hex::decode(&self.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
        else {
            return false;
        };
        let message = Rotation::message(
            &self.old_peer_id,
            &self.new_peer_id,
            &self.validator_public_key,
            self.rotated_at_unix,
        );
        public
            .verify(&message, &Signature::from_bytes(&signature))
            .is_ok()
    }
}

/// Replaces the node identity key in `keys_dir` (the validator key stays): the old key is kept
/// as `node_key.<old peer id>.retired.json`, the signed statement goes to
/// `node_key_rotation.json`, then the new key replaces `node_key.json` atomically.
pub fn rotate_node_key(keys_dir: &Path, validator: &ValidatorKey) -> Result<Rotation, KeyError> {
    use ed25519_dalek::Signer;
    let current = keys_dir.join("node_key.json");
    let old = NodeKey::read(&current)?;
    let new = NodeKey::generate();
    let old_id = old.peer_id().to_string();
    let new_id = new.peer_id().to_string();
    old.write(
        &keys_dir.join(format!("node_key.{old_id}.retired.json")),
        true,
    )?;
    let validator_public_key = validator.public_hex();
    let rotated_at_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let message = Rotation::message(&old_id, &new_id, &validator_public_key, rotated_at_unix);
    let rotation = Rotation {
        old_peer_id: old_id,
        new_peer_id: new_id,
        validator_public_key,
        rotated_at_unix,
        signature: hex::encode(validator.signing.sign(&message).to_bytes()),
    };
    let statement = keys_dir.join("node_key_rotation.json");
    let text = serde_json::to_string_pretty(&rotation).expect("a rotation serialises");
    let io = |source| KeyError::Io {
        path: statement.clone(),
        source,
    };
    let temporary = statement.with_extension("json.tmp");
    std::fs::write(&temporary, text).map_err(io)?;
    std::fs::rename(&temporary, &statement).map_err(io)?;
    new.write(&current, true)?;
    Ok(rotation)
}

/// The last rotation statement in `keys_dir`, if any.
pub fn last_rotation(keys_dir: &Path) -> Option<Rotation> {
    let text = std::fs::read_to_string(keys_dir.join("node_key_rotation.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Reads a key file, checks its type and that the public key matches the secret.
fn read_file(path: &Path) -> Result<(KeyFile, Vec<u8>), KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file: KeyFile = serde_json::from_str(&text).map_err(|error| invalid(error.to_string()))?;
    if file.kind != "ed25519" {
        return Err(invalid(format!("type {:?} is not \"ed25519\"", file.kind)));
    }
    let secret = hex::decode(&file.secret_key)
        .ok()
        .filter(|bytes| bytes.len() == 32)
        .ok_or_else(|| invalid("secret_key is not 32 hex-encoded bytes".into()))?;
    let mut array = [0u8; 32];
    array.copy_from_slice(&secret);
    let public = hex::encode(SigningKey::from_bytes(&array).verifying_key().as_bytes());
    if public != file.public_key.to_ascii_lowercase() {
        return Err(invalid("public_key does not match secret_key".into()));
    }
    Ok((file, secret))
}

/// Writes `file` readable by the owner only. Without `force` an existing file is an error; with
/// it the new key replaces the old atomically (temporary file, then rename).
fn write_private(path: &Path, file: &KeyFile, force: bool) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() && !force {
        return Err(KeyError::Exists {
            path: path.to_path_buf(),
        });
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let temporary = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut handle = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io)?;
    let text = serde_json::to_string_pretty(file).expect("key files always serialise");
    handle.write_all(text.as_bytes()).map_err(io)?;
    handle.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_round_trip_with_private_mode_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let node_path = dir.path().join("node_key.json");
        let node = NodeKey::generate();
        node.write(&node_path, false).unwrap();
        assert_eq!(NodeKey::read(&node_path).unwrap().peer_id(), node.peer_id());
        let mode = std::fs::metadata(&node_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            NodeKey::generate().write(&node_path, false),
            Err(KeyError::Exists { .. })
        ));
        let replacement = NodeKey::generate();
        replacement.write(&node_path, true).unwrap();
        assert_eq!(
            NodeKey::read(&node_path).unwrap().peer_id(),
            replacement.peer_id()
        );

        let validator_path = dir.path().join("validator_key.json");
        let validator = ValidatorKey::generate();
        validator.write(&validator_path, false).unwrap();
        let read = ValidatorKey::read(&validator_path).unwrap();
        assert_eq!(read.public_hex(), validator.public_hex());
    }

    #[test]
    fn rotation_replaces_the_node_key_keeps_the_validator_and_is_signed() {
        let dir = tempfile::tempdir().unwrap();
        let old = NodeKey::generate();
        old.write(&dir.path().join("node_key.json"), false).unwrap();
        let validator = ValidatorKey::generate();
        let rotation = rotate_node_key(dir.path(), &validator).unwrap();
        let now = NodeKey::read(&dir.path().join("node_key.json")).unwrap();
        assert_eq!(rotation.old_peer_id, old.peer_id().to_string());
        assert_eq!(rotation.new_peer_id, now.peer_id().to_string());
        assert_ne!(rotation.old_peer_id, rotation.new_peer_id);
        assert_eq!(rotation.validator_public_key, validator.public_hex());
        assert!(rotation.verify());
        let retired = dir
            .path()
            .join(format!("node_key.{}.retired.json", rotation.old_peer_id));
        assert_eq!(NodeKey::read(&retired).unwrap().peer_id(), old.peer_id());
        assert_eq!(last_rotation(dir.path()), Some(rotation.clone()));
        let mut forged = rotation;
        forged.new_peer_id = NodeKey::generate().peer_id().to_string();
        assert!(!forged.verify(), "a changed statement must not verify");
    }

    #[test]
    fn tampered_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validator_key.json");
        ValidatorKey::generate().write(&path, false).unwrap();
        let other = ValidatorKey::generate().public_hex();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let tampered = text.replace(value["public_key"].as_str().unwrap(), &other);
        std::fs::write(&path, tampered).unwrap();
        let error = ValidatorKey::read(&path).err().unwrap();
        assert!(
            error.to_string().contains("public_key does not match"),
            "{error}"
        );
    }
}
