//! Token settings, read once from the environment. Two modes, never both:
//! - EdDSA (the default everywhere the repository deploys): svc-users signs with an
//!   Ed25519 private key (`JWT_SIGNING_KEY`) and publishes its public keys; verifiers
//!   fetch them from `JWT_JWKS_URL` and hold nothing that can mint a token.
//! - HS256 (kept for compatibility): one shared secret (`JWT_SECRET`) in every process.
//!
//! Outside development mode, secrets that are public (the development key, the
//! placeholders shipped in the repository's examples) and duplicate key ids are refused.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::ed25519::{PrivateKey, PublicKey};
use crate::config::{EnvReader, Secret, Var};

pub const JWT_SIGNING_KEY: Var = Var::optional(
    "JWT_SIGNING_KEY",
    "EdDSA: path of svc-users' Ed25519 private key (PKCS#8 PEM); tokens get alg EdDSA and kid JWT_KID",
);
pub const JWT_PREVIOUS_PUBLIC_KEYS: Var = Var::optional(
    "JWT_PREVIOUS_PUBLIC_KEYS",
    "EdDSA: more public keys to publish in the JWK Set during a rotation, as kid=path (PEM) pairs separated by commas",
);
pub const JWT_JWKS_URL: Var = Var::optional(
    "JWT_JWKS_URL",
    "EdDSA: where verifiers fetch svc-users' JWK Set (http://…/.well-known/jwks.json); they accept only its keys",
);
pub const JWT_JWKS_REFRESH_SECONDS: Var = Var::new(
    "JWT_JWKS_REFRESH_SECONDS",
    "60",
    "EdDSA: how often verifiers fetch the JWK Set again (1-300): the longest a removed key is still honoured",
);
pub const JWT_SECRET: Var = Var::optional(
    "JWT_SECRET",
    "HS256 (compatibility mode): the shared key, its bytes as given, at least 32; excludes the EdDSA variables",
);
pub const JWT_KID: Var = Var::new("JWT_KID", "primary", "key id of the signing key, sent as the token's kid");
pub const JWT_PREVIOUS_KEYS: Var = Var::optional(
    "JWT_PREVIOUS_KEYS",
    "HS256: retired keys still accepted during a rotation, as kid=secret pairs separated by commas",
);
pub const JWT_ISSUER: Var = Var::new("JWT_ISSUER", "todo-users", "the tokens' iss claim");
pub const JWT_AUDIENCE: Var = Var::new("JWT_AUDIENCE", "todo-api", "the tokens' aud claim");
pub const DEV_MODE: Var = Var::new(
    "TODO_DEV_MODE",
    "0",
    "1: development mode, allowing public keys (without token settings, a fixed, publicly known HS256 key); never in production",
);

/// The token variables of svc-users, which signs.
pub const ISSUER_VARS: &[Var] = &[
    JWT_SIGNING_KEY,
    JWT_PREVIOUS_PUBLIC_KEYS,
    JWT_SECRET,
    JWT_KID,
    JWT_PREVIOUS_KEYS,
    JWT_ISSUER,
    JWT_AUDIENCE,
    DEV_MODE,
];
/// The token variables of the edge, svc-tasks and svc-notify, which only verify.
pub const VERIFIER_VARS: &[Var] = &[
    JWT_JWKS_URL,
    JWT_JWKS_REFRESH_SECONDS,
    JWT_SECRET,
    JWT_KID,
    JWT_PREVIOUS_KEYS,
    JWT_ISSUER,
    JWT_AUDIENCE,
    DEV_MODE,
];

/// Publicly known, so only ever used when TODO_DEV_MODE=1 says so.
pub(crate) const DEV_SECRET: &str = "todo-dev-mode-only-secret-do-not-use-in-production";
/// Secrets this repository has published (the development key, the examples'
/// placeholders): whoever read the repository could mint tokens with them.
const PUBLISHED_SECRETS: &[&str] = &[
    DEV_SECRET,
    "CHANGE-ME-this-placeholder-is-not-a-secret-0123456789",
    "dev-placeholder-jwt-secret-not-for-production-0123456789",
];
const MIN_SECRET_BYTES: usize = 32;
const MAX_JWKS_REFRESH_SECONDS: u64 = 300;

/// Which side of the tokens a process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// svc-users: signs tokens (and verifies its own).
    Issuer,
    /// The edge, svc-tasks, svc-notify: verify only.
    Verifier,
}

#[derive(Debug, Clone)]
pub struct SharedKey {
    pub kid: String,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct PublishedKey {
    pub kid: String,
    pub key: PublicKey,
}

/// The keys a process signs or verifies with.
#[derive(Debug, Clone)]
pub enum TokenKeys {
    /// HS256: the active shared key, and retired ones still accepted.
    Shared { active: SharedKey, retired: Vec<SharedKey> },
    /// EdDSA, in svc-users: the private key, and other public keys to publish.
    Signing { kid: String, key: PrivateKey, published: Vec<PublishedKey> },
    /// EdDSA, in a verifier: the JWK Set to fetch, and how often.
    Jwks { url: String, refresh: Duration },
}

/// Token settings shared by the issuer and every verifier.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub keys: TokenKeys,
    pub issuer: String,
    pub audience: String,
    /// Public keys allowed; reported on stderr, in the logs, `/metrics` and `/readyz`.
    pub dev_mode: bool,
}

impl JwtSettings {
    pub fn from_env(reader: &mut EnvReader<'_>, role: Role) -> Self {
        let dev_mode = reader.flag(&DEV_MODE);
        if dev_mode {
            // Logging is not set up yet; the process logs it again once it is.
            eprintln!(
                "warning: TODO_DEV_MODE=1: development mode, public token keys are accepted; never in production"
            );
        }
        let kid = reader.string(&JWT_KID);
        let secret = reader.raw(&JWT_SECRET);
        let eddsa_var = match role {
            Role::Issuer => &JWT_SIGNING_KEY,
            Role::Verifier => &JWT_JWKS_URL,
        };
        let wrong_side: &[&Var] = match role {
            Role::Issuer => &[&JWT_JWKS_URL],
            Role::Verifier => &[&JWT_SIGNING_KEY, &JWT_PREVIOUS_PUBLIC_KEYS],
        };
        for var in wrong_side.iter().copied() {
            if reader.raw(var).is_some() {
                let why = match role {
                    Role::Issuer => "svc-users signs: it publishes its keys instead of fetching them",
                    Role::Verifier => "a verifier holds no private key and publishes none",
                };
                reader.problem(format!("{} is not for this process ({why})", var.key));
            }
        }
        let eddsa = reader.raw(eddsa_var);
        let keys = match (eddsa, secret) {
            (Some(_), Some(_)) => {
                reader
                    .problem(format!("both {} (EdDSA) and JWT_SECRET (HS256) are set: choose one mode", eddsa_var.key));
                shared_keys(reader, &kid, DEV_SECRET.to_owned(), dev_mode)
            }
            (Some(value), None) => match role {
                Role::Issuer => signing_keys(reader, &kid, &value),
                Role::Verifier => jwks_keys(reader, value),
            },
            (None, Some(secret)) => shared_keys(reader, &kid, secret, dev_mode),
            (None, None) => {
                if !dev_mode {
                    reader.problem(format!(
                        "token keys are required: {} (EdDSA) or JWT_SECRET (HS256), or TODO_DEV_MODE=1 for development",
                        eddsa_var.key
                    ));
                }
                shared_keys(reader, &kid, DEV_SECRET.to_owned(), dev_mode)
            }
        };
        if !matches!(keys, TokenKeys::Shared { .. }) && reader.raw(&JWT_PREVIOUS_KEYS).is_some() {
            reader.problem("JWT_PREVIOUS_KEYS holds HS256 secrets: it has no place in EdDSA mode".into());
        }
        if role == Role::Issuer
            && !matches!(keys, TokenKeys::Signing { .. })
            && reader.raw(&JWT_PREVIOUS_PUBLIC_KEYS).is_some()
        {
            reader.problem("JWT_PREVIOUS_PUBLIC_KEYS needs JWT_SIGNING_KEY (EdDSA mode)".into());
        }
        Self { keys, issuer: reader.string(&JWT_ISSUER), audience: reader.string(&JWT_AUDIENCE), dev_mode }
    }

    /// HS256 settings for tests and tools: one key, default issuer and audience.
    pub fn with_secret(secret: &str) -> Self {
        Self::with_shared_key("primary", secret)
    }

    /// HS256 settings for tests and tools: one key under `kid`.
    pub fn with_shared_key(kid: &str, secret: &str) -> Self {
        Self::with_keys(TokenKeys::Shared {
            active: SharedKey { kid: kid.into(), secret: Secret::new(secret) },
            retired: Vec::new(),
        })
    }

    /// Settings for tests and tools with the given keys, default issuer and audience.
    pub fn with_keys(keys: TokenKeys) -> Self {
        Self { keys, issuer: "todo-users".into(), audience: "todo-api".into(), dev_mode: false }
    }
}

fn shared_keys(reader: &mut EnvReader<'_>, kid: &str, secret: String, dev_mode: bool) -> TokenKeys {
    let mut kids = KidSet::new(kid);
    if let Err(why) = check_secret(&secret, dev_mode) {
        reader.problem(format!("JWT_SECRET {why}"));
    }
    let mut retired = Vec::new();
    for (kid, secret) in pairs(reader, &JWT_PREVIOUS_KEYS, "kid=secret") {
        if let Err(why) = check_secret(&secret, dev_mode) {
            reader.problem(format!("JWT_PREVIOUS_KEYS key {kid:?} {why}"));
        }
        kids.add(reader, &JWT_PREVIOUS_KEYS, &kid);
        retired.push(SharedKey { kid, secret: Secret::new(secret) });
    }
    TokenKeys::Shared { active: SharedKey { kid: kid.to_owned(), secret: Secret::new(secret) }, retired }
}

fn signing_keys(reader: &mut EnvReader<'_>, kid: &str, path: &str) -> TokenKeys {
    let mut kids = KidSet::new(kid);
    let key = PrivateKey::read(&PathBuf::from(path)).unwrap_or_else(|why| {
        reader.problem(format!("JWT_SIGNING_KEY {why}"));
        PrivateKey::generate()
    });
    let mut published = Vec::new();
    for (kid, path) in pairs(reader, &JWT_PREVIOUS_PUBLIC_KEYS, "kid=path") {
        kids.add(reader, &JWT_PREVIOUS_PUBLIC_KEYS, &kid);
        match PublicKey::read(&PathBuf::from(&path)) {
            Ok(key) => published.push(PublishedKey { kid, key }),
            Err(why) => reader.problem(format!("JWT_PREVIOUS_PUBLIC_KEYS key {kid:?} {why}")),
        }
    }
    TokenKeys::Signing { kid: kid.to_owned(), key, published }
}

fn jwks_keys(reader: &mut EnvReader<'_>, url: String) -> TokenKeys {
    if !url.starts_with("http://") {
        reader.problem(format!("JWT_JWKS_URL={url:?}: an http:// URL is expected (svc-users inside the cluster)"));
    }
    let seconds: u64 = reader.parse_or(&JWT_JWKS_REFRESH_SECONDS, 60);
    if !(1..=MAX_JWKS_REFRESH_SECONDS).contains(&seconds) {
        reader.problem(format!("JWT_JWKS_REFRESH_SECONDS={seconds}: between 1 and {MAX_JWKS_REFRESH_SECONDS}"));
    }
    TokenKeys::Jwks { url, refresh: Duration::from_secs(seconds.clamp(1, MAX_JWKS_REFRESH_SECONDS)) }
}

/// `kid=value` pairs separated by commas; a malformed list is reported once.
fn pairs(reader: &mut EnvReader<'_>, var: &Var, shape: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for pair in reader.raw(var).iter().flat_map(|v| v.split(',')) {
        match pair.trim().split_once('=') {
            Some((kid, value)) if !kid.trim().is_empty() && !value.trim().is_empty() => {
                found.push((kid.trim().to_owned(), value.trim().to_owned()))
            }
            _ => {
                reader.problem(format!("{} must be {shape} pairs separated by commas", var.key));
                break;
            }
        }
    }
    found
}

/// Key ids seen so far: a second key under one kid would silently replace the first.
struct KidSet(HashSet<String>);

impl KidSet {
    fn new(active: &str) -> Self {
        Self(HashSet::from([active.to_owned()]))
    }

    fn add(&mut self, reader: &mut EnvReader<'_>, var: &Var, kid: &str) {
        if !self.0.insert(kid.to_owned()) {
            reader.problem(format!("{} names kid {kid:?} twice (or JWT_KID's): every key needs its own kid", var.key));
        }
    }
}

/// A secret is refused when short, built from very few distinct bytes ("aaaa…"), or,
/// outside development mode, published by this repository.
fn check_secret(secret: &str, dev_mode: bool) -> Result<(), String> {
    if !dev_mode && PUBLISHED_SECRETS.contains(&secret) {
        return Err("is a key published in this repository (a development key or an example's placeholder): \
                    anyone could mint tokens with it; generate one with `openssl rand -base64 48`"
            .into());
    }
    let bytes = secret.as_bytes();
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!("is too short: {} bytes, at least {MIN_SECRET_BYTES} needed", bytes.len()));
    }
    let mut distinct: Vec<u8> = bytes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Err("is too weak: it repeats too few distinct characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

    fn read(role: Role, pairs: &[(&str, &str)]) -> Result<JwtSettings, String> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut reader = EnvReader::new(&env);
        let settings = JwtSettings::from_env(&mut reader, role);
        reader.finish(settings).map_err(|e| e.to_string())
    }

    fn key_files() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let private = PrivateKey::generate();
        let private_path = dir.path().join("signing.pem");
        let public_path = dir.path().join("old.pub.pem");
        std::fs::write(&private_path, private.to_pem()).unwrap();
        std::fs::write(&public_path, PrivateKey::generate().public_key().to_pem()).unwrap();
        let (a, b) = (private_path.display().to_string(), public_path.display().to_string());
        (dir, a, b)
    }

    #[test]
    fn missing_weak_or_published_secrets_are_refused_outside_dev_mode() {
        assert!(read(Role::Verifier, &[]).is_err());
        assert!(read(Role::Verifier, &[("JWT_SECRET", "short")]).is_err());
        assert!(read(Role::Verifier, &[("JWT_SECRET", &"a".repeat(40))]).is_err());
        assert!(read(Role::Verifier, &[("JWT_SECRET", SECRET)]).is_ok());
        for published in PUBLISHED_SECRETS {
            let refused = read(Role::Issuer, &[("JWT_SECRET", published)]).unwrap_err();
            assert!(refused.contains("published in this repository"), "{refused}");
            let previous = format!("old={published}");
            assert!(read(Role::Verifier, &[("JWT_SECRET", SECRET), ("JWT_PREVIOUS_KEYS", &previous)]).is_err());
            assert!(read(Role::Verifier, &[("JWT_SECRET", published), ("TODO_DEV_MODE", "1")]).is_ok());
        }
        let dev = read(Role::Verifier, &[("TODO_DEV_MODE", "1")]).unwrap();
        assert!(dev.dev_mode);
    }

    #[test]
    fn duplicate_kids_are_refused() {
        let active_again = format!("primary={SECRET}x");
        let refused = read(Role::Verifier, &[("JWT_SECRET", SECRET), ("JWT_PREVIOUS_KEYS", &active_again)]);
        assert!(refused.unwrap_err().contains("twice"));
        let twice = format!("old={SECRET}x,old={SECRET}y");
        assert!(read(Role::Verifier, &[("JWT_SECRET", SECRET), ("JWT_PREVIOUS_KEYS", &twice)]).is_err());
        let (_dir, signing, public) = key_files();
        let published = format!("primary={public}");
        let refused = read(Role::Issuer, &[("JWT_SIGNING_KEY", &signing), ("JWT_PREVIOUS_PUBLIC_KEYS", &published)]);
        assert!(refused.unwrap_err().contains("twice"));
    }

    #[test]
    fn each_role_takes_its_own_eddsa_variables_and_never_both_modes() {
        let (_dir, signing, public) = key_files();
        let previous = format!("old={public}");
        let issuer =
            read(Role::Issuer, &[("JWT_SIGNING_KEY", &signing), ("JWT_PREVIOUS_PUBLIC_KEYS", &previous)]).unwrap();
        assert!(matches!(&issuer.keys, TokenKeys::Signing { published, .. } if published.len() == 1));
        let url = "http://127.0.0.1:8081/.well-known/jwks.json";
        let verifier = read(Role::Verifier, &[("JWT_JWKS_URL", url)]).unwrap();
        assert!(matches!(verifier.keys, TokenKeys::Jwks { refresh, .. } if refresh == Duration::from_secs(60)));

        let both = read(Role::Issuer, &[("JWT_SIGNING_KEY", &signing), ("JWT_SECRET", SECRET)]).unwrap_err();
        assert!(both.contains("choose one mode"), "{both}");
        assert!(read(Role::Verifier, &[("JWT_JWKS_URL", url), ("JWT_SECRET", SECRET)]).is_err());
        assert!(read(Role::Verifier, &[("JWT_JWKS_URL", url), ("JWT_SIGNING_KEY", &signing)]).is_err());
        assert!(read(Role::Issuer, &[("JWT_SIGNING_KEY", &signing), ("JWT_JWKS_URL", url)]).is_err());
        assert!(read(Role::Verifier, &[("JWT_JWKS_URL", url), ("JWT_JWKS_REFRESH_SECONDS", "301")]).is_err());
        assert!(read(Role::Verifier, &[("JWT_JWKS_URL", "ftp://x/jwks")]).is_err());
        let unreadable = read(Role::Issuer, &[("JWT_SIGNING_KEY", "/nonexistent/key.pem")]).unwrap_err();
        assert!(unreadable.contains("JWT_SIGNING_KEY cannot be read"), "{unreadable}");
        let not_a_key = read(Role::Issuer, &[("JWT_SIGNING_KEY", &public)]).unwrap_err();
        assert!(not_a_key.contains("not a PKCS#8 PEM Ed25519 private key"), "{not_a_key}");
    }
}
