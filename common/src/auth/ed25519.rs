//! Ed25519 keys for EdDSA tokens: a private key only svc-users holds (PKCS#8 PEM), the
//! public keys everyone may read (SPKI PEM files, and JWKs in the set svc-users serves).

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A private signing key. Its `Debug` shows only the public half.
#[derive(Clone)]
pub struct PrivateKey(ed25519_dalek::SigningKey);

/// A public key: what verifiers check signatures with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PrivateKey {
    pub fn generate() -> Self {
        let mut seed = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
        rand::rng().fill_bytes(&mut seed);
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A PKCS#8 PEM private key, as `openssl genpkey -algorithm ed25519` writes it.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| format!("is not a PKCS#8 PEM Ed25519 private key ({e})"))
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        read_pem(path, Self::from_pem)
    }

    /// PKCS#8 v1 (the private key alone): what `openssl genpkey` writes and what
    /// OpenSSL before 3.5 can read (v2, with the public key added, it cannot).
    pub fn to_pem(&self) -> String {
        self.v1().to_pkcs8_pem(LineEnding::LF).map(|pem| pem.to_string()).unwrap_or_default()
    }

    fn v1(&self) -> ed25519_dalek::pkcs8::KeypairBytes {
        ed25519_dalek::pkcs8::KeypairBytes { secret_key: self.0.to_bytes(), public_key: None }
    }

    /// Generates a key into a new file `path`, readable by its owner only (0600); an
    /// existing file is never replaced.
    pub fn create_file(path: &Path) -> std::io::Result<Self> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let key = Self::generate();
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        file.write_all(key.to_pem().as_bytes())?;
        file.sync_all()?;
        Ok(key)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn encoding_key(&self) -> EncodingKey {
        let der = self.v1().to_pkcs8_der().expect("an Ed25519 key always encodes");
        EncodingKey::from_ed_der(der.as_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public: {})", self.public_key().x())
    }
}

impl PublicKey {
    /// An SPKI PEM public key (`openssl pkey -pubout`).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map(Self)
            .map_err(|e| format!("is not a PEM Ed25519 public key ({e})"))
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        read_pem(path, Self::from_pem)
    }

    pub fn to_pem(&self) -> String {
        self.0.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// The key's bytes, base64url: the JWK's `x`.
    pub fn x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    pub fn to_jwk(&self, kid: &str) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(self.x()),
            kid: Some(kid.into()),
            alg: Some("EdDSA".into()),
            key_use: Some("sig".into()),
        }
    }

    pub(crate) fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ed_der(self.0.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.x())
    }
}

/// A key from the PEM file at `path`; errors name the file.
fn read_pem<K>(path: &Path, parse: fn(&str) -> Result<K, String>) -> Result<K, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot be read from {}: {e}", path.display()))?;
    parse(&pem).map_err(|e| format!("{} {e}", path.display()))
}

/// One key of a JWK Set (RFC 7517; Ed25519 keys per RFC 8037).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl Jwk {
    /// The key id and public key, when this is an Ed25519 signing key with a kid;
    /// anything else in a set (another curve, a symmetric key) is not for us.
    pub fn ed25519(&self) -> Option<(&str, PublicKey)> {
        let usable = self.kty == "OKP"
            && self.crv.as_deref() == Some("Ed25519")
            && self.alg.as_deref().is_none_or(|alg| alg == "EdDSA")
            && self.key_use.as_deref().is_none_or(|u| u == "sig");
        if !usable {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(self.x.as_deref()?).ok()?;
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
        Some((self.kid.as_deref()?, PublicKey(key)))
    }
}

/// A JWK Set: what `GET /.well-known/jwks.json` serves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_pem_and_jwk_round_trips() {
        let private = PrivateKey::generate();
        let again = PrivateKey::from_pem(&private.to_pem()).unwrap();
        assert_eq!(again.public_key(), private.public_key());
        let public = PublicKey::from_pem(&private.public_key().to_pem()).unwrap();
        assert_eq!(public, private.public_key());
        let jwk = public.to_jwk("k1");
        assert_eq!(jwk.ed25519(), Some(("k1", public.clone())));
        assert!(!format!("{private:?}").contains(&private.to_pem()));
    }

    #[test]
    fn openssl_reads_the_private_key_and_derives_the_same_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let key = PrivateKey::create_file(&path).unwrap();
        let Ok(output) =
            std::process::Command::new("openssl").arg("pkey").arg("-in").arg(&path).arg("-pubout").output()
        else {
            eprintln!("openssl is not installed: interoperability not checked");
            return;
        };
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8(output.stdout).unwrap(), key.public_key().to_pem());
    }

    #[test]
    fn a_key_file_is_private_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let key = PrivateKey::create_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(PrivateKey::read(&path).unwrap().public_key(), key.public_key());
        assert!(PrivateKey::create_file(&path).is_err());
        assert_eq!(PrivateKey::read(&path).unwrap().public_key(), key.public_key());
    }

    #[test]
    fn only_ed25519_signing_keys_with_a_kid_are_taken_from_a_set() {
        let public = PrivateKey::generate().public_key();
        let good = public.to_jwk("k1");
        assert!(Jwk { kid: None, ..good.clone() }.ed25519().is_none());
        assert!(Jwk { kty: "oct".into(), ..good.clone() }.ed25519().is_none());
        assert!(Jwk { crv: Some("X25519".into()), ..good.clone() }.ed25519().is_none());
        assert!(Jwk { alg: Some("HS256".into()), ..good.clone() }.ed25519().is_none());
        assert!(Jwk { key_use: Some("enc".into()), ..good.clone() }.ed25519().is_none());
        assert!(Jwk { x: Some("AAAA".into()), ..good.clone() }.ed25519().is_none());
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
    }
}
