//! The KV ops of the data plane (`0x05xx`): each runs on this node's own pool, except
//! KV_PREFIX_LOOKUP, which asks every key's owner ([`super::route`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use nabu_proto::ops::{
    KvDeleteReply, KvExistsReply, KvGetEntry, KvGetReply, KvPinReply, KvPrefixLookupReply,
    KvPutReply, KvScanReply, encode_scan_keys,
};
use nabu_proto::{ErrorCode, Request, Response};

use super::{KvError, route};
use crate::handler::{OpError, Reply};
use crate::node::Node;

impl From<KvError> for OpError {
    fn from(error: KvError) -> Self {
        let code = match error {
            KvError::ValueTooLarge { .. } => ErrorCode::TOO_LARGE,
            KvError::PinLimit { .. } => ErrorCode::BAD_REQUEST,
        };
        OpError::new(code, error.to_string())
    }
}

fn bodiless(meta: Response) -> Reply {
    Reply {
        meta,
        body: Bytes::new(),
        body_crc: None,
    }
}

/// Runs one KV op with its complete `body`.
pub async fn execute(node: &Arc<Node>, request: Request, body: Bytes) -> Result<Reply, OpError> {
    let kv = &node.kv;
    match request {
        Request::KvPut(put) => {
            let copy = put.entries.len() > 1;
            let mut offset = 0usize;
            let mut outcomes = Vec::with_capacity(put.entries.len());
            for entry in &put.entries {
                let end = offset.saturating_add(entry.value_bytes as usize);
                if end > body.len() {
                    return Err(OpError::new(
                        ErrorCode::BAD_REQUEST,
                        "KV_PUT values overrun the request body",
                    ));
                }
                let slice = body.slice(offset..end);
                offset = end;
                // One value of a batch would keep the whole batch body alive after its
                // neighbours were evicted: a batch's values get buffers of their own.
                let value = if copy {
                    Bytes::copy_from_slice(&slice)
                } else {
                    slice
                };
                let ttl = (entry.ttl_ms > 0).then(|| Duration::from_millis(entry.ttl_ms));
                outcomes.push(kv.put(
                    &put.namespace,
                    &entry.key,
                    value,
                    ttl,
                    entry.pin,
                    entry.condition,
                )?);
            }
            Ok(bodiless(Response::KvPut(KvPutReply { outcomes })))
        }
        Request::KvGet(get) => {
            let found: Vec<Option<(Bytes, u32)>> = get
                .keys
                .iter()
                .map(|key| kv.get(&get.namespace, key))
                .collect();
            let entries = found
                .iter()
                .map(|value| match value {
                    Some((value, crc32c)) => KvGetEntry {
                        found: true,
                        value_bytes: value.len() as u64,
                        crc32c: *crc32c,
                    },
                    None => KvGetEntry {
                        found: false,
                        value_bytes: 0,
                        crc32c: 0,
                    },
                })
                .collect();
            // One value is the whole body: its stored CRC32C (checked by the pool just now) is
            // the body's, so framing the reply does not read the value again.
            let mut values = found.into_iter().flatten();
            let (body, body_crc) = match (values.next(), values.next()) {
                (None, _) => (Bytes::new(), None),
                (Some((only, crc)), None) => (only, Some(crc)),
                (Some((first, _)), Some((second, _))) => {
                    let mut body = BytesMut::new();
                    body.put_slice(&first);
                    body.put_slice(&second);
                    values.for_each(|(value, _)| body.put_slice(&value));
                    (body.freeze(), None)
                }
            };
            Ok(Reply {
                meta: Response::KvGet(KvGetReply { entries }),
                body,
                body_crc,
            })
        }
        Request::KvDelete(delete) => {
            let deleted = kv.delete(&delete.namespace, &delete.keys);
            Ok(bodiless(Response::KvDelete(KvDeleteReply { deleted })))
        }
        Request::KvExists(exists) => {
            let lease = (exists.lease_ms > 0).then(|| Duration::from_millis(exists.lease_ms));
            let exists = kv.exists(&exists.namespace, &exists.keys, lease);
            Ok(bodiless(Response::KvExists(KvExistsReply { exists })))
        }
        Request::KvPrefixLookup(lookup) => {
            let prefix =
                route::prefix_lookup(node, &lookup.namespace, &lookup.keys, lookup.lease_ms)
                    .await
                    .map_err(|error| OpError::new(ErrorCode::UNAVAILABLE, error.to_string()))?;
            Ok(bodiless(Response::KvPrefixLookup(KvPrefixLookupReply {
                prefix: prefix as u32,
            })))
        }
        Request::KvTtl(ttl) => {
            let reply = kv.ttl(
                &ttl.namespace,
                &ttl.key,
                ttl.action,
                Duration::from_millis(ttl.ttl_ms),
            );
            Ok(bodiless(Response::KvTtl(reply)))
        }
        Request::KvScan(scan) => {
            let (keys, next_cursor, keys_total) = kv.scan(&scan.namespace, scan.cursor, scan.count);
            let body = encode_scan_keys(&keys).map_err(|error| OpError::from(&error))?;
            Ok(Reply {
                meta: Response::KvScan(KvScanReply {
                    next_cursor,
                    keys_total,
                    entries: keys.len() as u32,
                    body_bytes: body.len() as u64,
                }),
                body: Bytes::from(body),
                body_crc: None,
            })
        }
        Request::KvPin(pin) => {
            let changed = kv.pin(&pin.namespace, &pin.keys, pin.pinned)?;
            Ok(bodiless(Response::KvPin(KvPinReply { changed })))
        }
        other => Err(OpError::new(
            ErrorCode::INTERNAL,
            format!("{} reached the KV handler", other.op()),
        )),
    }
}

/// Whether `request` is a KV op.
pub fn is_kv(request: &Request) -> bool {
    request.op().code() >> 8 == 0x05
}
