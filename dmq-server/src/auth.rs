//! Who may call the API: bearer tokens, static ones from a file or JWTs (HS256,
//! RS256), each granting scopes (`produce`, `consume`, `admin`), optionally only in some
//! namespaces and on some queues.

use std::fmt;
use std::path::Path;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::ApiError;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Enqueue jobs, read their state and results.
    Produce,
    /// Claim jobs and settle them.
    Consume,
    /// Everything the admin endpoints do, and the event stream.
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Produce => "produce",
            Scope::Consume => "consume",
            Scope::Admin => "admin",
        }
    }

    fn parse(word: &str) -> Option<Scope> {
        match word {
            "produce" => Some(Scope::Produce),
            "consume" => Some(Scope::Consume),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// What a request's credentials allow.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Who: a static token's name, a JWT's `sub`, or `anonymous` without auth.
    pub name: String,
    scopes: Vec<Scope>,
    /// The namespaces it may act in; `None` for all.
    namespaces: Option<Vec<String>>,
    /// The queues it may act on; `None` for all.
    queues: Option<Vec<String>>,
}

impl Grant {
    /// Everything, for `--insecure-no-auth`.
    pub(crate) fn everything() -> Grant {
        Grant {
            name: "anonymous".to_owned(),
            scopes: vec![Scope::Produce, Scope::Consume, Scope::Admin],
            namespaces: None,
            queues: None,
        }
    }

    /// Refuses with 403 unless the grant has `scope` in `namespace`.
    pub(crate) fn require(&self, scope: Scope, namespace: &str) -> Result<(), ApiError> {
        if !self.scopes.contains(&scope) {
            return Err(ApiError::forbidden(format!(
                "the token of {:?} lacks the {:?} scope this endpoint needs",
                self.name,
                scope.as_str()
            )));
        }
        if let Some(namespaces) = &self.namespaces {
            if !namespaces.iter().any(|n| n == namespace) {
                return Err(ApiError::forbidden(format!(
                    "the token of {:?} is not valid in namespace {namespace:?}, the one this \
                     server serves",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Refuses with 403 unless the grant may act on `queue` (a partition counts as
    /// its queue).
    pub(crate) fn require_queue(&self, queue: &str) -> Result<(), ApiError> {
        let (logical, _) = dmq_core::split_partition(queue);
        match &self.queues {
            Some(queues) if !queues.iter().any(|q| q == logical || q == queue) => {
                Err(ApiError::forbidden(format!(
                    "the token of {:?} may not act on queue {queue:?}",
                    self.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether the grant may act on every queue.
    pub(crate) fn all_queues(&self) -> bool {
        self.queues.is_none()
    }

    /// The queues a search by job id may look in for this grant: its own, or every
    /// queue (an empty list) for a grant of every queue. A token limited to some
    /// queues neither learns of jobs elsewhere nor makes the broker search them.
    pub(crate) fn searchable(&self) -> Vec<String> {
        self.queues.clone().unwrap_or_default()
    }
}

/// One static token, as the tokens file lists it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticToken {
    name: String,
    token: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    namespaces: Option<Vec<String>>,
    #[serde(default)]
    queues: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<StaticToken>,
}

/// The claims dmq reads from a JWT; `exp` is required and checked, `nbf` checked when
/// present.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// Space-separated, as OAuth writes it: `"produce consume"`.
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    namespaces: Option<Vec<String>>,
    #[serde(default)]
    queues: Option<Vec<String>>,
}

/// How requests are authenticated.
pub struct Auth {
    insecure: bool,
    tokens: Vec<(String, Grant)>,
    jwt: Option<(DecodingKey, Validation)>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("Auth")
            .field("insecure", &self.insecure)
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt.as_ref().map(|(_, v)| v.algorithms.clone()))
            .finish()
    }
}

/// Why an auth setting could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(String);

/// Where the JWT verification key comes from.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with this shared secret.
    Hs256(Vec<u8>),
    /// RS256 with this PEM public key.
    Rs256Pem(Vec<u8>),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        match self {
            JwtKey::Hs256(_) => f.write_str("Hs256(..)"),
            JwtKey::Rs256Pem(_) => f.write_str("Rs256Pem(..)"),
        }
    }
}

impl Auth {
    /// No authentication at all: every request may do everything.
    pub fn insecure_no_auth() -> Auth {
        Auth { insecure: true, tokens: Vec::new(), jwt: None }
    }

    /// Tokens from the JSON file at `path` (see the README's "HTTP API") and JWTs
    /// checked with `jwt`, either or both.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or parsed, when a token is empty or repeated, when
    /// the key does not parse, or when neither is given.
    pub fn new(tokens_file: Option<&Path>, jwt: Option<JwtKey>) -> Result<Auth, AuthSetupError> {
        let mut tokens = Vec::new();
        if let Some(path) = tokens_file {
            let text = std::fs::read(path).map_err(|e| {
                AuthSetupError(format!("could not read the tokens file {}: {e}", path.display()))
            })?;
            let file: TokensFile = serde_json::from_slice(&text).map_err(|e| {
                AuthSetupError(format!(
                    "the tokens file {} is not valid ({e}); it holds {{\"tokens\": [{{\"name\": \
                     \"...\", \"token\": \"...\", \"scopes\": [\"produce\"]}}]}}",
                    path.display()
                ))
            })?;
            for t in file.tokens {
                if t.token.len() < 16 {
                    return Err(AuthSetupError(format!(
                        "the token named {:?} in {} is shorter than 16 characters; use a long \
                         random one (openssl rand -hex 32)",
                        t.name,
                        path.display()
                    )));
                }
                if tokens.iter().any(|(token, _)| *token == t.token) {
                    return Err(AuthSetupError(format!(
                        "the token named {:?} in {} repeats another's token",
                        t.name,
                        path.display()
                    )));
                }
                let grant = Grant {
                    name: t.name,
                    scopes: t.scopes,
                    namespaces: t.namespaces,
                    queues: t.queues,
                };
                tokens.push((t.token, grant));
            }
        }
        let jwt = match jwt {
            None => None,
            Some(JwtKey::Hs256(secret)) => {
                if secret.len() < 32 {
                    return Err(AuthSetupError(
                        "the HS256 secret is shorter than 32 bytes; use a long random one"
                            .to_owned(),
                    ));
                }
                Some((DecodingKey::from_secret(&secret), validation(Algorithm::HS256)))
            }
            Some(JwtKey::Rs256Pem(pem)) => {
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    AuthSetupError(format!("the RS256 public key is not a PEM RSA key: {e}"))
                })?;
                Some((key, validation(Algorithm::RS256)))
            }
        };
        if tokens.is_empty() && jwt.is_none() {
            return Err(AuthSetupError(
                "no credentials are set up: pass --tokens FILE, --jwt-hs256-secret FILE or \
                 --jwt-rs256-key FILE (or --insecure-no-auth for local use only)"
                    .to_owned(),
            ));
        }
        Ok(Auth { insecure: false, tokens, jwt })
    }

    /// Requires JWTs to name `audience` in their `aud` and `issuer` as their `iss`,
    /// each when given (`--jwt-audience`, `--jwt-issuer`): with an identity provider
    /// that signs tokens for many services, a token made for another is refused.
    #[must_use]
    pub fn with_jwt_claims(mut self, audience: Option<String>, issuer: Option<String>) -> Self {
        if let Some((_, validation)) = &mut self.jwt {
            let mut required = vec!["exp"];
            if let Some(audience) = audience {
                validation.set_audience(&[audience]);
                validation.validate_aud = true;
                required.push("aud");
            }
            if let Some(issuer) = issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            validation.set_required_spec_claims(&required);
        }
        self
    }

    /// Whether every request is let through.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// What the request's `Authorization: Bearer` token grants.
    pub(crate) fn grant(&self, headers: &HeaderMap) -> Result<Grant, ApiError> {
        if self.insecure {
            return Ok(Grant::everything());
        }
        let value = headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("no credentials: send Authorization: Bearer <token>")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must read Bearer <token>")
            })?;
        // Every static token is compared, in time that does not depend on where they
        // differ, so timing tells nothing of them.
        let mut found = None;
        for (known, grant) in &self.tokens {
            if same(known.as_bytes(), token.as_bytes()) {
                found = Some(grant);
            }
        }
        if let Some(grant) = found {
            return Ok(grant.clone());
        }
        let Some((key, validation)) = &self.jwt else {
            return Err(ApiError::unauthorized("the bearer token is not known"));
        };
        if token.split('.').count() != 3 {
            return Err(ApiError::unauthorized("the bearer token is not known"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "it has expired",
                ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
                ErrorKind::InvalidSignature => "its signature does not verify",
                ErrorKind::InvalidAlgorithm => "it is signed with another algorithm",
                ErrorKind::MissingRequiredClaim(_) => "it lacks a required claim (exp, aud or iss)",
                ErrorKind::InvalidAudience => "it was made for another audience (aud)",
                ErrorKind::InvalidIssuer => "it was made by another issuer (iss)",
                _ => "it is malformed",
            };
            ApiError::unauthorized(format!("the bearer JWT was refused: {why}"))
        })?;
        let claims = data.claims;
        let words: Vec<String> = match (claims.scopes, claims.scope) {
            (Some(scopes), _) => scopes,
            (None, Some(scope)) => scope.split_whitespace().map(str::to_owned).collect(),
            (None, None) => Vec::new(),
        };
        let scopes = words.iter().filter_map(|w| Scope::parse(w)).collect();
        Ok(Grant {
            name: claims.sub.unwrap_or_else(|| "jwt".to_owned()),
            scopes,
            namespaces: claims.namespaces,
            queues: claims.queues,
        })
    }
}

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

/// Compares two byte strings in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
