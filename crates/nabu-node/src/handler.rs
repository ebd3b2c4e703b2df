//! What each op does: a complete request (metadata and whole body) in, a reply or a typed
//! error out. No sockets here; the connection task frames the reply
//! ([`reply_frames`]) and sends it.

use std::sync::Arc;

use bytes::Bytes;
use nabu_proto::ops::{
    HintPutReply, MetaDeleteReply, MetaGetReply, MetaListReply, MetaPutReply, NodeStatusReply,
    PingReply, ShardDeleteReply, ShardGetReply, ShardPutReply, ShardStatReply, encode_list_entries,
};
use nabu_proto::ops::{
    MemberListHeader, MembersGetReply, MembersPut, MembersPutReply, decode_members, encode_members,
};
use nabu_proto::ops::{
    MetaNamespacesReply, ShardListReply, SweepRun, decode_sweep_body, encode_namespaces,
    encode_stripe_ids,
};
use nabu_proto::{ErrorCode, ErrorFrame, Flags, Frame, FrameKind, ProtoError, Request, Response};

use crate::config::MembershipKind;
use crate::node::Node;
use crate::records::MetaAddress;

/// A request that failed: the code and message of its ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// The wire code.
    pub code: ErrorCode,
    /// For people; never holds secrets.
    pub message: String,
}

impl OpError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The ERROR frame metadata.
    pub fn frame(&self) -> ErrorFrame {
        ErrorFrame::new(self.code, self.message.clone())
    }
}

impl From<&ProtoError> for OpError {
    fn from(error: &ProtoError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

/// A successful reply: response metadata and body.
#[derive(Debug)]
pub struct Reply {
    /// The response metadata.
    pub meta: Response,
    /// The response body (its length is what `meta` declares).
    pub body: Bytes,
    /// The body's CRC32C when already known (a whole stored shard), so framing the reply
    /// does not read the body again.
    pub body_crc: Option<u32>,
}

impl Reply {
    fn bodiless(meta: Response) -> Self {
        Self {
            meta,
            body: Bytes::new(),
            body_crc: None,
        }
    }
}

/// Runs `request` with its complete `body`, whose CRC32C (already verified frame by frame)
/// is `body_crc`.
pub async fn execute(
    node: &Arc<Node>,
    request: Request,
    body: Bytes,
    body_crc: u32,
) -> Result<Reply, OpError> {
    if crate::kv::ops::is_kv(&request) {
        return crate::kv::ops::execute(node, request, body).await;
    }
    // The data plane admits bodies up to the largest KV value; every other op's body must
    // fit one store record.
    if body.len() as u64 > node.config.request_body_bytes_max {
        return Err(OpError::new(
            ErrorCode::TOO_LARGE,
            format!(
                "a {} body of {} bytes is over request_body_bytes_max ({})",
                request.op(),
                body.len(),
                node.config.request_body_bytes_max
            ),
        ));
    }
    match request {
        Request::Hello(_) => Err(OpError::new(
            ErrorCode::BAD_REQUEST,
            "HELLO was already accepted on this connection",
        )),
        Request::Ping(_) => Ok(Reply::bodiless(Response::Ping(PingReply))),
        Request::NodeStatus(_) => {
            let status: NodeStatusReply = blocking(node, |node| Ok(node.status())).await?;
            Ok(Reply::bodiless(Response::NodeStatus(status)))
        }
        Request::ShardPut(put) => {
            let outcome = blocking(node, move |node| {
                node.shards
                    .put(&put.stripe_id, &put.shard, &body, body_crc, &node.touches)
            })
            .await?;
            Ok(Reply::bodiless(Response::ShardPut(ShardPutReply {
                outcome,
            })))
        }
        Request::ShardGet(get) => {
            // A DRAM-tier hit is served here; anything else may touch the disk.
            let read = match node.shards.get_from_dram(&get.stripe_id, get.range) {
                Some(read) => read?,
                None => {
                    blocking(node, move |node| node.shards.get(&get.stripe_id, get.range)).await?
                }
            };
            let whole = read.offset == 0 && read.body.len() as u64 == read.info.shard_bytes;
            let meta = Response::ShardGet(ShardGetReply {
                shard: read.info,
                offset: read.offset,
                body_bytes: read.body.len() as u64,
            });
            Ok(Reply {
                meta,
                body: read.body,
                body_crc: whole.then_some(read.info.shard_crc),
            })
        }
        Request::ShardDelete(delete) => {
            let existed = blocking(node, move |node| node.shards.delete(&delete.stripe_id)).await?;
            Ok(Reply::bodiless(Response::ShardDelete(ShardDeleteReply {
                existed,
            })))
        }
        Request::ShardStat(stat) => {
            let shard = blocking(node, move |node| node.shards.stat(&stat.stripe_id)).await?;
            Ok(Reply::bodiless(Response::ShardStat(ShardStatReply {
                shard,
            })))
        }
        Request::ShardList(list) => {
            let (ids, more) = blocking(node, move |node| {
                crate::gc::list_shards(node, list.after, list.limit)
            })
            .await?;
            let meta = Response::ShardList(ShardListReply {
                stripes: ids.len() as u32,
                more,
            });
            Ok(Reply {
                meta,
                body: Bytes::from(encode_stripe_ids(&ids)),
                body_crc: None,
            })
        }
        Request::GcSweep(sweep) => {
            let (shards, manifests) =
                decode_sweep_body(&sweep, &body).map_err(|error| OpError::from(&error))?;
            let run = SweepRun {
                grace_ms: sweep.grace_ms,
                run_id: sweep.run_id,
                last: sweep.last,
            };
            let reply = blocking(node, move |node| {
                crate::gc::sweep(node, run, &shards, &manifests)
            })
            .await?;
            Ok(Reply::bodiless(Response::GcSweep(reply)))
        }
        Request::HintPut(put) => {
            let pending = blocking(node, move |node| crate::hints::put_hint(node, &put)).await?;
            Ok(Reply::bodiless(Response::HintPut(HintPutReply {
                hints_pending: u32::try_from(pending).unwrap_or(u32::MAX),
            })))
        }
        Request::MembersGet(_) => {
            let view = node.membership.view();
            let entries = view.entries();
            let body = encode_members(&entries).map_err(|error| OpError::from(&error))?;
            let header = MemberListHeader {
                epoch: view.epoch,
                members: entries.len() as u32,
                body_bytes: body.len() as u32,
            };
            Ok(Reply {
                meta: Response::MembersGet(MembersGetReply(header)),
                body: Bytes::from(body),
                body_crc: None,
            })
        }
        Request::MembersPut(_) if node.config.membership == MembershipKind::Etcd => {
            Err(OpError::new(
                ErrorCode::BAD_REQUEST,
                "this cluster's member list lives in etcd: change it there (`nabu node \
                 add|drain|remove` with the cluster's etcd settings)",
            ))
        }
        Request::MembersPut(MembersPut(header)) => {
            let entries =
                decode_members(&body, header.members).map_err(|error| OpError::from(&error))?;
            let applied = blocking(node, move |node| {
                node.membership
                    .offer(header.epoch, &entries)
                    .map_err(|error| OpError::new(ErrorCode::BAD_REQUEST, format!("{error:#}")))
            })
            .await?;
            Ok(Reply::bodiless(Response::MembersPut(MembersPutReply {
                applied,
                epoch: node.membership.epoch(),
            })))
        }
        other => execute_meta(node, other, body).await,
    }
}

async fn execute_meta(node: &Arc<Node>, request: Request, body: Bytes) -> Result<Reply, OpError> {
    match request {
        Request::MetaPut(put) => {
            let address = MetaAddress::new(put.table, &put.namespace, &put.key);
            let applied = blocking(node, move |node| {
                node.meta
                    .put(address, put.hlc_timestamp, &body, &node.touches)
            })
            .await?;
            Ok(Reply::bodiless(Response::MetaPut(MetaPutReply { applied })))
        }
        Request::MetaGet(get) => {
            let address = MetaAddress::new(get.table, &get.namespace, &get.key);
            let read = blocking(node, move |node| node.meta.get(&address)).await?;
            let meta = Response::MetaGet(MetaGetReply {
                hlc_timestamp: read.entry.hlc_timestamp,
                deleted: read.entry.deleted,
                value_bytes: read.value.len() as u64,
            });
            Ok(Reply {
                meta,
                body: read.value,
                body_crc: None,
            })
        }
        Request::MetaDelete(delete) => {
            let address = MetaAddress::new(delete.table, &delete.namespace, &delete.key);
            let applied = blocking(node, move |node| {
                node.meta.delete(address, delete.hlc_timestamp)
            })
            .await?;
            Ok(Reply::bodiless(Response::MetaDelete(MetaDeleteReply {
                applied,
            })))
        }
        Request::MetaList(list) => {
            let page = node.meta.list(
                list.table,
                &list.namespace,
                &list.prefix,
                &list.continuation,
                list.limit,
                list.include_deleted,
            );
            let body = encode_list_entries(&page.entries).map_err(|error| OpError::from(&error))?;
            let meta = Response::MetaList(MetaListReply {
                entries: page.entries.len() as u32,
                continuation: page.continuation,
                body_bytes: body.len() as u64,
            });
            Ok(Reply {
                meta,
                body: Bytes::from(body),
                body_crc: None,
            })
        }
        Request::MetaNamespaces(list) => {
            let (namespaces, more) = node.meta.namespaces(&list.after, list.limit);
            let body = encode_namespaces(&namespaces).map_err(|error| OpError::from(&error))?;
            let meta = Response::MetaNamespaces(MetaNamespacesReply {
                namespaces: namespaces.len() as u32,
                more,
                body_bytes: body.len() as u64,
            });
            Ok(Reply {
                meta,
                body: Bytes::from(body),
                body_crc: None,
            })
        }
        other => Err(OpError::new(
            ErrorCode::INTERNAL,
            format!("{} reached the metadata handler", other.op()),
        )),
    }
}

/// Runs a store call on the blocking pool (the store's calls block until durable).
async fn blocking<T: Send + 'static>(
    node: &Arc<Node>,
    call: impl FnOnce(&Node) -> Result<T, OpError> + Send + 'static,
) -> Result<T, OpError> {
    let node = Arc::clone(node);
    nabu_client::sim::spawn_blocking(move || call(&node))
        .await
        .map_err(|error| {
            tracing::error!(%error, "a request's store call panicked");
            OpError::new(
                ErrorCode::INTERNAL,
                "the node failed this request; its log says more",
            )
        })?
}

/// The frames of `reply` to `request_id`: the RESPONSE frame with the metadata and the first
/// `frame_body_bytes_max` bytes of the body, then DATA frames for the rest (all but the last
/// with `MORE`). Slicing shares the body's buffer; nothing is copied.
pub fn reply_frames(
    request_id: u64,
    reply: &Reply,
    frame_body_bytes_max: usize,
) -> Result<Vec<Frame>, ProtoError> {
    let op = reply.meta.op();
    let mut meta = Vec::new();
    reply.meta.encode(&mut meta)?;
    let chunk = frame_body_bytes_max.max(1);
    let body = &reply.body;
    let pieces = body.len().div_ceil(chunk).max(1);
    let mut frames = Vec::with_capacity(pieces);
    for piece in 0..pieces {
        let start = piece * chunk;
        let slice = body.slice(start..(start + chunk).min(body.len()));
        let more = piece + 1 < pieces;
        let frame = if piece == 0 {
            let meta = Bytes::from(std::mem::take(&mut meta));
            let (flags, code) = (Flags::more_if(more), op.code());
            match reply.body_crc {
                Some(crc) if pieces == 1 => Frame::with_body_crc(
                    FrameKind::Response,
                    code,
                    request_id,
                    flags,
                    meta,
                    slice,
                    crc,
                )?,
                _ => Frame::new(FrameKind::Response, code, request_id, flags, meta, slice)?,
            }
        } else {
            Frame::data(op, request_id, slice, more)?
        };
        frames.push(frame);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_into_data_frames() {
        let reply = Reply {
            meta: Response::MetaGet(MetaGetReply {
                hlc_timestamp: 1,
                deleted: false,
                value_bytes: 10,
            }),
            body: Bytes::from_static(b"0123456789"),
            body_crc: Some(nabu_core::checksum::crc32c(b"0123456789")),
        };
        let frames = reply_frames(7, &reply, 4).unwrap();
        let bodies: Vec<&[u8]> = frames.iter().map(|f| &f.body()[..]).collect();
        assert_eq!(bodies, [&b"0123"[..], b"4567", b"89"]);
        assert_eq!(frames[0].header().kind(), FrameKind::Response);
        assert!(frames[0].header().more() && frames[1].header().more());
        assert!(!frames[2].header().more());
        assert_eq!(frames[2].header().kind(), FrameKind::Data);
        // In one piece, the known checksum goes out as is, and it is the body's.
        let whole = reply_frames(7, &reply, 64).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(
            whole[0].header().body_crc(),
            nabu_core::checksum::crc32c(b"0123456789")
        );
        let empty = Reply::bodiless(Response::Ping(PingReply));
        assert_eq!(reply_frames(1, &empty, 4).unwrap().len(), 1);
    }
}
