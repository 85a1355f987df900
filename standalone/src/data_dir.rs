//! The data directory holds the user database and the token signing key, so it is
//! private: the directory 0700, every file the process creates 0600 (a umask of 077 for
//! the whole process, which also covers the files redb and the policy writer create).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustix::fs::Mode;

const PRIVATE_DIR: u32 = 0o700;
const NOT_FOR_OTHERS: u32 = 0o077;

/// Creates (or tightens) `path` as a private directory and returns its canonical path.
pub fn prepare(path: &Path) -> anyhow::Result<PathBuf> {
    rustix::process::umask(Mode::from_raw_mode(NOT_FOR_OTHERS));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
        .with_context(|| format!("cannot create TODO_DATA_DIR {}", path.display()))?;
    // A directory made by an earlier version, or by hand, may be wider: ours to narrow.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_DIR))
        .with_context(|| format!("cannot make TODO_DATA_DIR {} private (mode 0700)", path.display()))?;
    Ok(path.canonicalize()?)
}

/// Refuses a secret file that others may read, as ssh refuses a private key.
pub fn ensure_private(path: &Path) -> anyhow::Result<()> {
    let mode = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.permissions().mode();
    anyhow::ensure!(
        mode & NOT_FOR_OTHERS == 0,
        "{} is readable by others (mode {:04o}); make it private with `chmod 600 {}`",
        path.display(),
        mode & 0o7777,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_and_what_is_created_in_it_are_private() {
        let root = std::env::temp_dir().join(format!("standalone-data-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = prepare(&root.join("nested")).unwrap();
        let root_again = prepare(&root).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&root_again).unwrap().permissions().mode() & 0o777, 0o700);
        let file = dir.join("users.redb");
        std::fs::write(&file, b"data").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        ensure_private(&file).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let refused = ensure_private(&file).unwrap_err().to_string();
        assert!(refused.contains("readable by others") && refused.contains("0640"), "{refused}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
