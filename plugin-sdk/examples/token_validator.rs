//! The token validator plugin: issues and checks HMAC-SHA256 signed bearer
//! tokens, the job an auth plugin does in front of an API.
//!
//! Config (the plugin's `config` table in the supervisor's config):
//! `secret` (required, at least 16 bytes), `issuer` (default "plugin-supervisor"),
//! `default_ttl_s` (default 3600). A token is
//! `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use plugin_sdk::tonic::{Request, Response, Status};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

mod pb {
    include!(concat!(env!("OUT_DIR"), "/token.v1.rs"));
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/token.binpb"));
}

use pb::token_validator_server::{TokenValidator, TokenValidatorServer};
use pb::{IssueRequest, IssueResponse, ValidateRequest, ValidateResponse};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    secret: String,
    #[serde(default = "default_issuer")]
    issuer: String,
    #[serde(default = "default_ttl")]
    default_ttl_s: u32,
}

fn default_issuer() -> String {
    "plugin-supervisor".into()
}

fn default_ttl() -> u32 {
    3600
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    scopes: Vec<String>,
    exp: i64,
}

struct Validator {
    config: Arc<OnceLock<Config>>,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Validator {
    fn config(&self) -> Result<&Config, Status> {
        self.config.get().ok_or_else(|| Status::failed_precondition("token validator is not initialised"))
    }

    fn mac(&self, secret: &str) -> Result<Hmac<Sha256>, Status> {
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| Status::internal(e.to_string()))
    }

    fn check(&self, token: &str, audience: &str) -> Result<Claims, String> {
        let cfg = self.config().map_err(|s| s.message().to_owned())?;
        let (body, sig) = token.split_once('.').ok_or("malformed token: expected two dot-separated parts")?;
        let sig = B64.decode(sig).map_err(|_| "malformed token: signature is not base64url")?;
        let mut mac = self.mac(&cfg.secret).map_err(|s| s.message().to_owned())?;
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).map_err(|_| "bad signature")?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed token: claims are not base64url JSON")?;
        if claims.iss != cfg.issuer {
            return Err(format!("issuer {:?} is not {:?}", claims.iss, cfg.issuer));
        }
        if claims.exp <= now() {
            return Err("token expired".into());
        }
        if !audience.is_empty() && claims.aud != audience {
            return Err(format!("audience {:?} is not {:?}", claims.aud, audience));
        }
        Ok(claims)
    }
}

#[plugin_sdk::tonic::async_trait]
impl TokenValidator for Validator {
    async fn validate(&self, req: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        let req = req.into_inner();
        let resp = match self.check(&req.token, &req.audience) {
            Ok(c) => ValidateResponse {
                valid: true,
                reason: String::new(),
                subject: c.sub,
                scopes: c.scopes,
                expires_at_unix: c.exp,
            },
            Err(reason) => {
                plugin_sdk::tracing::info!(%reason, "token refused");
                ValidateResponse { valid: false, reason, ..Default::default() }
            }
        };
        Ok(Response::new(resp))
    }

    async fn issue(&self, req: Request<IssueRequest>) -> Result<Response<IssueResponse>, Status> {
        let req = req.into_inner();
        if req.subject.is_empty() {
            return Err(Status::invalid_argument("subject must not be empty"));
        }
        let cfg = self.config()?;
        let ttl = if req.ttl_s == 0 { cfg.default_ttl_s } else { req.ttl_s };
        let claims = Claims {
            iss: cfg.issuer.clone(),
            sub: req.subject,
            aud: req.audience,
            scopes: req.scopes,
            exp: now() + i64::from(ttl),
        };
        let body = B64.encode(serde_json::to_vec(&claims).map_err(|e| Status::internal(e.to_string()))?);
        let mut mac = self.mac(&cfg.secret)?;
        mac.update(body.as_bytes());
        let token = format!("{body}.{}", B64.encode(mac.finalize().into_bytes()));
        Ok(Response::new(IssueResponse { token, expires_at_unix: claims.exp }))
    }
}

fn main() {
    let config = Arc::new(OnceLock::new());
    let slot = config.clone();
    plugin_sdk::Plugin::new("token-validator", env!("CARGO_PKG_VERSION"))
        .descriptors(pb::FILE_DESCRIPTOR_SET)
        .service(TokenValidatorServer::new(Validator { config }))
        .on_init(move |ctx| {
            let cfg: Config = serde_json::from_value(ctx.config.clone())
                .map_err(|e| Status::invalid_argument(format!("token-validator config: {e}")))?;
            if cfg.secret.len() < 16 {
                return Err(Status::invalid_argument("token-validator config: `secret` must be at least 16 bytes"));
            }
            let _ = slot.set(cfg);
            Ok(())
        })
        .serve()
}
