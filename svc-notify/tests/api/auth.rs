//! Every notification endpoint needs a valid bearer token.

use std::time::Duration;

use todo_common::auth::{JwtSettings, TokenIssuer};
use todo_test_support::unique_name;

use crate::helpers::spawn_app;

#[tokio::test]
async fn missing_or_bad_tokens_are_401() {
    let app = spawn_app().await;
    let forged =
        TokenIssuer::new(&JwtSettings::with_secret("some-other-secret-0123456789-abcdefghij"), Duration::from_secs(60))
            .unwrap()
            .issue(&unique_name("user"))
            .unwrap();
    for token in [None, Some("garbage"), Some(forged.as_str())] {
        let list = app.get_notifications(token, "").await;
        let read = app.mark_read(token, "65f0c0ffee65f0c0ffee65f0").await;
        for response in [list, read] {
            assert_eq!(response.status(), 401, "token {token:?}");
            assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
            assert_eq!(response.headers()["content-type"], "application/problem+json");
        }
    }
}
