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
