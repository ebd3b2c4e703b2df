//! S3 access keys: cluster metadata in the `_system` namespace, so every node's gateway
//! verifies the same keys and many can be live at once.
//!
//! A key is stored under `s3/access-key/<access key id>` as JSON
//! (`{"secret_key": "…", "created_ms": …}`). SigV4 is an HMAC keyed by the secret, so the
//! gateway needs the secret itself, not a hash of it; the `_system` namespace is reached only
//! with the cluster token. `nabu key create|list|delete` manage keys; `nabu up` creates one
//! for development.
//!
//! Gateways cache a looked-up secret for [`SECRET_CACHE_TTL`], so a deleted key stops working
//! everywhere within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nabu_client::{Client, ClientError};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use serde::{Deserialize, Serialize};

/// The `_system` key prefix of access keys.
pub const ACCESS_KEY_PREFIX: &str = "s3/access-key/";
/// How long a gateway trusts a secret it looked up.
pub const SECRET_CACHE_TTL: Duration = Duration::from_secs(5);
/// Secrets cached at most (the cache is emptied when full).
const SECRET_CACHE_ENTRIES_MAX: usize = 4096;
/// The longest access key id accepted.
const ACCESS_KEY_ID_BYTES_MAX: usize = 128;

/// One access key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The public id (`AWS_ACCESS_KEY_ID`): `NABU` and 16 base-32 characters.
    pub access_key_id: String,
    /// The secret (`AWS_SECRET_ACCESS_KEY`): 40 hex digits.
    pub secret_key: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// The stored form of a key.
#[derive(Debug, Serialize, Deserialize)]
struct StoredKey {
    secret_key: String,
    created_ms: u64,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The cluster could not be reached or refused the operation.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A stored key is not valid JSON of the expected shape.
    #[error("access key {access_key_id} is stored malformed: {detail}")]
    Malformed {
        /// Its id.
        access_key_id: String,
        /// The parser's message.
        detail: String,
    },
    /// The operating system gave no random bytes.
    #[error("generate a key: {0}")]
    Random(String),
}

fn storage_key(access_key_id: &str) -> Vec<u8> {
    format!("{ACCESS_KEY_PREFIX}{access_key_id}").into_bytes()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| KeyError::Random(error.to_string()))?;
    Ok(bytes)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Creates a new access key and stores it (durable on the cluster when this returns).
pub async fn create_access_key(client: &Client) -> Result<AccessKey, KeyError> {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id_bytes = random_bytes::<16>()?;
    let suffix: String = id_bytes
        .iter()
        .map(|byte| char::from(BASE32[usize::from(byte % 32)]))
        .collect();
    let secret: String = random_bytes::<20>()?
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let key = AccessKey {
        access_key_id: format!("NABU{suffix}"),
        secret_key: secret,
        created_ms: now_ms(),
    };
    let stored = StoredKey {
        secret_key: key.secret_key.clone(),
        created_ms: key.created_ms,
    };
    let value = serde_json::to_vec(&stored).expect("a key serialises");
    client
        .system_put(&storage_key(&key.access_key_id), Bytes::from(value))
        .await?;
    Ok(key)
}

/// Reads one access key; `None` if there is no such key.
pub async fn get_access_key(
    client: &Client,
    access_key_id: &str,
) -> Result<Option<AccessKey>, KeyError> {
    if !valid_access_key_id(access_key_id) {
        return Ok(None);
    }
    let Some(value) = client.system_get(&storage_key(access_key_id)).await? else {
        return Ok(None);
    };
    let stored: StoredKey =
        serde_json::from_slice(&value).map_err(|error| KeyError::Malformed {
            access_key_id: access_key_id.to_owned(),
            detail: error.to_string(),
        })?;
    Ok(Some(AccessKey {
        access_key_id: access_key_id.to_owned(),
        secret_key: stored.secret_key,
        created_ms: stored.created_ms,
    }))
}

/// Every access key, by id.
pub async fn list_access_keys(client: &Client) -> Result<Vec<AccessKey>, KeyError> {
    let prefix = ACCESS_KEY_PREFIX.as_bytes();
    let mut keys = Vec::new();
    let mut continuation: Option<Vec<u8>> = None;
    loop {
        let page = client
            .system_list(prefix, continuation.as_deref(), 1000)
            .await?;
        for listed in &page.keys {
            let Ok(id) = std::str::from_utf8(&listed.key[prefix.len()..]) else {
                continue;
            };
            if let Some(key) = get_access_key(client, id).await? {
                keys.push(key);
            }
        }
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => return Ok(keys),
        }
    }
}

/// Deletes an access key; `false` if there was none.
pub async fn delete_access_key(client: &Client, access_key_id: &str) -> Result<bool, KeyError> {
    if get_access_key(client, access_key_id).await?.is_none() {
        return Ok(false);
    }
    client.system_delete(&storage_key(access_key_id)).await?;
    Ok(true)
}

fn valid_access_key_id(access_key_id: &str) -> bool {
    !access_key_id.is_empty()
        && access_key_id.len() <= ACCESS_KEY_ID_BYTES_MAX
        && access_key_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric())
}

/// The gateway's [`S3Auth`]: secrets looked up in `_system`, cached briefly.
#[derive(Debug)]
pub struct ClusterKeys {
    client: Client,
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

impl ClusterKeys {
    /// Keys of the cluster `client` talks to.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, access_key_id: &str) -> Option<String> {
        let cache = self.cache.lock().expect("key cache lock");
        let (secret, at) = cache.get(access_key_id)?;
        (at.elapsed() < SECRET_CACHE_TTL).then(|| secret.clone())
    }

    fn remember(&self, access_key_id: &str, secret: &str) {
        let mut cache = self.cache.lock().expect("key cache lock");
        if cache.len() >= SECRET_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(
            access_key_id.to_owned(),
            (secret.to_owned(), Instant::now()),
        );
    }
}

#[async_trait::async_trait]
impl S3Auth for ClusterKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if let Some(secret) = self.cached(access_key) {
            return Ok(SecretKey::from(secret));
        }
        match get_access_key(&self.client, access_key).await {
            Ok(Some(key)) => {
                self.remember(access_key, &key.secret_key);
                Ok(SecretKey::from(key.secret_key))
            }
            Ok(None) => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS access key Id you provided does not exist in our records."
            )),
            Err(error) => {
                tracing::warn!(%error, "access key lookup failed");
                Err(s3_error!(ServiceUnavailable, "access keys are unavailable"))
            }
        }
    }
}
