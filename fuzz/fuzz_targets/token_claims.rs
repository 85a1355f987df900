//! Correctly signed tokens with arbitrary headers and claims: the verifier only ever
//! accepts an HS256 token with a known `kid`, our issuer and audience, a subject and an
//! unexpired `exp` (so a fuzzer can reach past the signature check, the input is the
//! header and payload JSON, signed here with the real key).
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use todo_common::auth::{unix_now, JwtSettings, TokenVerifier};

const SECRET: &str = "fuzz-secret-0123456789-abcdefghijklmnop";

static VERIFIER: LazyLock<TokenVerifier> = LazyLock::new(|| TokenVerifier::new(&JwtSettings::with_secret(SECRET)));
static KEY: LazyLock<EncodingKey> = LazyLock::new(|| EncodingKey::from_secret(SECRET.as_bytes()));

fuzz_target!(|data: &[u8]| {
    // header JSON, NUL, payload JSON
    let (header, payload) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&br#"{"alg":"HS256","kid":"primary"}"#[..], data),
    };
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let Ok(signature) = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &KEY, Algorithm::HS256) else {
        return;
    };
    let token = format!("{signing_input}.{signature}");
    if let Ok(claims) = VERIFIER.verify(&token) {
        let header: serde_json::Value = serde_json::from_slice(header).expect("an accepted header is JSON");
        assert_eq!(header["alg"], "HS256", "accepted a token whose header says {:?}", header["alg"]);
        assert_eq!(header["kid"], "primary");
        assert_eq!(claims.iss, "todo-users");
        assert_eq!(claims.aud, "todo-api");
        assert!(claims.exp + 30 >= unix_now(), "accepted an expired token");
        assert!(claims.nbf.is_none_or(|nbf| nbf <= unix_now() + 30), "accepted a token not valid yet");
    }
});
