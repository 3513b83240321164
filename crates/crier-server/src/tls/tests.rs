use super::*;

struct Pair {
    dir: tempfile::TempDir,
}

impl Pair {
    /// A self-signed certificate for 127.0.0.1 and its key, as PEM files.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write key");
        Self { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

fn load_error(cert: &Path, key: &Path) -> String {
    match Tls::load(cert, key) {
        Ok(_) => panic!("{} and {} should not load", cert.display(), key.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_matching_pair_loads() {
    let pair = Pair::new();
    Tls::load(&pair.cert(), &pair.key()).expect("loads");
}

#[test]
fn a_missing_certificate_names_tls_cert() {
    let pair = Pair::new();
    let missing = pair.dir.path().join("nope.pem");
    let e = load_error(&missing, &pair.key());
    assert!(e.starts_with("server.tls_cert: cannot read "), "{e}");
    assert!(e.contains("nope.pem"), "{e}");
}

#[test]
fn a_missing_key_names_tls_key() {
    let pair = Pair::new();
    let missing = pair.dir.path().join("nope.pem");
    let e = load_error(&pair.cert(), &missing);
    assert!(e.starts_with("server.tls_key: cannot read "), "{e}");
}

#[test]
fn a_file_without_certificates_names_tls_cert() {
    let pair = Pair::new();
    // The key file given as the certificate: PEM, but no CERTIFICATE block.
    let e = load_error(&pair.key(), &pair.key());
    assert!(e.starts_with("server.tls_cert: "), "{e}");
    assert!(e.contains("no CERTIFICATE block"), "{e}");
}

#[test]
fn a_file_without_a_key_names_tls_key() {
    let pair = Pair::new();
    let e = load_error(&pair.cert(), &pair.cert());
    assert!(e.starts_with("server.tls_key: "), "{e}");
    assert!(e.contains("no private key"), "{e}");
}

#[test]
fn a_key_of_another_certificate_is_a_mismatch_naming_tls_key() {
    let (a, b) = (Pair::new(), Pair::new());
    let e = load_error(&a.cert(), &b.key());
    assert!(e.starts_with("server.tls_key: the key in "), "{e}");
    assert!(e.contains("does not belong to the certificate"), "{e}");
}

#[test]
fn a_failed_reload_keeps_the_certificate_in_use() {
    let pair = Pair::new();
    let tls = Tls::load(&pair.cert(), &pair.key()).expect("loads");
    let before = tls.certs.current.read().cert.clone();
    std::fs::write(pair.key(), "not a key").expect("write");
    let e = tls.reload().expect_err("a broken key does not reload");
    assert!(e.to_string().starts_with("server.tls_key: "), "{e}");
    assert_eq!(tls.certs.current.read().cert, before);
}

#[test]
fn a_reload_serves_the_new_certificate() {
    let pair = Pair::new();
    let tls = Tls::load(&pair.cert(), &pair.key()).expect("loads");
    let before = tls.certs.current.read().cert.clone();
    let other = Pair::new();
    std::fs::copy(other.cert(), pair.cert()).expect("copy cert");
    std::fs::copy(other.key(), pair.key()).expect("copy key");
    tls.reload().expect("reloads");
    let after = tls.certs.current.read().cert.clone();
    assert_ne!(after, before);
    let expected = CertificateDer::pem_file_iter(other.cert())
        .expect("pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    assert_eq!(after, expected);
}
