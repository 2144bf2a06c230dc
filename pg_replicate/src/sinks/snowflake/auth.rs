//! Key-pair authentication: the private key read from PKCS#8 PEM
//! (encrypted with a passphrase or not) and the login JWT signed with it.
//!
//! Snowflake identifies the key by the SHA-256 fingerprint of the public
//! key's DER `SubjectPublicKeyInfo`; the JWT's issuer is
//! `ACCOUNT.USER.SHA256:<fingerprint>` and its subject `ACCOUNT.USER`,
//! signed RS256. Neither the key nor the passphrase ever reaches a log or
//! an error text.

use base64::Engine;
use pkcs8::der::asn1::{AnyRef, BitStringRef};
use pkcs8::der::Encode;
use pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};

use crate::{Error, ErrorKind, Result};

/// How long a login JWT is valid; Snowflake accepts at most one hour.
const JWT_LIFETIME_SECS: u64 = 59 * 60;

/// `rsaEncryption` (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// An RSA private key and its public key's fingerprint.
pub(crate) struct SigningKey {
    pair: RsaKeyPair,
    fingerprint: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn key_error(problem: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, problem.into())
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key (`BEGIN PRIVATE KEY`, or `BEGIN
    /// ENCRYPTED PRIVATE KEY` with its passphrase).
    pub(crate) fn from_pem(pem: &str, passphrase: Option<&str>) -> Result<Self> {
        let (label, der) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes()).map_err(|_| {
            key_error(
                "the Snowflake private key is not PEM text; give the PKCS#8 key file made by \
                 `openssl genrsa 2048 | openssl pkcs8 -topk8 -inform PEM -out rsa_key.p8`",
            )
        })?;
        let der = match label {
            "PRIVATE KEY" => der,
            "ENCRYPTED PRIVATE KEY" => {
                let passphrase = passphrase.ok_or_else(|| {
                    key_error("the Snowflake private key is encrypted: give its passphrase")
                })?;
                let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
                    .map_err(|_| key_error("the encrypted Snowflake private key is malformed"))?;
                info.decrypt(passphrase)
                    .map_err(|_| {
                        key_error(
                            "cannot decrypt the Snowflake private key: the passphrase is wrong (or \
                             the key uses an encryption scheme other than PBES2)",
                        )
                    })?
                    .as_bytes()
                    .to_vec()
            }
            "RSA PRIVATE KEY" => {
                return Err(key_error(
                    "the Snowflake private key is PKCS#1 (BEGIN RSA PRIVATE KEY); convert it to \
                     PKCS#8 with `openssl pkcs8 -topk8 -in key.pem -out rsa_key.p8`",
                ))
            }
            other => {
                return Err(key_error(format!(
                    "the PEM block is {other:?}, not a private key; give the PKCS#8 key file"
                )))
            }
        };
        let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| {
            key_error(format!(
                "the Snowflake private key is not a usable RSA key ({e}); Snowflake key-pair \
                 authentication uses RSA keys of 2048 bits or more"
            ))
        })?;
        let fingerprint = fingerprint(pair.public_key().as_ref())?;
        Ok(Self { pair, fingerprint })
    }

    /// `SHA256:<base64 of the SHA-256 of the public key's DER>`, as
    /// `DESC USER` shows it in `RSA_PUBLIC_KEY_FP`.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The login JWT of `user` in `account`, issued at `now` (seconds since
    /// the Unix epoch).
    pub(crate) fn jwt(&self, account: &str, user: &str, now: u64) -> Result<String> {
        let qualified = format!("{}.{}", jwt_account(account), user.to_uppercase());
        let header = r#"{"alg":"RS256","typ":"JWT"}"#;
        let claims = serde_json::json!({
            "iss": format!("{qualified}.{}", self.fingerprint),
            "sub": qualified,
            "iat": now,
            "exp": now + JWT_LIFETIME_SECS,
        });
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signed = format!("{}.{}", url.encode(header), url.encode(claims.to_string()));
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::new(ErrorKind::Sink, "cannot sign the Snowflake login JWT"))?;
        Ok(format!("{signed}.{}", url.encode(signature)))
    }
}

/// The account as the JWT names it: upper case, without a region or cloud
/// suffix (`xy12345.us-east-1` → `XY12345`; `myorg-acct` stays whole).
pub(crate) fn jwt_account(account: &str) -> String {
    account.split('.').next().unwrap_or(account).to_uppercase()
}

/// The fingerprint of a PKCS#1 `RSAPublicKey`.
fn fingerprint(rsa_public_key: &[u8]) -> Result<String> {
    let info = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        subject_public_key: BitStringRef::from_bytes(rsa_public_key)
            .map_err(|_| key_error("the public key does not encode"))?,
    };
    let der = info
        .to_der()
        .map_err(|_| key_error("the public key does not encode"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use rsa::RsaPrivateKey;

    use super::*;

    fn generated() -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("generate an RSA key")
    }

    #[test]
    fn the_jwt_is_signed_by_the_key_and_names_its_fingerprint() {
        let key = generated();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let signing = SigningKey::from_pem(&pem, None).unwrap();

        // The fingerprint is the SHA-256 of the public key's DER, as
        // `openssl rsa -pubout -outform DER | openssl dgst -sha256 -binary | base64`.
        let spki = key.to_public_key().to_public_key_der().unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_bytes());
        let expected = format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        );
        assert_eq!(signing.fingerprint(), expected);

        let jwt = signing
            .jwt("xy12345.us-east-1", "loader", 1_700_000_000)
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: serde_json::Value =
            serde_json::from_slice(&url.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value =
            serde_json::from_slice(&url.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], format!("XY12345.LOADER.{expected}"));
        assert_eq!(claims["sub"], "XY12345.LOADER");
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_000_000u64 + JWT_LIFETIME_SECS);

        // The signature verifies with the public key, and only over the
        // signed text.
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signing.pair.public_key().as_ref().to_vec(),
        );
        let signature = url.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(signed.as_bytes(), &signature)
            .expect("valid signature");
        assert!(public.verify(b"other text", &signature).is_err());
    }

    #[test]
    fn encrypted_keys_need_their_passphrase_and_errors_keep_secrets_out() {
        let key = generated();
        let pem = key
            .to_pkcs8_encrypted_pem(&mut rand_core::OsRng, "s3cret-phrase", LineEnding::LF)
            .unwrap();
        let plain = SigningKey::from_pem(&key.to_pkcs8_pem(LineEnding::LF).unwrap(), None).unwrap();
        let decrypted = SigningKey::from_pem(&pem, Some("s3cret-phrase")).unwrap();
        assert_eq!(decrypted.fingerprint(), plain.fingerprint());

        let wrong = SigningKey::from_pem(&pem, Some("wrong-phrase")).unwrap_err();
        assert!(wrong.to_string().contains("passphrase is wrong"), "{wrong}");
        assert!(!wrong.to_string().contains("wrong-phrase"), "{wrong}");
        let missing = SigningKey::from_pem(&pem, None).unwrap_err();
        assert!(
            missing.to_string().contains("give its passphrase"),
            "{missing}"
        );
        let garbage = SigningKey::from_pem("not a key", None).unwrap_err();
        assert!(garbage.to_string().contains("not PEM"), "{garbage}");
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let error = SigningKey::from_pem(pkcs1, None).unwrap_err();
        assert!(error.to_string().contains("PKCS#1"), "{error}");
        assert!(format!("{decrypted:?}").contains("fingerprint"));
    }

    #[test]
    fn accounts_lose_their_region_in_the_jwt() {
        assert_eq!(jwt_account("xy12345.us-east-1"), "XY12345");
        assert_eq!(jwt_account("myorg-acct"), "MYORG-ACCT");
    }
}
