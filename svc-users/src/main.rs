use std::path::Path;
use std::process::ExitCode;

use svc_users::config::{Config, LISTEN_ADDR};
use todo_common::auth::PrivateKey;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--generate-signing-key") {
        return match args.get(at + 1) {
            Some(path) => generate_signing_key(Path::new(path)),
            None => {
                eprintln!("svc-users: --generate-signing-key needs a file path");
                ExitCode::from(2)
            }
        };
    }
    let seed_only = args.iter().any(|a| a == "--seed");
    todo_common::cli::main("svc-users", &LISTEN_ADDR, Config::help, Config::from_env, |config| async move {
        if seed_only {
            let created = svc_users::seed::seed(&config).await?;
            tracing::info!(created, "demo users seeded");
            Ok(())
        } else {
            svc_users::run(config).await
        }
    })
}

/// Makes the Ed25519 signing key at `path` (0600) unless it exists, and prints its public
/// key (PEM) for JWT_PREVIOUS_PUBLIC_KEYS during a rotation. For a Compose init
/// container: the image has no shell and no openssl.
fn generate_signing_key(path: &Path) -> ExitCode {
    let key = match PrivateKey::read(path) {
        Ok(existing) => {
            eprintln!("svc-users: {} exists; it is kept", path.display());
            existing
        }
        Err(_) if path.exists() => {
            eprintln!("svc-users: {} exists but is not an Ed25519 private key; it is kept", path.display());
            return ExitCode::FAILURE;
        }
        Err(_) => match PrivateKey::create_file(path) {
            Ok(key) => {
                eprintln!("svc-users: created the signing key {} (mode 0600)", path.display());
                key
            }
            Err(error) => {
                eprintln!("svc-users: cannot create {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    print!("{}", key.public_key().to_pem());
    ExitCode::SUCCESS
}
