use std::path::Path;
use std::process::Command;

use crate::helpers::*;

fn edge_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edge"));
    command.env_clear();
    command
}

#[test]
fn check_policies_accepts_the_shipped_policies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let output = edge_command().arg("--check-policies").arg(&dir).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn check_policies_refuses_a_bad_directory_naming_file_line_and_key() {
    let policy = PolicyDir::new();
    write_policy(&policy.path, &["127.0.0.1:1".parse().unwrap()], &["127.0.0.1:2".parse().unwrap()]);
    policy.write("routes.toml", &ROUTES.replace("auth = false\nrate_limit", "auth = false\nrate_limt"));
    let output = edge_command().arg("--check-policies").arg(&policy.path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("routes.toml:15:1: rate_limt: unknown field"), "{stderr}");
}

#[test]
fn help_lists_every_variable() {
    let output = edge_command().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for var in
        ["LISTEN_ADDR", "POLICY_DIR", "EDGE_MAX_BODY_BYTES", "EDGE_THREADS", "SHUTDOWN_GRACE_SECONDS", "JWT_SECRET"]
    {
        assert!(text.contains(var), "{var} missing in --help");
    }
}

#[test]
fn public_secrets_and_conflicting_token_settings_are_refused_with_a_reason() {
    let primary_again = format!("primary={TEST_JWT_SECRET}-x");
    let jwks = "http://127.0.0.1:1/.well-known/jwks.json";
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("JWT_SECRET", "todo-dev-mode-only-secret-do-not-use-in-production")], "published in this repository"),
        (&[("JWT_SECRET", "CHANGE-ME-this-placeholder-is-not-a-secret-0123456789")], "published in this repository"),
        (&[("JWT_SECRET", "dev-placeholder-jwt-secret-not-for-production-0123456789")], "published in this repository"),
        (&[("JWT_SECRET", TEST_JWT_SECRET), ("JWT_JWKS_URL", jwks)], "choose one mode"),
        (&[("JWT_SECRET", TEST_JWT_SECRET), ("JWT_PREVIOUS_KEYS", &primary_again)], "twice"),
        (&[("JWT_JWKS_URL", jwks), ("JWT_SIGNING_KEY", "/etc/todo/jwt-signing.pem")], "holds no private key"),
    ];
    for (env, reason) in cases {
        let output = edge_command().envs(env.iter().copied()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{env:?} was accepted");
        assert!(stderr.lines().any(|line| line.contains(reason)), "{env:?}: expected {reason:?} in:\n{stderr}");
    }
}
