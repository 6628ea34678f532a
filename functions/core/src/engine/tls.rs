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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM bundle of trusted CAs for `verify-full`; the public web roots without it.
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

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let bundle = |e: &dyn std::fmt::Display| TlsError(format!("the CA bundle {}: {e}", path.display()));
                let pem = std::fs::read(path).map_err(|e| bundle(&e))?;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    roots.add(cert.map_err(|e| bundle(&e))?).map_err(|e| bundle(&e))?;
                }
                if roots.is_empty() {
                    return Err(TlsError(format!("the CA bundle {} holds no certificate", path.display())));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(roots)
    }
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
