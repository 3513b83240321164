//! Log output: human-readable or JSON, to stderr or a file.

use crate::config::{Config, LogFormat};
use std::fs::OpenOptions;
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

/// The filter without `RUST_LOG`: Crier's own crates at INFO, and only warnings and
/// errors from the libraries under them (the storage engine's INFO lines about its
/// files are not what an operator starting Crier needs to read first).
pub const DEFAULT_FILTER: &str =
    "warn,crier=info,crier_server=info,crier_core=info,crier_protocol=info";

/// Installs the global subscriber: `RUST_LOG` when set, else [`DEFAULT_FILTER`].
///
/// # Errors
/// The log file cannot be opened for appending.
pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let file = &config.server.log_file;
    let result = match (config.server.log_format, file.is_empty()) {
        (LogFormat::Text, true) => builder.with_writer(std::io::stderr).try_init(),
        (LogFormat::Json, true) => builder.json().with_writer(std::io::stderr).try_init(),
        (format, false) => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .map_err(|e| anyhow::anyhow!("server.log_file: cannot open {file}: {e}"))?;
            let b = builder.with_ansi(false).with_writer(Mutex::new(f));
            match format {
                LogFormat::Text => b.try_init(),
                LogFormat::Json => b.json().try_init(),
            }
        }
    };
    result.map_err(|e| anyhow::anyhow!("logging: {e}"))
}
