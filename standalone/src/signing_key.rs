//! The token signing key: an Ed25519 key pair generated on first start into
//! `<data>/jwt-signing.pem` (PKCS#8 PEM, mode 0600) and reused afterwards, so tokens stay
//! valid across restarts. svc-users signs with it; the edge, svc-tasks and svc-notify
//! only fetch its public half from svc-users' JWK Set. A key file others can read is
//! refused: anyone who read it could mint tokens.

use std::path::Path;

use anyhow::Context;
use todo_common::auth::PrivateKey;

/// Makes sure `path` holds a private, loadable signing key, creating it if missing.
pub fn load_or_create(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return create(path);
    }
    crate::data_dir::ensure_private(path)?;
    PrivateKey::read(path)
        .map(|_| ())
        .map_err(|why| anyhow::anyhow!("the signing key {why}; remove it to make a new one"))
}

fn create(path: &Path) -> anyhow::Result<()> {
    PrivateKey::create_file(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-signing.pem");
        load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let key = std::fs::read_to_string(&path).unwrap();
        assert!(PrivateKey::from_pem(&key).is_ok());
        load_or_create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key, "reused, not replaced");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("readable by others"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("remove it"));
    }
}
