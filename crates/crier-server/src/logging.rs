//! Log output: human-readable or JSON, to stderr or a file.

use crate::config::{Config, LogFormat};
use std::fs::OpenOptions;
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` refines the default `info` level.
///
/// # Errors
/// The log file cannot be opened for appending.
pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
