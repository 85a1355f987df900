//! Request bodies: content type, size limit, read timeout, JSON parsing and JSON
//! Schema validation, each failure its own clear problem.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use jsonschema::error::ValidationErrorKind;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::problem::{FieldError, Problem};

/// A slow client gets this long to send its whole body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A compiled JSON Schema for one kind of request body.
pub struct JsonSchema {
    validator: jsonschema::Validator,
}

impl JsonSchema {
    /// Compiles a schema shipped with the binary; a broken one is a bug, found at start.
    pub fn compile(name: &str, source: &str) -> anyhow::Result<Self> {
        let schema: serde_json::Value =
            serde_json::from_str(source).map_err(|e| anyhow::anyhow!("schema {name} is not JSON: {e}"))?;
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| anyhow::anyhow!("schema {name} is invalid: {e}"))?;
        Ok(Self { validator })
    }

    pub fn check(&self, instance: &serde_json::Value) -> Result<(), Problem> {
        let errors: Vec<FieldError> = self
            .validator
            .iter_errors(instance)
            .map(|error| {
                let pointer = error.instance_path().to_string();
                let mut field = pointer.trim_start_matches('/').replace('/', ".");
                // A missing property is an error of its parent; a form needs the property.
                if let ValidationErrorKind::Required { property } = error.kind() {
                    if let Some(name) = property.as_str() {
                        field = if field.is_empty() { name.to_owned() } else { format!("{field}.{name}") };
                    }
                }
                let field = if field.is_empty() { "body".to_owned() } else { field };
                // Masked: the message never echoes what was sent (a password, say).
                FieldError::new(field, error.masked_with("the value").to_string())
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(errors))
        }
    }
}

/// Reads a JSON body of at most `limit` bytes, validates it and decodes it.
pub async fn read_json<T, B>(headers: &HeaderMap, body: B, limit: usize, schema: &JsonSchema) -> Result<T, Problem>
where
    T: DeserializeOwned,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !is_json(headers) {
        return Err(Problem::unsupported_media_type());
    }
    let bytes = read_limited(headers, body, limit).await?;
    let value = parse_strict(&bytes).map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
    schema.check(&value)?;
    serde_json::from_value(value).map_err(|e| Problem::bad_request(format!("invalid body: {e}")))
}

/// Reads the whole body, refusing more than `limit` bytes (413) or a slow sender (408).
pub async fn read_limited<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, Problem>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Problem::payload_too_large(limit));
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Err(_) => Err(Problem::request_timeout()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Problem::payload_too_large(limit)),
        Ok(Err(e)) => Err(Problem::bad_request(format!("the body could not be read: {e}"))),
    }
}

/// Parses JSON like `serde_json`, but refuses an object that repeats a key: parsers
/// disagree on which value wins, so such a body is ambiguous, not valid.
pub fn parse_strict(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_slice::<StrictValue>(bytes).map(|v| v.0)
}

struct StrictValue(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        Ok(StrictValue(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)))
    }

    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(v.into()))
    }

    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(serde_json::Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(serde_json::Value::Array(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(StrictValue(serde_json::Value::Object(object)))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}

pub fn empty_response(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> JsonSchema {
        JsonSchema::compile(
            "t",
            r#"{"type":"object","properties":{"title":{"type":"string","maxLength":3}},"required":["title"],"additionalProperties":false}"#,
        )
        .unwrap()
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().unwrap());
        headers
    }

    async fn read(headers: &HeaderMap, body: &'static str, limit: usize) -> Result<serde_json::Value, Problem> {
        read_json(headers, Full::new(Bytes::from_static(body.as_bytes())), limit, &schema()).await
    }

    #[tokio::test]
    async fn each_failure_has_its_status() {
        let headers = json_headers();
        assert!(read(&headers, r#"{"title":"abc"}"#, 100).await.is_ok());
        assert_eq!(read(&HeaderMap::new(), r#"{"title":"a"}"#, 100).await.unwrap_err().status, 415);
        assert_eq!(read(&headers, r#"{"title":"#, 100).await.unwrap_err().status, 400);
        assert_eq!(read(&headers, r#"{"title":"abcdef"}"#, 10).await.unwrap_err().status, 413);
        let unknown = read(&headers, r#"{"title":"a","x":1}"#, 100).await.unwrap_err();
        assert_eq!(unknown.status, 400);
        assert!(!unknown.errors.is_empty());
        let duplicate = read(&headers, r#"{"title":"a","title":"b"}"#, 100).await.unwrap_err();
        assert!(duplicate.status == 400 && duplicate.detail.contains("duplicate key"), "{duplicate}");
        let too_long = read(&headers, r#"{"title":"secret"}"#, 100).await.unwrap_err();
        assert_eq!(too_long.errors[0].field, "title");
        assert!(!too_long.errors[0].message.contains("secret"), "{too_long}");
        let missing = read(&headers, r#"{}"#, 100).await.unwrap_err();
        assert_eq!(missing.errors[0].field, "title", "{missing}");
    }
}
