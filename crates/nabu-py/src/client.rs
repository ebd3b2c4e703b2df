//! `Client`, `Object` and `ObjectInfo`: each method converts its arguments, releases the GIL,
//! runs one `nabu-client` call (or a bounded batch of them) on the module's runtime and
//! converts the result back.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use nabu_client::cluster_file::{cluster_map, default_cluster};
use nabu_client::{Client, ClientConfig, ClientError, KvItem, OpenObject, PutOptions};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffers::{Buffer, check_disjoint};
use crate::errors::{invalid_argument, to_py};

/// Calls of one batch (`put_many`, `get_many_into`, `get_ranges`, `stat_many`,
/// `delete_many`) in flight at once; each object's stripes are read or written in parallel
/// besides (`stripes_inflight`).
const BATCH_CALLS_INFLIGHT_MAX: usize = 16;
/// Keys asked per listing page.
const LIST_PAGE_KEYS: u32 = 1000;

/// The module's runtime: started on first use, lives as long as the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("nabustore")
            .build()
            .expect("start the nabustore runtime")
    })
}

/// Runs `future` on the runtime with the GIL released; its error as a Python exception.
fn block_on<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = Result<T, ClientError>> + Send,
{
    py.detach(|| runtime().block_on(future))
        .map_err(|error| to_py(py, &error))
}

/// Runs `call` on every item, at most [`BATCH_CALLS_INFLIGHT_MAX`] at once; the results in
/// order of `items`, or the first error.
async fn batch<I, T, F, Fut>(items: Vec<I>, call: F) -> Result<Vec<T>, ClientError>
where
    F: FnMut(I) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    stream::iter(items)
        .map(call)
        .buffered(BATCH_CALLS_INFLIGHT_MAX)
        .try_collect()
        .await
}

/// A key as Python gives it: `str` (UTF-8) or `bytes`.
#[derive(Debug, FromPyObject)]
enum Key {
    Text(String),
    Raw(Vec<u8>),
}

impl Key {
    fn into_bytes(self) -> Vec<u8> {
        match self {
            Key::Text(text) => text.into_bytes(),
            Key::Raw(bytes) => bytes,
        }
    }
}

fn keys(keys: Vec<Key>) -> Vec<Vec<u8>> {
    keys.into_iter().map(Key::into_bytes).collect()
}

/// What the cluster says about one object.
#[pyclass(frozen, get_all, module = "nabustore._native")]
#[derive(Debug, Clone)]
pub(crate) struct ObjectInfo {
    /// The key (UTF-8; other bytes replaced).
    key: String,
    /// Its length in bytes.
    size: u64,
    /// BLAKE3 of its bytes (64 hex digits, as `b3sum` prints).
    blob_id: String,
    /// The HLC timestamp of the put that wrote it.
    hlc_timestamp: u64,
    /// When it was written, in seconds since the Unix epoch.
    modified: f64,
    /// User metadata stored with it.
    metadata: BTreeMap<String, String>,
}

#[pymethods]
impl ObjectInfo {
    fn __repr__(&self) -> String {
        format!(
            "ObjectInfo(key={:?}, size={}, blob_id={:?})",
            self.key, self.size, self.blob_id
        )
    }
}

impl ObjectInfo {
    fn new(key: &[u8], info: nabu_client::ObjectInfo) -> Self {
        let physical_ms = nabu_client::hlc::physical_ms(info.hlc_timestamp);
        Self {
            key: String::from_utf8_lossy(key).into_owned(),
            size: info.size,
            blob_id: info.blob_id.to_string(),
            hlc_timestamp: info.hlc_timestamp,
            modified: physical_ms as f64 / 1000.0,
            metadata: info.metadata,
        }
    }

    fn of_put(key: &[u8], receipt: &nabu_client::PutReceipt, metadata: PutOptions) -> Self {
        Self::new(
            key,
            nabu_client::ObjectInfo {
                blob_id: receipt.blob_id,
                size: receipt.size,
                hlc_timestamp: receipt.hlc_timestamp,
                metadata: metadata.metadata,
            },
        )
    }
}

/// One version of an object, opened for reading: every read sees the same bytes, whatever
/// later puts do.
#[pyclass(frozen, module = "nabustore._native", name = "Object")]
#[derive(Debug)]
pub(crate) struct PyObject {
    object: OpenObject,
    key: Vec<u8>,
}

#[pymethods]
impl PyObject {
    /// The object's length in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.object.info.size
    }

    /// The version's description.
    #[getter]
    fn info(&self) -> ObjectInfo {
        ObjectInfo::new(&self.key, self.object.info.clone())
    }

    /// Reads from `offset` into `buffer` (as much as fits, or to the end): the bytes
    /// written.
    fn read_into(&self, py: Python<'_>, offset: u64, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let buffer = Buffer::writable(buffer)?;
        // SAFETY: the only slice of this buffer, dropped before `buffer`.
        let slice = unsafe { buffer.as_mut_slice() };
        block_on(py, self.object.read_into(offset, slice))
    }

    /// Up to `length` bytes from `offset`.
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        length: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let size = self.object.info.size;
        let length = length.min(size.saturating_sub(offset)) as usize;
        if offset > size {
            return Err(invalid_argument(format!(
                "offset {offset} lies past the end of an object of {size} bytes"
            )));
        }
        PyBytes::new_with(py, length, |slice| {
            block_on(py, self.object.read_into(offset, slice)).map(drop)
        })
    }
}

/// A NabuStore client for one namespace (cheap to clone with `with_namespace`: clients
/// share connections).
#[pyclass(frozen, module = "nabustore._native", name = "Client")]
#[derive(Debug)]
pub(crate) struct PyClient {
    client: Client,
    namespace: String,
    cluster: String,
}

#[pymethods]
impl PyClient {
    /// A client of `cluster`: a `cluster.toml` path or a node's management address
    /// (`host:port`, token from `$NABU_CLUSTER_TOKEN`); default `$NABU_CLUSTER`, else
    /// `./nabu-data/cluster.toml`, as the `nabu` commands. `tcp` avoids the nodes' Unix
    /// sockets; `stripes_inflight` bounds each call's parallel stripe reads and writes.
    #[new]
    #[pyo3(signature = (cluster=None, namespace="default", *, tcp=false, stripes_inflight=8))]
    fn new(
        py: Python<'_>,
        cluster: Option<String>,
        namespace: &str,
        tcp: bool,
        stripes_inflight: usize,
    ) -> PyResult<Self> {
        let cluster = cluster.unwrap_or_else(default_cluster);
        let config = ClientConfig {
            stripes_inflight_max: stripes_inflight,
            client_name: concat!("nabustore-python/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..ClientConfig::default()
        };
        let client = block_on(py, async {
            let map = cluster_map(&cluster, tcp).await?;
            let client = Client::new(map, config)?;
            // The file's member list serves if no node answers (calls then say what fails).
            let _ = client.refresh_members().await;
            Ok(client)
        })?;
        Ok(Self {
            client,
            namespace: namespace.to_owned(),
            cluster,
        })
    }

    /// The namespace this client reads and writes.
    #[getter]
    fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The cluster it was given.
    #[getter]
    fn cluster(&self) -> &str {
        &self.cluster
    }

    /// A client of `namespace` sharing this one's connections.
    fn with_namespace(&self, namespace: &str) -> Self {
        Self {
            client: self.client.clone(),
            namespace: namespace.to_owned(),
            cluster: self.cluster.clone(),
        }
    }

    /// The namespaces of the cluster.
    fn namespaces(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let namespaces = block_on(py, self.client.list_namespaces())?;
        Ok(namespaces.into_iter().map(|info| info.name).collect())
    }

    /// Stores `data` (any C-contiguous buffer, not copied) under `key`, replacing what was
    /// there; visible only once all of it is durable.
    #[pyo3(signature = (key, data, metadata=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: Key,
        data: &Bound<'_, PyAny>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> PyResult<ObjectInfo> {
        let key = key.into_bytes();
        let bytes = Buffer::readable(data)?.into_bytes();
        let options = PutOptions {
            metadata: metadata.unwrap_or_default(),
            ..PutOptions::default()
        };
        let receipt = block_on(
            py,
            self.client
                .put_with(&self.namespace, &key, bytes, options.clone()),
        )?;
        Ok(ObjectInfo::of_put(&key, &receipt, options))
    }

    /// Stores every `(key, data)` pair, several at once; the puts are independent (each
    /// visible once durable), in order of `items`.
    fn put_many(
        &self,
        py: Python<'_>,
        items: Vec<(Key, Bound<'_, PyAny>)>,
    ) -> PyResult<Vec<ObjectInfo>> {
        let items: Vec<(Vec<u8>, bytes::Bytes)> = items
            .into_iter()
            .map(|(key, data)| Ok((key.into_bytes(), Buffer::readable(&data)?.into_bytes())))
            .collect::<PyResult<_>>()?;
        let keys: Vec<Vec<u8>> = items.iter().map(|(key, _)| key.clone()).collect();
        let receipts = block_on(
            py,
            batch(items, |(key, bytes)| {
                let (client, namespace) = self.owned();
                async move { client.put(&namespace, &key, bytes).await }
            }),
        )?;
        Ok(keys
            .iter()
            .zip(&receipts)
            .map(|(key, receipt)| ObjectInfo::of_put(key, receipt, PutOptions::default()))
            .collect())
    }

    /// The whole object under `key`, read straight into the returned `bytes`.
    fn get<'py>(&self, py: Python<'py>, key: Key) -> PyResult<Bound<'py, PyBytes>> {
        let key = key.into_bytes();
        let object = block_on(py, self.client.open(&self.namespace, &key))?;
        let size = object.info.size as usize;
        PyBytes::new_with(py, size, |slice| {
            block_on(py, object.read_into(0, slice)).map(drop)
        })
    }

    /// Bytes `start..end` of the object under `key` (`end` clamped to its size).
    fn get_range<'py>(
        &self,
        py: Python<'py>,
        key: Key,
        start: u64,
        end: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let key = key.into_bytes();
        let object = block_on(py, self.client.open(&self.namespace, &key))?;
        PyObject { object, key }.read(py, start, end.saturating_sub(start))
    }

    /// Reads the object under `key`, from byte `offset` on, into `buffer` (as much as fits,
    /// or to the object's end): no copy but the one from the network into `buffer`. Returns
    /// the bytes written.
    #[pyo3(signature = (key, buffer, offset=0))]
    fn get_into(
        &self,
        py: Python<'_>,
        key: Key,
        buffer: &Bound<'_, PyAny>,
        offset: u64,
    ) -> PyResult<usize> {
        let key = key.into_bytes();
        let buffer = Buffer::writable(buffer)?;
        // SAFETY: the only slice of this buffer, dropped before `buffer`.
        let slice = unsafe { buffer.as_mut_slice() };
        block_on(
            py,
            self.client
                .get_range_into(&self.namespace, &key, offset, slice),
        )
    }

    /// Reads object `keys[i]` into `buffers[i]` (as [`PyClient::get_into`] at offset 0),
    /// several at once; the bytes written into each.
    fn get_many_into(
        &self,
        py: Python<'_>,
        keys: Vec<Key>,
        buffers: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<Vec<usize>> {
        let (keys, buffers) = paired(keys, buffers)?;
        // SAFETY: the buffers are disjoint (checked), each slice the only one of its buffer,
        // all dropped before `buffers`.
        let slices: Vec<&mut [u8]> = buffers
            .iter()
            .map(|buffer| unsafe { buffer.as_mut_slice() })
            .collect();
        let items: Vec<(Vec<u8>, &mut [u8])> = keys.into_iter().zip(slices).collect();
        block_on(
            py,
            batch(items, |(key, slice)| {
                let (client, namespace) = self.owned();
                async move { client.get_range_into(&namespace, &key, 0, slice).await }
            }),
        )
    }

    /// Bytes `starts[i]..ends[i]` of each object `keys[i]`, several at once.
    fn get_ranges<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<Key>,
        starts: Vec<u64>,
        ends: Vec<u64>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        if keys.len() != starts.len() || keys.len() != ends.len() {
            return Err(invalid_argument(
                "keys, starts and ends must be equally long",
            ));
        }
        let items: Vec<(Vec<u8>, u64, u64)> = self::keys(keys)
            .into_iter()
            .zip(starts.into_iter().zip(ends))
            .map(|(key, (start, end))| (key, start, end.max(start)))
            .collect();
        let parts = block_on(
            py,
            batch(items, |(key, start, end)| {
                let (client, namespace) = self.owned();
                async move { client.get_range(&namespace, &key, start..end).await }
            }),
        )?;
        Ok(parts.iter().map(|part| PyBytes::new(py, part)).collect())
    }

    /// Opens the object under `key`: its current version, for any number of reads.
    fn open(&self, py: Python<'_>, key: Key) -> PyResult<PyObject> {
        let key = key.into_bytes();
        let object = block_on(py, self.client.open(&self.namespace, &key))?;
        Ok(PyObject { object, key })
    }

    /// The description of the object under `key`.
    fn stat(&self, py: Python<'_>, key: Key) -> PyResult<ObjectInfo> {
        let key = key.into_bytes();
        let info = block_on(py, self.client.stat(&self.namespace, &key))?;
        Ok(ObjectInfo::new(&key, info))
    }

    /// The description of each of `keys`, several at once; `None` for a missing key.
    fn stat_many(&self, py: Python<'_>, keys: Vec<Key>) -> PyResult<Vec<Option<ObjectInfo>>> {
        let keys = self::keys(keys);
        block_on(
            py,
            batch(keys, |key| {
                let (client, namespace) = self.owned();
                async move {
                    match client.stat(&namespace, &key).await {
                        Ok(info) => Ok(Some(ObjectInfo::new(&key, info))),
                        Err(ClientError::NotFound(_)) => Ok(None),
                        Err(error) => Err(error),
                    }
                }
            }),
        )
    }

    /// Every key starting with `prefix`, in byte order.
    #[pyo3(signature = (prefix=None))]
    fn ls(&self, py: Python<'_>, prefix: Option<Key>) -> PyResult<Vec<String>> {
        let prefix = prefix.map(Key::into_bytes).unwrap_or_default();
        let keys = block_on(py, async {
            let mut keys = Vec::new();
            let mut continuation: Option<Vec<u8>> = None;
            loop {
                let page = self
                    .client
                    .list(
                        &self.namespace,
                        &prefix,
                        continuation.as_deref(),
                        LIST_PAGE_KEYS,
                    )
                    .await?;
                keys.extend(page.keys.into_iter().map(|listed| listed.key));
                match page.continuation {
                    Some(next) => continuation = Some(next),
                    None => return Ok(keys),
                }
            }
        })?;
        Ok(keys
            .iter()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect())
    }

    /// Deletes `key` (deleting a missing key succeeds).
    fn delete(&self, py: Python<'_>, key: Key) -> PyResult<()> {
        let key = key.into_bytes();
        block_on(py, self.client.delete(&self.namespace, &key))
    }

    /// Deletes every one of `keys`, several at once.
    fn delete_many(&self, py: Python<'_>, keys: Vec<Key>) -> PyResult<()> {
        let keys = self::keys(keys);
        block_on(
            py,
            batch(keys, |key| {
                let (client, namespace) = self.owned();
                async move { client.delete(&namespace, &key).await }
            }),
        )
        .map(drop)
    }

    /// Stores under `destination` what `source` holds, without moving bytes.
    fn copy(&self, py: Python<'_>, source: Key, destination: Key) -> PyResult<ObjectInfo> {
        let (source, destination) = (source.into_bytes(), destination.into_bytes());
        let receipt = block_on(py, self.client.copy(&self.namespace, &source, &destination))?;
        let info = block_on(py, self.client.stat(&self.namespace, &destination))?;
        debug_assert_eq!(info.blob_id, receipt.blob_id);
        Ok(ObjectInfo::new(&destination, info))
    }

    /// Renames `source` to `destination` without moving bytes (a new key record for the
    /// same blob, then a tombstone for `source`).
    fn rename(&self, py: Python<'_>, source: Key, destination: Key) -> PyResult<()> {
        let (source, destination) = (source.into_bytes(), destination.into_bytes());
        block_on(
            py,
            self.client.rename(&self.namespace, &source, &destination),
        )
        .map(drop)
    }

    /// Puts KV-cache values (`(key, buffer)` pairs) into the nodes' memory pools, each on
    /// its owner, owners in parallel. `ttl_ms` 0 keeps them until evicted; `pin` keeps them
    /// from eviction. Returns, per item, whether it was stored.
    #[pyo3(signature = (items, *, ttl_ms=0, pin=false, namespace="kv"))]
    fn kv_put_many(
        &self,
        py: Python<'_>,
        items: Vec<(Key, Bound<'_, PyAny>)>,
        ttl_ms: u64,
        pin: bool,
        namespace: &str,
    ) -> PyResult<Vec<bool>> {
        let items: Vec<KvItem> = items
            .into_iter()
            .map(|(key, value)| {
                let mut item =
                    KvItem::new(key.into_bytes(), Buffer::readable(&value)?.into_bytes());
                item.ttl_ms = ttl_ms;
                item.pin = pin;
                Ok(item)
            })
            .collect::<PyResult<_>>()?;
        let outcomes = block_on(py, self.client.kv_put(namespace, items))?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome == nabu_proto::ops::KvPutOutcome::Stored)
            .collect())
    }

    /// Reads KV-cache values `keys[i]` into `buffers[i]`, owners in parallel: per key the
    /// bytes written, or `None` for a miss. A value longer than its buffer is an error.
    #[pyo3(signature = (keys, buffers, *, namespace="kv"))]
    fn kv_get_many(
        &self,
        py: Python<'_>,
        keys: Vec<Key>,
        buffers: Vec<Bound<'_, PyAny>>,
        namespace: &str,
    ) -> PyResult<Vec<Option<usize>>> {
        let (keys, buffers) = paired(keys, buffers)?;
        let values = block_on(py, self.client.kv_get(namespace, &keys))?;
        let mut written = Vec::with_capacity(values.len());
        for ((key, value), buffer) in keys.iter().zip(&values).zip(&buffers) {
            let Some(value) = value else {
                written.push(None);
                continue;
            };
            if value.len() > buffer.len() {
                return Err(invalid_argument(format!(
                    "the value of {} is {} bytes, its buffer {}",
                    String::from_utf8_lossy(key),
                    value.len(),
                    buffer.len()
                )));
            }
            // SAFETY: the buffers are disjoint (checked); this is the only slice of this
            // one, dropped at the end of the statement.
            let slice = unsafe { buffer.as_mut_slice() };
            slice[..value.len()].copy_from_slice(value);
            written.push(Some(value.len()));
        }
        Ok(written)
    }

    /// The length of the longest prefix of `keys` whose values are all cached, those
    /// values leased (kept from eviction) for `lease_ms`: one round trip.
    #[pyo3(signature = (keys, lease_ms=0, *, namespace="kv"))]
    fn kv_prefix_lookup(
        &self,
        py: Python<'_>,
        keys: Vec<Key>,
        lease_ms: u64,
        namespace: &str,
    ) -> PyResult<usize> {
        let keys = self::keys(keys);
        block_on(py, self.client.kv_prefix_lookup(namespace, &keys, lease_ms))
    }

    /// Deletes KV-cache values: how many were held.
    #[pyo3(signature = (keys, *, namespace="kv"))]
    fn kv_delete_many(&self, py: Python<'_>, keys: Vec<Key>, namespace: &str) -> PyResult<u64> {
        let keys = self::keys(keys);
        block_on(py, self.client.kv_delete(namespace, &keys))
    }

    fn __repr__(&self) -> String {
        format!(
            "Client(cluster={:?}, namespace={:?})",
            self.cluster, self.namespace
        )
    }
}

impl PyClient {
    /// The client and namespace, owned (for a call's future that must not borrow).
    fn owned(&self) -> (Client, String) {
        (self.client.clone(), self.namespace.clone())
    }
}

/// Keys and writable, disjoint buffers of equal count.
fn paired(keys: Vec<Key>, buffers: Vec<Bound<'_, PyAny>>) -> PyResult<(Vec<Vec<u8>>, Vec<Buffer>)> {
    if keys.len() != buffers.len() {
        return Err(invalid_argument(format!(
            "{} keys but {} buffers",
            keys.len(),
            buffers.len()
        )));
    }
    let buffers: Vec<Buffer> = buffers
        .into_iter()
        .map(|buffer| Buffer::writable(&buffer))
        .collect::<PyResult<_>>()?;
    check_disjoint(&buffers)?;
    Ok((self::keys(keys), buffers))
}
