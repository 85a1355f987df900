//! Whatever bytes a client sends as `Authorization` or `X-Request-Id`: the bearer
//! parser and the verifier refuse or accept without panicking, and a kept request id
//! is always sane (it goes into logs, headers and AMQP properties).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use todo_common::auth::{bearer_token, JwtSettings, TokenVerifier};
use todo_common::request_id::{is_sane, keep_or_make};

static VERIFIER: LazyLock<TokenVerifier> =
    LazyLock::new(|| TokenVerifier::new(&JwtSettings::with_secret("fuzz-secret-0123456789-abcdefghijklmnop")));

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = bearer_token(Some(data)) {
        assert!(!token.is_empty() && token.len() <= 4096);
        // Random bytes never carry a valid HS256 signature under our key.
        assert!(VERIFIER.verify(token).is_err());
    }
    let id = keep_or_make(Some(data));
    assert!(is_sane(id.as_bytes()), "request id {id:?} is not sane");
    if is_sane(data) {
        assert_eq!(id.as_bytes(), data, "a sane id is kept as sent");
    }
});
