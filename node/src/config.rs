//! Node configuration: `config.toml`, then `BLYAN_*` environment variables, then flags.
//!
//! Every setting is documented in the file that `blyan-node init` writes ([`Config::template`]).
//! An environment variable `BLYAN_<SECTION>_<KEY>` (or `BLYAN_<KEY>` for top-level keys)
//! overrides the file, for example `BLYAN_API_LISTEN=127.0.0.1:8080`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::StorageConfig;

/// Why a configuration could not be loaded; each names the file, variable or field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source} (run `blyan-node init --home {home}` first?)", home = path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {variable}={value:?}: {reason}")]
    Environment {
        variable: String,
        value: String,
        reason: String,
    },
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        field: String,
        reason: String,
    },
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or directives (`info,blyan_node::storage=debug`).
    pub level: String,
}

/// The whole node configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub moniker: String,
    pub chain_id: String,
    pub api: ApiConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
}

impl Config {
    /// The default configuration for a node called `moniker` on `chain_id`.
    pub fn new(moniker: &str, chain_id: &str) -> Config {
        Config {
            moniker: moniker.to_string(),
            chain_id: chain_id.to_string(),
            api: ApiConfig {
                listen: "127.0.0.1:26657".into(),
                max_body_bytes: 1 << 20,
            },
            storage: StorageConfig::default(),
            log: LogConfig {
                format: LogFormat::Human,
                level: "info".into(),
            },
        }
    }

    /// The commented `config.toml` that `blyan-node init` writes, holding this configuration.
    pub fn template(&self) -> String {
        let storage = &self.storage;
        let format = match self.log.format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        format!(
            r#"# Blyan node configuration.
# Precedence: this file, then environment variables BLYAN_<SECTION>_<KEY> (BLYAN_<KEY> for the
# top-level keys, e.g. BLYAN_API_LISTEN=0.0.0.0:26657), then command-line flags.

# Human-readable name of this node, shown in /status. Letters, digits, '.', '_' and '-'.
moniker = "{moniker}"
# Chain this node belongs to; every block carries it. Same character rules as moniker.
chain_id = "{chain_id}"

[api]
# Address of the HTTP API (/health, /status, /metrics, /checkpoints). Use 0.0.0.0 in containers.
listen = "{listen}"
# Largest request body accepted, in bytes; larger requests get 413 with a JSON error.
max_body_bytes = {max_body_bytes}

[storage]
# Shared RocksDB block cache for all column families, in MiB.
block_cache_mb = {block_cache_mb}
# Memtable size of the blocks column family in MiB; the other families use a quarter of it.
write_buffer_mb = {write_buffer_mb}
# Memtables per column family before writes wait for a flush (2 to 16).
max_write_buffers = {max_write_buffers}
# Block values of at least this many bytes are kept in blob files, out of the LSM tree.
blob_min_bytes = {blob_min_bytes}
# Checkpoints kept under HOME/checkpoints; older ones are deleted. 0 keeps them all.
checkpoint_retention = {checkpoint_retention}

[log]
# "human" for people, "json" for machines (one JSON object per line).
format = "{format}"
# Level or tracing filter directives, e.g. "info" or "info,blyan_node::storage=debug".
level = "{level}"
"#,
            moniker = self.moniker,
            chain_id = self.chain_id,
            listen = self.api.listen,
            max_body_bytes = self.api.max_body_bytes,
            block_cache_mb = storage.block_cache_mb,
            write_buffer_mb = storage.write_buffer_mb,
            max_write_buffers = storage.max_write_buffers,
            blob_min_bytes = storage.blob_min_bytes,
            checkpoint_retention = storage.checkpoint_retention,
            level = self.log.level,
        )
    }

    /// Loads `path`, applies `BLYAN_*` variables from `environment`, and validates.
    pub fn load(
        path: &Path,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message: message.trim().replace('\n', " "),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
        let config: Config = table
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        config.validate(&path.display().to_string())?;
        let overridden = apply_environment(&mut table, environment)?;
        if overridden.is_empty() {
            return Ok(config);
        }
        let origin = format!("{} with {}", path.display(), overridden.join(", "));
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "after applying {}: {}",
                    overridden.join(", "),
                    e.to_string().trim()
                ),
            })?;
        config.validate(&origin)?;
        Ok(config)
    }

    /// Checks every field; the error names the field and says what is allowed.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            reason,
        };
        check_name(&self.moniker).map_err(|reason| invalid("moniker", reason))?;
        check_name(&self.chain_id).map_err(|reason| invalid("chain_id", reason))?;
        self.api.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "api.listen",
                format!("{:?} is not an IP:port address", self.api.listen),
            )
        })?;
        if !(1024..=(64 << 20)).contains(&self.api.max_body_bytes) {
            return Err(invalid(
                "api.max_body_bytes",
                "must be between 1024 and 67108864".into(),
            ));
        }
        self.storage
            .validate()
            .map_err(|(field, reason)| invalid(field, reason))?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|error| invalid("log.level", format!("{:?}: {error}", self.log.level)))?;
        Ok(())
    }

    pub fn api_listen(&self) -> SocketAddr {
        self.api
            .listen
            .parse()
            .expect("api.listen is checked by validate()")
    }
}

/// Letters, digits, '.', '_' and '-', 1 to 64 bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(format!(
            "{name:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// Applies `BLYAN_*` overrides to the parsed table; returns the variables used. A variable
/// that names no setting is an error (a typo must not be silently ignored), except the ones read
/// elsewhere: `BLYAN_HOME` (the command line), `BLYAN_SIM_DEBUG` and `BLYAN_CRASH_SEED` (tests).
fn apply_environment(
    table: &mut toml::Table,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    const NOT_SETTINGS: [&str; 3] = ["BLYAN_HOME", "BLYAN_SIM_DEBUG", "BLYAN_CRASH_SEED"];
    let mut used = Vec::new();
    let mut variables: Vec<(String, String)> = environment
        .into_iter()
        .filter(|(name, _)| name.starts_with("BLYAN_") && !NOT_SETTINGS.contains(&name.as_str()))
        .collect();
    variables.sort();
    for (variable, value) in variables {
        let suffix = variable["BLYAN_".len()..].to_ascii_lowercase();
        let error = |reason: String| ConfigError::Environment {
            variable: variable.clone(),
            value: value.clone(),
            reason,
        };
        let slot = find_slot(table, &suffix)
            .ok_or_else(|| error("names no setting in config.toml".into()))?;
        *slot = match slot {
            toml::Value::Integer(_) => toml::Value::Integer(
                value
                    .parse()
                    .map_err(|_| error("expected an integer".into()))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                value
                    .parse()
                    .map_err(|_| error("expected true or false".into()))?,
            ),
            _ => toml::Value::String(value.clone()),
        };
        used.push(variable);
    }
    Ok(used)
}

/// The value for `section_key` (lower case): a top-level scalar `key`, or `key` in `[section]`.
fn find_slot<'a>(table: &'a mut toml::Table, name: &str) -> Option<&'a mut toml::Value> {
    let section = table.iter().find_map(|(key, value)| {
        let rest = name.strip_prefix(key.as_str())?.strip_prefix('_')?;
        match value {
            toml::Value::Table(inner) if inner.contains_key(rest) => {
                Some((key.clone(), rest.to_string()))
            }
            _ => None,
        }
    });
    match section {
        Some((section, key)) => table.get_mut(&section)?.as_table_mut()?.get_mut(&key),
        None => match table.get_mut(name)? {
            toml::Value::Table(_) => None,
            value => Some(value),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_default(dir: &Path) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, Config::new("node0", "blyan-devnet").template()).unwrap();
        path
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn template_parses_back_to_the_same_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_default(dir.path());
        let config = Config::load(&path, Vec::new()).unwrap();
        assert_eq!(config, Config::new("node0", "blyan-devnet"));
    }

    #[test]
    fn environment_overrides_file_and_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_default(dir.path());
        let config = Config::load(
            &path,
            env(&[
                ("BLYAN_API_LISTEN", "0.0.0.0:9000"),
                ("BLYAN_STORAGE_BLOCK_CACHE_MB", "32"),
                ("BLYAN_MONIKER", "renamed"),
                ("BLYAN_HOME", "/ignored"),
                ("BLYAN_SIM_DEBUG", "1"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.api.listen, "0.0.0.0:9000");
        assert_eq!(config.storage.block_cache_mb, 32);
        assert_eq!(config.moniker, "renamed");
    }

    #[test]
    fn bad_environment_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_default(dir.path());
        let error =
            Config::load(&path, env(&[("BLYAN_STORAGE_BLOCK_CACHE_MB", "lots")])).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("environment variable BLYAN_STORAGE_BLOCK_CACHE_MB"),
            "{error}"
        );
        let error = Config::load(&path, env(&[("BLYAN_API_LISTNE", "x")])).unwrap_err();
        assert!(error.to_string().contains("names no setting"), "{error}");
        let error = Config::load(&path, env(&[("BLYAN_API_LISTEN", "nowhere")])).unwrap_err();
        assert!(error.to_string().contains("api.listen"), "{error}");
    }

    #[test]
    fn truncated_unknown_and_out_of_range_configs_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_default(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(error.contains("config.toml: invalid config"), "{error}");

        std::fs::write(&path, format!("{text}\nsurprise = 1\n")).unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(error.contains("unknown field `surprise`"), "{error}");

        std::fs::write(
            &path,
            text.replace("block_cache_mb = 8", "block_cache_mb = 0"),
        )
        .unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(
            error.contains("storage.block_cache_mb: must be between"),
            "{error}"
        );

        std::fs::write(
            &path,
            text.replace("moniker = \"node0\"", "moniker = \"a b\""),
        )
        .unwrap();
        let error = Config::load(&path, Vec::new()).unwrap_err().to_string();
        assert!(error.contains(": moniker:"), "{error}");
    }
}
