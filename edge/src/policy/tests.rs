use std::path::{Path, PathBuf};

use super::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile { name: name.into(), text: text.into() }
}

const UPSTREAMS: &str = r#"
[upstreams.users]
addresses = ["127.0.0.1:8081", "svc-users.todo.svc.cluster.local:8081"]

[upstreams.tasks]
addresses = ["[::1]:8082"]
read_timeout_ms = 500
[upstreams.tasks.health_check]
interval_ms = 200
"#;

const LIMITS: &str = r#"
[limits.login]
requests = 5
window_seconds = 60
key = "client_ip"

[limits.user]
requests = 100
window_seconds = 60
key = "subject"
"#;

const ROUTES: &str = r#"
[[routes]]
name = "tasks"
prefix = "/tasks"
upstream = "tasks"
auth = true
rate_limit = "user"

[[routes]]
name = "task-complete"
path = "/tasks/{id}/complete"
methods = ["post"]
upstream = "tasks"
auth = true

[[routes]]
name = "login"
path = "/users/login"
methods = ["POST"]
upstream = "users"
auth = false
rate_limit = "login"
"#;

fn good() -> Vec<SourceFile> {
    vec![file("limits.toml", LIMITS), file("routes.toml", ROUTES), file("upstreams.toml", UPSTREAMS)]
}

/// The policy set with `routes.toml` replaced, and its single error message.
fn errors_with(name: &str, text: &str) -> Vec<String> {
    let mut files: Vec<SourceFile> = good().into_iter().filter(|f| f.name != name).collect();
    files.push(file(name, text));
    match parse(&files, Capabilities::default()) {
        Ok(_) => panic!("{name} should be refused:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_one(errors: &[String], expected: &[&str]) {
    assert_eq!(errors.len(), 1, "{errors:#?}");
    for part in expected {
        assert!(errors[0].contains(part), "{:?} should contain {part:?}", errors[0]);
    }
}

#[test]
fn every_shipped_policy_file_parses() {
    let policy =
        load_dir(&repo_root().join("policies"), Capabilities::default()).unwrap_or_else(|e| panic!("policies/:\n{e}"));
    for (name, upstream) in [("users", 8081), ("tasks", 8082), ("notify", 8083)] {
        assert_eq!(policy.upstreams[name].addresses[0].port, upstream);
    }
    let route = |name: &str| policy.routes.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{name}"));
    assert!(!route("users-register").auth && !route("users-login").auth);
    assert!(route("users-me").auth && route("tasks").auth && route("notifications").auth);
    let login = &policy.limits[route("users-login").rate_limit.as_deref().unwrap()];
    let register = &policy.limits[route("users-register").rate_limit.as_deref().unwrap()];
    assert_eq!(login.key, LimitKey::ClientIp);
    let per_second = |l: &LimitSpec| l.requests as f64 / l.window.as_secs_f64();
    assert!(per_second(login) <= per_second(register) || login.requests < register.requests);
    assert_eq!(policy.limits[route("tasks").rate_limit.as_deref().unwrap()].key, LimitKey::Subject);

    assert!(policy.limits.values().all(|l| l.store == LimitStore::Local), "native runs have no EDGE_REDIS_URL");

    // Compose and Kubernetes replace upstreams.toml, and limits.toml with the same
    // limits counted in Redis across replicas.
    let shipped = read_sources(&repo_root().join("policies")).unwrap();
    for deploy in ["deploy/compose", "deploy/k8s/base/policies"] {
        let mut files: Vec<SourceFile> =
            shipped.iter().filter(|f| f.name != "upstreams.toml" && f.name != "limits.toml").cloned().collect();
        for name in ["upstreams.toml", "limits.toml", "client_ip.toml"] {
            if let Ok(text) = std::fs::read_to_string(repo_root().join(deploy).join(name)) {
                files.push(file(name, &text));
            }
        }
        let deployed = parse(&files, Capabilities { redis: true }).unwrap_or_else(|e| panic!("{deploy}:\n{e}"));
        assert_eq!(deployed.limits.len(), policy.limits.len(), "{deploy}");
        for (name, limit) in &policy.limits {
            let shared = LimitSpec { store: LimitStore::Redis, ..limit.clone() };
            assert_eq!(deployed.limits.get(name), Some(&shared), "{deploy}: limits.{name}");
        }
        assert!(parse(&files, Capabilities::default()).is_err(), "{deploy} needs EDGE_REDIS_URL");
        if deploy.contains("k8s") {
            assert!(deployed.client_ip.is_some_and(|c| !c.trusted_proxies.is_empty()), "the trusted-proxy placeholder");
        }
    }
}

#[test]
fn a_redis_store_needs_edge_redis_url() {
    let limits = LIMITS.replace("key = \"client_ip\"", "key = \"client_ip\"\nstore = \"redis\"");
    assert_ne!(limits, LIMITS);
    let files = |limits: &str| {
        vec![file("limits.toml", limits), file("routes.toml", ROUTES), file("upstreams.toml", UPSTREAMS)]
    };
    let policy = parse(&files(&limits), Capabilities { redis: true }).unwrap();
    assert_eq!(policy.limits["login"].store, LimitStore::Redis);
    let errors: Vec<String> =
        parse(&files(&limits), Capabilities::default()).unwrap_err().0.iter().map(ToString::to_string).collect();
    assert_one(&errors, &["limits.toml:", "limits.login.store", "EDGE_REDIS_URL"]);
    let unknown = parse(&files(&limits.replace("\"redis\"", "\"memcached\"")), Capabilities { redis: true });
    assert!(unknown.unwrap_err().to_string().contains("memcached"));
    // Without `store`, a table is local.
    assert_eq!(parse(&files(LIMITS), Capabilities::default()).unwrap().limits["login"].store, LimitStore::Local);
}

#[test]
fn a_good_set_parses_with_defaults_and_matching_order() {
    let policy = parse(&good(), Capabilities::default()).unwrap();
    let names: Vec<&str> = policy.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["login", "task-complete", "tasks"], "exact, then template, then prefix");
    let users = &policy.upstreams["users"];
    assert_eq!(users.addresses[1].host, "svc-users.todo.svc.cluster.local");
    assert_eq!(users.connect_timeout, Duration::from_secs(1));
    assert_eq!(users.health_check.kind, HealthCheckKind::Tcp);
    let tasks = &policy.upstreams["tasks"];
    assert_eq!(tasks.addresses[0].to_string(), "[::1]:8082");
    assert_eq!(tasks.read_timeout, Duration::from_millis(500));
    assert_eq!(tasks.health_check.kind, HealthCheckKind::Http { path: "/healthz".into() });
    assert_eq!(tasks.health_check.interval, Duration::from_millis(200));
    assert_eq!(policy.routes[1].methods, Some(vec![Method::POST]));
    assert!(policy.cors.is_none());
}

#[test]
fn path_matchers() {
    let template = |p: &str| validate::parse_path(p, true).unwrap();
    let prefix = |p: &str| validate::parse_path(p, false).unwrap();
    assert!(prefix("/tasks").matches("/tasks") && prefix("/tasks").matches("/tasks/1/complete"));
    assert!(!prefix("/tasks").matches("/tasksx") && !prefix("/tasks").matches("/task"));
    assert!(prefix("/").matches("/anything"));
    let t = template("/tasks/{id}/complete");
    assert!(t.matches("/tasks/abc/complete"));
    assert!(!t.matches("/tasks//complete") && !t.matches("/tasks/abc") && !t.matches("/tasks/a/complete/x"));
    assert_eq!(template("/users/me"), PathMatcher::Exact("/users/me".into()));
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let errors = errors_with("limits.toml", &LIMITS.replace("key = \"client_ip\"", "key = \"client_ip\"\nburst = 3"));
    assert_one(&errors, &["limits.toml:6:1", "burst", "unknown field"]);
    let errors = errors_with("upstreams.toml", &UPSTREAMS.replace("read_timeout_ms", "read_timeout"));
    assert_one(&errors, &["upstreams.toml:7:", "read_timeout", "unknown field"]);
    let errors = errors_with("routes.toml", &format!("{ROUTES}\n[other]\nx = 1\n"));
    assert_one(&errors, &["routes.toml:", "other", "unknown field"]);
}

#[test]
fn wrong_types_name_the_key() {
    let errors = errors_with("limits.toml", &LIMITS.replace("requests = 5", "requests = \"five\""));
    assert_one(&errors, &["limits.toml:3:12", "requests", "invalid type"]);
    let errors = errors_with("routes.toml", &ROUTES.replace("auth = false", "auth = \"no\""));
    assert_one(&errors, &["routes.toml:", "auth", "invalid type"]);
    let errors = errors_with("limits.toml", &LIMITS.replace("key = \"client_ip\"", "key = \"cookie\""));
    assert_one(&errors, &["limits.toml:5:", "key", "unknown variant"]);
    let errors =
        errors_with("routes.toml", &ROUTES.replace("auth = true\nrate_limit = \"user\"", "rate_limit = \"user\""));
    assert_one(&errors, &["routes.toml:", "missing field `auth`"]);
}

#[test]
fn syntax_errors_give_the_position() {
    let errors = errors_with("routes.toml", "[[routes]\nname = \"x\"\n");
    assert_one(&errors, &["routes.toml:1:"]);
}

#[test]
fn unknown_references_are_refused() {
    let errors = errors_with("routes.toml", &ROUTES.replace("upstream = \"users\"", "upstream = \"userz\""));
    assert_one(
        &errors,
        &["routes.toml:20:12", "routes[2] (\"login\").upstream", "unknown upstream \"userz\"", "tasks, users"],
    );
    let errors = errors_with("routes.toml", &ROUTES.replace("rate_limit = \"login\"", "rate_limit = \"logn\""));
    assert_one(&errors, &["routes.toml:22:", "rate_limit", "unknown limit \"logn\""]);
}

#[test]
fn duplicates_are_refused() {
    let twice = format!(
        "{ROUTES}\n[[routes]]\nname = \"login2\"\npath = \"/users/login\"\nupstream = \"users\"\nauth = false\n"
    );
    assert_one(&errors_with("routes.toml", &twice), &["routes[3]", "duplicate route", "\"login\"", "routes.toml:16"]);
    let same_name =
        format!("{ROUTES}\n[[routes]]\nname = \"login\"\npath = \"/other\"\nupstream = \"users\"\nauth = false\n");
    assert_one(&errors_with("routes.toml", &same_name), &["routes[3]", "name", "used twice"]);
    // Other methods on the same path are fine.
    let get = format!("{ROUTES}\n[[routes]]\nname = \"login-page\"\npath = \"/users/login\"\nmethods = [\"GET\"]\nupstream = \"users\"\nauth = false\n");
    let files = [file("limits.toml", LIMITS), file("routes.toml", &get), file("upstreams.toml", UPSTREAMS)];
    assert!(parse(&files, Capabilities::default()).is_ok());
    // The same upstream in two files.
    let mut files = good();
    files.push(file("more.toml", "[upstreams.users]\naddresses = [\"10.0.0.1:1\"]\n"));
    let errors: Vec<String> =
        parse(&files, Capabilities::default()).unwrap_err().0.iter().map(ToString::to_string).collect();
    assert_one(&errors, &["more.toml:1:", "upstreams.users", "defined twice", "upstreams.toml:2"]);
}

#[test]
fn bad_addresses_are_refused() {
    for (address, why) in [
        ("http://users:8081", "without a scheme"),
        ("users", "expected host:port"),
        ("users:0", "port"),
        ("users:99999", "port"),
        ("bad host:80", "host name"),
        ("[::g]:80", "IPv6"),
    ] {
        let text = format!(
            "[upstreams.users]\naddresses = [\"{address}\"]\n[upstreams.tasks]\naddresses = [\"127.0.0.1:1\"]\n"
        );
        assert_one(&errors_with("upstreams.toml", &text), &["upstreams.toml:2:", "upstreams.users.addresses[0]", why]);
    }
    let none = "[upstreams.users]\naddresses = []\n[upstreams.tasks]\naddresses = [\"127.0.0.1:1\"]\n";
    assert_one(&errors_with("upstreams.toml", none), &["addresses", "at least one"]);
}

#[test]
fn semantic_rules_are_checked() {
    let subject_on_public = ROUTES.replace("rate_limit = \"login\"", "rate_limit = \"user\"");
    assert_one(&errors_with("routes.toml", &subject_on_public), &["rate_limit", "needs auth = true"]);
    let both = ROUTES.replace("path = \"/users/login\"", "path = \"/users/login\"\nprefix = \"/users\"");
    assert_one(&errors_with("routes.toml", &both), &["routes[2]", "exactly one"]);
    for (path, why) in
        [("users/login", "start with"), ("/users/../x", "'..'"), ("/users/", "end with"), ("/a/{x", "whole segment")]
    {
        let bad = ROUTES.replace("path = \"/users/login\"", &format!("path = \"{path}\""));
        assert_one(&errors_with("routes.toml", &bad), &["routes[2] (\"login\").path", why]);
    }
    let param_prefix = ROUTES.replace("prefix = \"/tasks\"", "prefix = \"/tasks/{id}\"");
    assert_one(&errors_with("routes.toml", &param_prefix), &["prefix", "param"]);
    let bad_method = ROUTES.replace("methods = [\"post\"]", "methods = [\"FETCH\"]");
    assert_one(&errors_with("routes.toml", &bad_method), &["methods[0]", "FETCH"]);
    let bad_name = ROUTES.replace("name = \"login\"", "name = \"Log In\"");
    assert_one(&errors_with("routes.toml", &bad_name), &["name", "a-z"]);
    let window = LIMITS.replace("window_seconds = 60\nkey = \"client_ip\"", "window_seconds = 0\nkey = \"client_ip\"");
    assert_one(&errors_with("limits.toml", &window), &["limits.login.window_seconds", "out of range"]);
    let tcp_path = UPSTREAMS.replace("interval_ms = 200", "type = \"tcp\"\npath = \"/healthz\"");
    assert_one(&errors_with("upstreams.toml", &tcp_path), &["health_check.path", "http"]);
}

#[test]
fn cors_is_checked() {
    let cors = |origins: &str| format!("[cors]\nallowed_origins = [{origins}]\n");
    let mut files = good();
    files.push(file("cors.toml", &cors("\"https://app.example.com\", \"http://localhost:3000\"")));
    let policy = parse(&files, Capabilities::default()).unwrap();
    let spec = policy.cors.unwrap();
    assert!(spec.allows_origin("https://app.example.com") && !spec.allows_origin("https://evil.example.com"));
    assert_eq!(spec.max_age_seconds, 600);
    assert!(spec.allowed_headers.contains(&"authorization".to_owned()));
    for bad in ["\"*\"", "\"app.example.com\"", "\"https://app.example.com/path\""] {
        let errors = errors_with("cors.toml", &cors(bad));
        assert_one(&errors, &["cors.toml:2:", "cors.allowed_origins[0]"]);
    }
}

#[test]
fn an_empty_or_missing_directory_is_refused() {
    assert!(parse(&[], Capabilities::default()).unwrap_err().to_string().contains("no policy files"));
    let missing = load_dir(Path::new("/nonexistent/policies"), Capabilities::default()).unwrap_err().to_string();
    assert!(missing.contains("/nonexistent/policies") && missing.contains("cannot read"), "{missing}");
    let only_upstreams = parse(&[file("upstreams.toml", UPSTREAMS)], Capabilities::default()).unwrap_err().to_string();
    assert!(only_upstreams.contains("no [[routes]]"), "{only_upstreams}");
}

#[test]
fn the_json_schema_accepts_every_shipped_file_and_refuses_a_bad_one() {
    let schema = todo_common::body::JsonSchema::compile(
        "policy.schema.json",
        include_str!("../../../policies/policy.schema.json"),
    )
    .expect("the schema compiles");
    let as_json = |text: &str| serde_json::to_value(toml::from_str::<toml::Table>(text).expect("toml")).expect("json");
    let mut shipped = read_sources(&repo_root().join("policies")).unwrap();
    for other in [
        "deploy/compose/upstreams.toml",
        "deploy/compose/limits.toml",
        "deploy/k8s/base/policies/upstreams.toml",
        "deploy/k8s/base/policies/limits.toml",
        "deploy/k8s/base/policies/client_ip.toml",
    ] {
        shipped.push(file(other, &std::fs::read_to_string(repo_root().join(other)).unwrap()));
    }
    for source in shipped.iter().chain(&good()) {
        if let Err(problem) = schema.check(&as_json(&source.text)) {
            panic!("{}: {problem:?}", source.name);
        }
    }
    assert!(schema.check(&as_json(&ROUTES.replace("auth = false", "auth = false\nretries = 2"))).is_err());
    assert!(schema.check(&as_json(&LIMITS.replace("\"client_ip\"", "\"cookie\""))).is_err());
    assert!(schema.check(&as_json(&LIMITS.replace("key = ", "store = \"memcached\"\nkey = "))).is_err());
    assert!(schema.check(&as_json("[client_ip]\ntrusted = [\"10.0.0.0/8\"]\n")).is_err());
}

#[test]
fn client_ip_trusts_cidrs_and_refuses_anything_else() {
    let with = |text: &str| {
        let mut files = good();
        files.push(file("client_ip.toml", text));
        parse(&files, Capabilities::default())
    };
    let policy = with("[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.7\"]\n").unwrap();
    let trusted: Vec<String> = policy.client_ip.unwrap().trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(trusted, ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]);
    assert_eq!(parse(&good(), Capabilities::default()).unwrap().client_ip, None);

    let errors: Vec<String> = with("[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n")
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_one(&errors, &["client_ip.toml:2:", "client_ip.trusted_proxies", "10.0.0.0/33"]);
    let mut files = good();
    files.push(file("a.toml", "[client_ip]\ntrusted_proxies = []\n"));
    files.push(file("b.toml", "[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\"]\n"));
    let errors: Vec<String> =
        parse(&files, Capabilities::default()).unwrap_err().0.iter().map(ToString::to_string).collect();
    assert_one(&errors, &["b.toml:1:", "client_ip", "defined twice (first at a.toml:1)"]);
}
