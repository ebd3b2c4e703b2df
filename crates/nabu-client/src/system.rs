//! Cluster metadata in the `_system` namespace: small values (namespace records, gateway
//! access keys) that every client and gateway must find, replicated on three nodes like
//! namespace records and read newest-by-HLC.
//!
//! Users cannot write here with `put` (namespaces starting with `_` are reserved); these
//! calls are for the cluster's own tools: `nabu key`, the S3 gateway, bucket management.

use bytes::Bytes;
use nabu_core::policy::Durability;
use nabu_proto::ops::MetaTable;

use crate::client::{
    Client, ListPage, SYSTEM_NAMESPACE, check_key, check_user_namespace, namespace_record_key,
};
use crate::config::builtin_namespaces;
use crate::error::{KeyDisplay, Result};
use crate::format::{NamespaceRecord, key_record_point};

/// A namespace that exists: built in, or created with [`Client::create_namespace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Its durability policy.
    pub durability: Durability,
    /// The HLC timestamp of its record (0 for built-in namespaces).
    pub hlc_timestamp: u64,
}

impl Client {
    /// The `_system` value under `key`, newest by HLC; `None` when absent or deleted.
    pub async fn system_get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        check_key(key)?;
        let what = format!("system value {}", KeyDisplay(key));
        let point = key_record_point(SYSTEM_NAMESPACE, key);
        let stored = self
            .meta_read(
                MetaTable::KeyRecords,
                SYSTEM_NAMESPACE,
                key,
                point,
                self.system_copies(),
                &what,
            )
            .await?;
        Ok(stored
            .filter(|value| !value.deleted)
            .map(|value| value.value))
    }

    /// Writes (or overwrites: last writer wins) the `_system` value under `key`.
    pub async fn system_put(&self, key: &[u8], value: Bytes) -> Result<()> {
        self.system_write(key, Some(value)).await
    }

    /// Deletes the `_system` value under `key` (a tombstone); deleting a missing key succeeds.
    pub async fn system_delete(&self, key: &[u8]) -> Result<()> {
        self.system_write(key, None).await
    }

    async fn system_write(&self, key: &[u8], value: Option<Bytes>) -> Result<()> {
        check_key(key)?;
        let what = format!("system value {}", KeyDisplay(key));
        let point = key_record_point(SYSTEM_NAMESPACE, key);
        let hlc = self.inner.hlc.now();
        self.meta_write(
            MetaTable::KeyRecords,
            SYSTEM_NAMESPACE,
            key,
            point,
            self.system_copies(),
            hlc,
            value,
            &what,
        )
        .await
    }

    /// Lists live `_system` keys starting with `prefix` (see [`Client::list`]).
    pub async fn system_list(
        &self,
        prefix: &[u8],
        continuation: Option<&[u8]>,
        limit: u32,
    ) -> Result<ListPage> {
        let tolerated = self.system_copies().saturating_sub(1);
        self.list_tolerating(SYSTEM_NAMESPACE, tolerated, prefix, continuation, limit)
            .await
    }

    /// Whether `namespace` exists now, asked of the cluster (not this client's cache, which
    /// may hold a namespace another client has since deleted). Built-in namespaces always do.
    pub async fn namespace_exists(&self, namespace: &str) -> Result<bool> {
        crate::client::check_namespace(namespace)?;
        if self
            .builtin_namespaces()
            .iter()
            .any(|(name, _)| name == namespace)
        {
            return Ok(true);
        }
        let value = self.system_get(&namespace_record_key(namespace)).await?;
        if value.is_none() {
            self.forget_namespace(namespace);
        }
        Ok(value.is_some())
    }

    /// Deletes a namespace's record (its keys are the caller's business: delete them first).
    /// Built-in namespaces cannot be deleted.
    pub async fn delete_namespace(&self, namespace: &str) -> Result<()> {
        check_user_namespace(namespace)?;
        if self
            .builtin_namespaces()
            .iter()
            .any(|(name, _)| name == namespace)
        {
            return Err(crate::ClientError::InvalidArgument(format!(
                "namespace {namespace} is built in and cannot be deleted"
            )));
        }
        self.system_delete(&namespace_record_key(namespace)).await?;
        self.forget_namespace(namespace);
        Ok(())
    }

    /// Every namespace: the built-in ones, then those with a record, by name.
    pub async fn list_namespaces(&self) -> Result<Vec<NamespaceInfo>> {
        let mut found: Vec<NamespaceInfo> = self
            .builtin_namespaces()
            .into_iter()
            .map(|(name, durability)| NamespaceInfo {
                name,
                durability,
                hlc_timestamp: 0,
            })
            .collect();
        let prefix = namespace_record_key("");
        let mut continuation: Option<Vec<u8>> = None;
        loop {
            let page = self
                .system_list(&prefix, continuation.as_deref(), 1000)
                .await?;
            for listed in &page.keys {
                let Ok(name) = std::str::from_utf8(&listed.key[prefix.len()..]) else {
                    continue;
                };
                let Some(value) = self.system_get(&listed.key).await? else {
                    continue;
                };
                let Ok(record) = NamespaceRecord::decode(&value) else {
                    tracing::warn!(namespace = name, "namespace record does not decode");
                    continue;
                };
                found.push(NamespaceInfo {
                    name: name.to_owned(),
                    durability: record.durability,
                    hlc_timestamp: listed.hlc_timestamp,
                });
            }
            match page.continuation {
                Some(next) => continuation = Some(next),
                None => break,
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The namespaces that exist without a record (`default`, `kv`), sized to this cluster.
    fn builtin_namespaces(&self) -> Vec<(String, Durability)> {
        builtin_namespaces(self.ring().members().len())
            .into_iter()
            .collect()
    }

    /// Drops `namespace` from this client's policy cache.
    fn forget_namespace(&self, namespace: &str) {
        let configured = self.inner.config.namespaces.contains_key(namespace);
        if !configured {
            let mut cache = self.inner.namespaces.write().expect("namespaces lock");
            cache.remove(namespace);
        }
    }
}
