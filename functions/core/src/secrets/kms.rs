//! Sealing the own store's credentials on AWS: each value encrypted with KMS
//! under the deployment's key, its item's id as encryption context, so a value
//! copied onto another item does not decrypt.

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;

use super::SecretError;

/// Encrypts what [`super::database::DatabaseSecrets`] stores, and decrypts what it reads.
#[async_trait]
pub trait Sealer: Send + Sync {
    async fn seal(&self, id: &str, plain: &str) -> Result<String, SecretError>;
    async fn open(&self, id: &str, sealed: &str) -> Result<String, SecretError>;
}

/// What a sealed value starts with.
const SEALED: &str = "kms:";

/// KMS `Encrypt`/`Decrypt` under one key (`DBROLES_CREDENTIALS_KEY`).
pub struct KmsSealer {
    pub client: aws_sdk_kms::Client,
    /// `None`: the deployment names no key, and nothing is stored or read.
    pub key: Option<String>,
}

fn classify<E>(what: &str, error: aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>) -> SecretError
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    crate::aws::classify(what, error, [SecretError::AccessDenied, SecretError::Unavailable, SecretError::Failed])
}

impl KmsSealer {
    fn key(&self) -> Result<&str, SecretError> {
        self.key.as_deref().ok_or_else(|| {
            SecretError::Failed("DBROLES_CREDENTIALS_KEY is not set: the KMS key the own store encrypts credentials with".into())
        })
    }
}

#[async_trait]
impl Sealer for KmsSealer {
    async fn seal(&self, id: &str, plain: &str) -> Result<String, SecretError> {
        let out = self
            .client
            .encrypt()
            .key_id(self.key()?)
            .plaintext(Blob::new(plain.as_bytes()))
            .encryption_context("dbroles:credential", id)
            .send()
            .await
            .map_err(|e| classify("encrypting a credential", e))?;
        let blob = out.ciphertext_blob.ok_or_else(|| SecretError::Failed("KMS returned no ciphertext".into()))?;
        Ok(format!("{SEALED}{}", base64::engine::general_purpose::STANDARD.encode(blob.as_ref())))
    }

    async fn open(&self, id: &str, sealed: &str) -> Result<String, SecretError> {
        let encoded = sealed
            .strip_prefix(SEALED)
            .ok_or_else(|| SecretError::Failed(format!("the stored credential {id} is not encrypted: it is not read")))?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::Failed(format!("the stored credential {id} is damaged")))?;
        let out = self
            .client
            .decrypt()
            .key_id(self.key()?)
            .ciphertext_blob(Blob::new(blob))
            .encryption_context("dbroles:credential", id)
            .send()
            .await
            .map_err(|e| classify("decrypting a credential", e))?;
        let plain = out.plaintext.ok_or_else(|| SecretError::Failed("KMS returned no plaintext".into()))?;
        String::from_utf8(plain.into_inner()).map_err(|_| SecretError::Failed(format!("the stored credential {id} is damaged")))
    }
}
