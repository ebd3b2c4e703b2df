//! A minimal peer-plane client: one authenticated connection, one request at a time.
//!
//! Heartbeats (one PING at a time) and hint replay (a few shard transfers at a time, each on
//! its own connection) need no multiplexing, so this stays small: send a request (its body cut
//! into DATA frames of the peer's `frame_body_bytes_max`), then read frames until the reply
//! and its whole body have arrived.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use nabu_proto::ops::{HelloRequest, Plane};
use nabu_proto::{
    ClusterToken, ErrorFrame, Frame, FrameDecoder, FrameKind, Limits, Meta, Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a peer request failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer answered with an ERROR frame.
    #[error("the peer answered {}: {}", .0.code.name(), .0.message)]
    Remote(ErrorFrame),
    /// The connection or the protocol failed.
    #[error(transparent)]
    Transport(#[from] anyhow::Error),
}

impl From<nabu_proto::ProtoError> for PeerError {
    fn from(error: nabu_proto::ProtoError) -> Self {
        Self::Transport(error.into())
    }
}

impl From<std::io::Error> for PeerError {
    fn from(error: std::io::Error) -> Self {
        Self::Transport(error.into())
    }
}

/// The HELLO client name of node `self_id`'s peer connections: `nabu-node/<id> <purpose>`.
/// The accepting node reads the id back ([`member_of_client_name`]) to count the link's
/// traffic per member.
pub fn client_name(self_id: u32, purpose: &str) -> String {
    format!("nabu-node/{self_id} {purpose}")
}

/// The member id a [`client_name`] names, if it is one.
pub fn member_of_client_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("nabu-node/")?;
    rest.split(' ').next()?.parse().ok()
}

/// One authenticated peer-plane connection.
pub struct PeerConnection {
    stream: Box<dyn nabu_client::sim::Stream>,
    decoder: FrameDecoder,
    buffer: BytesMut,
    next_id: u64,
    frame_body_bytes_max: usize,
    /// The ring epoch the peer said it is on when the connection opened.
    pub ring_epoch: u64,
}

impl PeerConnection {
    /// Connects to `addr` and sends HELLO with `token`; `purpose` names the connection in the
    /// peer's logs. `limits` bound what this side accepts. The reply must come from member
    /// `expected`: a port reused by another node must not receive that member's traffic.
    pub async fn connect(
        addr: SocketAddr,
        expected: u32,
        token: &ClusterToken,
        self_id: u32,
        purpose: &str,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let stream = nabu_client::sim::connect_tcp(addr).await?;
        let mut peer = Self {
            stream,
            decoder: FrameDecoder::new(limits),
            buffer: BytesMut::with_capacity(64 << 10),
            next_id: 1,
            frame_body_bytes_max: 64 << 10,
            ring_epoch: 0,
        };
        let hello = HelloRequest {
            plane: Plane::Peer,
            features: 0,
            token: token.clone(),
            client_name: client_name(self_id, purpose),
        };
        let (reply, _) = peer.request(&hello, Bytes::new()).await?;
        let Response::Hello(reply) = reply else {
            anyhow::bail!("HELLO answered with {}", reply.op());
        };
        if reply.node_id.0 != expected {
            anyhow::bail!(
                "{addr} is node {} now, not node {expected}; refusing to talk to it as {expected}",
                reply.node_id.0
            );
        }
        peer.frame_body_bytes_max = (reply.frame_body_bytes_max as usize).max(1);
        peer.ring_epoch = reply.ring_epoch;
        Ok(peer)
    }

    /// The next request id.
    pub fn next_request_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends `frame` and returns the next frame received (the reply: one at a time).
    pub async fn call(&mut self, frame: Frame) -> anyhow::Result<Frame> {
        self.stream.write_all(&frame.to_vec()).await?;
        self.next_frame().await
    }

    async fn next_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buffer)? {
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                anyhow::bail!("the peer closed the connection");
            }
        }
    }

    /// Sends a request with `body` and returns the reply's metadata and whole body.
    pub async fn request<M: Meta>(
        &mut self,
        meta: &M,
        body: Bytes,
    ) -> Result<(Response, Bytes), PeerError> {
        let request_id = self.next_request_id();
        let chunk = self.frame_body_bytes_max;
        let pieces = body.len().div_ceil(chunk).max(1);
        for piece in 0..pieces {
            let slice = body.slice(piece * chunk..((piece + 1) * chunk).min(body.len()));
            let more = piece + 1 < pieces;
            let frame = if piece == 0 {
                Frame::from_meta(request_id, meta, slice, more)?
            } else {
                Frame::data(M::OP, request_id, slice, more)?
            };
            self.stream.write_all(&frame.to_vec()).await?;
        }
        let first = self.next_frame().await?;
        if first.header().request_id() != request_id {
            return Err(anyhow::anyhow!("a reply to another request").into());
        }
        match first.header().kind() {
            FrameKind::Response => {}
            FrameKind::Error => return Err(PeerError::Remote(first.decode_error()?)),
            other => return Err(anyhow::anyhow!("a {other:?} frame instead of a reply").into()),
        }
        let reply = Response::decode(first.header().op_code(), first.meta())?;
        let mut more = first.header().more();
        let mut collected = BytesMut::from(&first.body()[..]);
        while more {
            let frame = self.next_frame().await?;
            if frame.header().kind() == FrameKind::Error {
                return Err(PeerError::Remote(frame.decode_error()?));
            }
            if frame.header().kind() != FrameKind::Data || frame.header().request_id() != request_id
            {
                return Err(anyhow::anyhow!("an unexpected frame in a reply body").into());
            }
            more = frame.header().more();
            collected.extend_from_slice(frame.body());
        }
        if collected.len() as u64 != reply.body_bytes() {
            return Err(anyhow::anyhow!("the reply body is not the declared length").into());
        }
        Ok((reply, collected.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_carry_the_member_id() {
        assert_eq!(
            member_of_client_name(&client_name(42, "heartbeat")),
            Some(42)
        );
        assert_eq!(member_of_client_name("nabu-client"), None);
        assert_eq!(member_of_client_name("nabu-node/x repair"), None);
    }
}
