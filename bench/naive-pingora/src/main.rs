//! A naive Pingora gateway: every request's HS256 token verified with `jsonwebtoken`, a
//! `pingora-limits` rate per subject, CORS for one origin and helmet's security headers
//! on the answer; one upstream; no access log, no metrics, no request ids.
//!
//! With `PLAIN=1`, none of that either: a plain Pingora proxy configured as the edge is (no
//! response-compression module, no work stealing), the floor under any gateway built on
//! the framework.
//!
//! LISTEN_ADDR, UPSTREAM (host:port), JWT_SECRET, ALLOWED_ORIGIN, PLAIN; one worker thread.

use std::env;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use pingora::http::ResponseHeader;
use pingora::modules::http::compression::ResponseCompressionBuilder;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora_limits::rate::Rate;

const LIMIT_PER_MINUTE: isize = 1_000_000_000;

// The edge's own list, so both send the same bytes.
#[path = "../../../edge/src/security_headers.rs"]
mod security_headers;
use security_headers::SECURITY_HEADERS;

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

struct Naive {
    upstream: String,
    key: DecodingKey,
    validation: Validation,
    origin: String,
    rate: Rate,
    plain: bool,
}

#[derive(Default)]
struct Ctx {
    cors: bool,
}

#[async_trait]
impl ProxyHttp for Naive {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Pingora's default: a response-compression module, switched off.
        if !self.plain {
            modules.add_module(ResponseCompressionBuilder::enable(0));
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if self.plain {
            return Ok(false);
        }
        let headers = &session.req_header().headers;
        ctx.cors = headers.get("origin").is_some_and(|o| o.as_bytes() == self.origin.as_bytes());
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let subject = match token.map(|t| decode::<Claims>(t, &self.key, &self.validation)) {
            Some(Ok(data)) => data.claims.sub,
            _ => return session.respond_error(401).await.map(|()| true),
        };
        if self.rate.observe(&subject, 1) > LIMIT_PER_MINUTE {
            return session.respond_error(429).await.map(|()| true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }

    async fn response_filter(&self, _session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if self.plain {
            return Ok(());
        }
        for (name, value) in SECURITY_HEADERS {
            resp.insert_header(*name, *value)?;
        }
        if ctx.cors {
            resp.insert_header("access-control-allow-origin", self.origin.as_str())?;
            resp.insert_header("vary", "Origin")?;
        }
        Ok(())
    }
}

fn main() {
    let var = |name: &str| env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["todo-users"]);
    validation.set_audience(&["todo-api"]);
    let naive = Naive {
        upstream: var("UPSTREAM"),
        key: DecodingKey::from_secret(var("JWT_SECRET").as_bytes()),
        validation,
        origin: var("ALLOWED_ORIGIN"),
        rate: Rate::new(Duration::from_secs(60)),
        plain: env::var("PLAIN").is_ok_and(|v| v == "1"),
    };
    let plain = naive.plain;
    let mut server = Server::new(None).expect("server");
    server.configuration = std::sync::Arc::new(pingora::server::configuration::ServerConf {
        threads: 1,
        work_stealing: !plain,
        ..Default::default()
    });
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, naive);
    proxy.add_tcp(&var("LISTEN_ADDR"));
    server.add_service(proxy);
    server.run_forever();
}
