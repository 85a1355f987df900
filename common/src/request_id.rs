//! `X-Request-Id`: kept when the client's is sane, made otherwise.

pub const HEADER: &str = "x-request-id";
const MAX_LEN: usize = 128;

/// True for 1..=128 chars of `[A-Za-z0-9._-]`.
pub fn is_sane(candidate: &[u8]) -> bool {
    !candidate.is_empty()
        && candidate.len() <= MAX_LEN
        && candidate.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The client's id when sane, else a fresh one.
pub fn keep_or_make(sent: Option<&[u8]>) -> String {
    match sent {
        Some(id) if is_sane(id) => String::from_utf8_lossy(id).into_owned(),
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert_eq!(keep_or_make(Some(b"abc-123_x.y")), "abc-123_x.y");
        for bad in [&b""[..], b"has space", b"new\nline", "ünï".as_bytes(), &[b'a'; 129]] {
            let made = keep_or_make(Some(bad));
            assert!(is_sane(made.as_bytes()) && made.as_bytes() != bad);
        }
        assert_eq!(keep_or_make(None).len(), 32);
    }
}
