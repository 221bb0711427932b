//! Development certificates: a CA, a runner (server) certificate and a gateway (client)
//! certificate signed by it, ECDSA P-256, valid from yesterday for [`VALIDITY_DAYS`].
//! For development and tests only: the CA's key sits beside the certificates it signed.

use time::{Duration, OffsetDateTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::TlsError;

/// How long development certificates are valid.
pub const VALIDITY_DAYS: i64 = 365;

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// A development CA and what it signed.
#[derive(Debug, Clone)]
pub struct DevCertificates {
    /// The CA (its certificate is what both sides trust).
    pub ca: Pem,
    /// The runner's server certificate, naming the hosts asked for.
    pub runner: Pem,
    /// The gateway's client certificate.
    pub gateway: Pem,
}

fn generate_error(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn params(
    common_name: &str,
    names: Vec<String>,
    today: OffsetDateTime,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(names).map_err(generate_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Palisade development");
    params.distinguished_name = dn;
    params.not_before = today - Duration::days(1);
    params.not_after = today + Duration::days(VALIDITY_DAYS);
    Ok(params)
}

/// Makes a new CA, a runner certificate for `runner_hosts` (DNS names or IP addresses)
/// and a gateway client certificate.
pub fn generate(runner_hosts: &[String]) -> Result<DevCertificates, TlsError> {
    if runner_hosts.is_empty() {
        return Err(TlsError::Generate(
            "at least one runner host name or address is needed".to_owned(),
        ));
    }
    let today = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate().map_err(generate_error)?;
    let mut ca = params("Palisade development CA", Vec::new(), today)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(generate_error)?;

    let leaf = |common_name: &str,
                names: Vec<String>,
                usage: ExtendedKeyUsagePurpose|
     -> Result<Pem, TlsError> {
        let key = KeyPair::generate().map_err(generate_error)?;
        let mut params = params(common_name, names, today)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(generate_error)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    };
    let runner = leaf(
        "palisade runner",
        runner_hosts.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let gateway = leaf(
        "palisade gateway",
        vec!["palisade-gateway".to_owned()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(DevCertificates {
        ca: Pem {
            cert: ca_cert.pem(),
            key: ca_key.serialize_pem(),
        },
        runner,
        gateway,
    })
}
