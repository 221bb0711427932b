use std::path::Path;
use std::process::Command;

use super::*;

const DATA: &[u8] = b"bundle bytes";

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a shell pipeline in `dir` and panics with its stderr if it fails.
fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sign_and_verify_roundtrip() {
    let key = SigningKey::generate().unwrap();
    let signature = key.sign(DATA).unwrap();
    assert_eq!(signature[0], 0x30, "DER sequence");
    key.public_key().verify(DATA, &signature).unwrap();

    let public = PublicKey::from_pem(key.public_key_pem().unwrap().as_bytes()).unwrap();
    public.verify(DATA, &signature).unwrap();
    assert_eq!(public.algorithm(), KeyAlgorithm::EcdsaP256);
    assert_eq!(public.fingerprint(), key.public_key().fingerprint());
    assert!(public.fingerprint().as_str().starts_with("sha256:"));
    assert!(format!("{key:?}").contains("ecdsa-p256"));
}

#[test]
fn private_key_pem_roundtrips() {
    let key = SigningKey::generate().unwrap();
    let pem = key.to_pem().unwrap();
    assert!(pem.contains("-----BEGIN PRIVATE KEY-----"));
    let again = SigningKey::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(
        again.public_key_pem().unwrap(),
        key.public_key_pem().unwrap()
    );
    key.public_key()
        .verify(DATA, &again.sign(DATA).unwrap())
        .unwrap();
}

#[test]
fn tampered_bytes_and_other_keys_are_refused() {
    let key = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let signature = key.sign(DATA).unwrap();
    let err = key
        .public_key()
        .verify(b"bundle bytez", &signature)
        .unwrap_err();
    assert!(matches!(err, SigningError::BadSignature));
    let err = other.public_key().verify(DATA, &signature).unwrap_err();
    assert!(matches!(err, SigningError::BadSignature));
    let err = key
        .public_key()
        .verify(DATA, b"not a signature")
        .unwrap_err();
    assert!(matches!(err, SigningError::BadSignature));
}

#[test]
fn base64_signatures_are_decoded() {
    let key = SigningKey::generate().unwrap();
    let raw = key.sign(DATA).unwrap();
    let text = format!("  {}\n", STANDARD.encode(&raw));
    assert_eq!(decode_signature(text.as_bytes()), raw);
    assert_eq!(decode_signature(&raw), raw);
    key.public_key()
        .verify(DATA, &decode_signature(text.as_bytes()))
        .unwrap();
    assert_eq!(decode_signature(b"!!"), b"!!");
}

#[test]
fn malformed_keys_are_reported_as_such() {
    let err = PublicKey::from_pem(b"nothing").unwrap_err();
    assert!(matches!(err, SigningError::PublicKey(_)), "{err}");
    let key = SigningKey::generate().unwrap();
    let err = PublicKey::from_pem(key.to_pem().unwrap().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
    let err = PublicKey::from_pem(pem::encode("PUBLIC KEY", b"junk").as_bytes()).unwrap_err();
    assert!(matches!(err, SigningError::PublicKey(_)), "{err}");
    let err = SigningKey::from_pem(key.public_key_pem().unwrap().as_bytes()).unwrap_err();
    assert!(matches!(err, SigningError::PrivateKey(_)), "{err}");
    let err = SigningKey::from_pem(pem::encode("PRIVATE KEY", b"junk").as_bytes()).unwrap_err();
    assert!(matches!(err, SigningError::PrivateKey(_)), "{err}");
}

#[test]
fn trust_bundle_verifies_with_any_key() {
    let a = SigningKey::generate().unwrap();
    let b = SigningKey::generate().unwrap();
    let stranger = SigningKey::generate().unwrap();
    let text = format!(
        "# publisher A\n{}\n# publisher B\n{}{}",
        a.public_key_pem().unwrap(),
        b.public_key_pem().unwrap(),
        b.public_key_pem().unwrap()
    );
    let trust = TrustBundle::from_pem(text.as_bytes()).unwrap();
    assert_eq!(trust.len(), 2, "duplicates collapse");
    assert!(!trust.is_empty());
    let signature = b.sign(DATA).unwrap();
    assert_eq!(
        trust.verify(DATA, &signature).unwrap(),
        b.public_key().fingerprint()
    );
    let err = trust
        .verify(DATA, &stranger.sign(DATA).unwrap())
        .unwrap_err();
    assert!(matches!(err, SigningError::BadSignature));
    assert!(trust.verify(b"other", &signature).is_err());
}

#[test]
fn trust_bundle_errors_name_the_block() {
    let good = SigningKey::generate().unwrap().public_key_pem().unwrap();
    let bad = pem::encode("PUBLIC KEY", b"junk");
    let err = TrustBundle::from_pem(format!("{good}{bad}").as_bytes()).unwrap_err();
    assert!(
        matches!(err, SigningError::TrustBundleKey { block: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("#2"));
    let cert = pem::encode("CERTIFICATE", b"junk");
    let err = TrustBundle::from_pem(cert.as_bytes()).unwrap_err();
    assert!(
        matches!(err, SigningError::TrustBundleKey { block: 1, .. }),
        "{err}"
    );
    let err = TrustBundle::from_pem(b"# no keys yet\n").unwrap_err();
    assert!(matches!(err, SigningError::EmptyTrustBundle), "{err}");
}

#[test]
fn trust_bundle_loads_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    let path = dir.path().join("trust.pem");
    std::fs::write(&path, key.public_key_pem().unwrap()).unwrap();
    let trust = TrustBundle::load(&path).unwrap();
    trust.verify(DATA, &key.sign(DATA).unwrap()).unwrap();
    let err = TrustBundle::load(dir.path().join("missing.pem")).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn openssl_p256_keys_and_signatures_interoperate() {
    if !openssl_available() {
        eprintln!("openssl not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.bin"), DATA).unwrap();
    sh(
        d,
        "openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out key.pem",
    );
    sh(d, "openssl pkey -in key.pem -pubout -out pub.pem");
    sh(
        d,
        "openssl dgst -sha256 -sign key.pem -out sig.der data.bin",
    );

    // openssl's signature verifies with its public key and with our key loaded from its PEM.
    let public = PublicKey::from_pem(&std::fs::read(d.join("pub.pem")).unwrap()).unwrap();
    let signature = std::fs::read(d.join("sig.der")).unwrap();
    public.verify(DATA, &signature).unwrap();
    let ours = SigningKey::from_pem(&std::fs::read(d.join("key.pem")).unwrap()).unwrap();
    assert_eq!(ours.public_key().fingerprint(), public.fingerprint());

    // Our signature verifies with openssl.
    std::fs::write(d.join("ours.der"), ours.sign(DATA).unwrap()).unwrap();
    sh(
        d,
        "openssl dgst -sha256 -verify pub.pem -signature ours.der data.bin",
    );

    // The base64 form (as cosign writes it) works too.
    let text = format!("{}\n", STANDARD.encode(&signature));
    let trust = TrustBundle::load(d.join("pub.pem")).unwrap();
    assert_eq!(
        trust
            .verify(DATA, &decode_signature(text.as_bytes()))
            .unwrap(),
        public.fingerprint()
    );
}

#[test]
fn openssl_ed25519_signatures_verify() {
    if !openssl_available() {
        eprintln!("openssl not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.bin"), DATA).unwrap();
    sh(d, "openssl genpkey -algorithm ed25519 -out key.pem");
    sh(d, "openssl pkey -in key.pem -pubout -out pub.pem");
    sh(
        d,
        "openssl pkeyutl -sign -rawin -inkey key.pem -in data.bin -out sig.bin",
    );
    let public = PublicKey::from_pem(&std::fs::read(d.join("pub.pem")).unwrap()).unwrap();
    assert_eq!(public.algorithm(), KeyAlgorithm::Ed25519);
    let signature = std::fs::read(d.join("sig.bin")).unwrap();
    public.verify(DATA, &signature).unwrap();
    assert!(public.verify(b"tampered", &signature).is_err());
    // Ed25519 private keys do not sign bundles.
    let err = SigningKey::from_pem(&std::fs::read(d.join("key.pem")).unwrap()).unwrap_err();
    assert!(matches!(err, SigningError::PrivateKey(_)), "{err}");
}

#[test]
fn unsupported_key_types_are_named() {
    if !openssl_available() {
        eprintln!("openssl not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        d,
        "openssl ecparam -name secp384r1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out key.pem",
    );
    sh(d, "openssl pkey -in key.pem -pubout -out pub.pem");
    let err = PublicKey::from_pem(&std::fs::read(d.join("pub.pem")).unwrap()).unwrap_err();
    assert!(matches!(err, SigningError::UnsupportedKey(_)), "{err}");
    assert!(err.to_string().contains("P-384"), "{err}");
    let err = SigningKey::from_pem(&std::fs::read(d.join("key.pem")).unwrap()).unwrap_err();
    assert!(matches!(err, SigningError::UnsupportedKey(_)), "{err}");
}
