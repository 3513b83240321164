//! TLS on the listener: `[server] tls_cert` and `tls_key` (PEM paths) turn HTTPS, WSS
//! and SSE over TLS on for the one listener, with rustls.
//!
//! The certificate is held behind a resolver that is asked for it on every handshake,
//! so a replaced certificate is served to new connections without a restart: the files
//! are checked for a change every [`WATCH_INTERVAL`], and [`Tls::reload`] (the binary
//! calls it on SIGHUP) reads them at once. A reload that fails (a half-written file, a
//! key that does not match yet) keeps the certificate in use and logs why.

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the certificate and key files are checked for a change. Two `stat` calls:
/// cheap enough to be often, so a renewed certificate is served within seconds.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate or key that cannot be used, naming the config key it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {path}: {message}")]
    Parse {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(
        "server.tls_key: the key in {key_path} does not belong to the certificate in {cert_path} (server.tls_cert): {message}"
    )]
    Mismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
        message: String,
    },
}

/// The TLS side of the listener: an acceptor whose certificate can be replaced.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    certs: Arc<ReloadingCert>,
}

impl Tls {
    /// Reads and checks the certificate chain and key; the error names the key at fault.
    ///
    /// # Errors
    /// Unreadable files, no certificate or key in them, or a key that does not match.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        // ring rather than aws-lc-rs: it builds with a C compiler alone (aws-lc-rs wants
        // cmake and minutes of build). The cost, and why it is marked deprecated: no
        // post-quantum key exchange; clients fall back to X25519.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = Stamp::of(cert_path, key_path);
        let current = read_pair(cert_path, key_path, &provider)?;
        let certs = Arc::new(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(current)),
            seen: Mutex::new(stamp),
            provider: provider.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        // hyper serves HTTP/1.1 only; saying so keeps a browser from offering h2 first.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
        })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again and serves the new certificate to new connections.
    ///
    /// # Errors
    /// As [`Tls::load`]; the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certs = &self.certs;
        *certs.seen.lock() = Stamp::of(&certs.cert_path, &certs.key_path);
        let fresh = read_pair(&certs.cert_path, &certs.key_path, &certs.provider)?;
        *certs.current.write() = Arc::new(fresh);
        Ok(())
    }

    /// Reloads whenever either file changes (modification time or size), until
    /// `shutdown`.
    pub(crate) async fn watch(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = Stamp::of(&self.certs.cert_path, &self.certs.key_path);
            if now == *self.certs.seen.lock() {
                continue;
            }
            // A failure is remembered as seen: the next change (the second file of a
            // pair being written) tries again, an unchanged broken pair is not retried
            // and logged every tick.
            match self.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded: the files changed"),
                Err(e) => {
                    tracing::warn!("TLS certificate not reloaded, the previous one stays: {e}");
                }
            }
        }
    }
}

/// Modification time and size of both files; `None` for one that cannot be read.
#[derive(Debug, PartialEq, Eq)]
struct Stamp([Option<(SystemTime, u64)>; 2]);

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Self {
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        Self([one(cert), one(key)])
    }
}

#[derive(Debug)]
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Stamp>,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |key, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })
    };
    let parse = |key, path: &Path, message: String| TlsError::Parse {
        key,
        path: path.to_owned(),
        message,
    };
    let cert_pem = read("server.tls_cert", cert_path)?;
    let key_pem = read("server.tls_key", key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse("server.tls_cert", cert_path, format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(parse(
            "server.tls_cert",
            cert_path,
            "no CERTIFICATE block in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        parse(
            "server.tls_key",
            key_path,
            format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            message: e.to_string(),
        },
        other => parse("server.tls_key", key_path, format!("unusable key: {other}")),
    })
}

#[cfg(test)]
mod tests;
