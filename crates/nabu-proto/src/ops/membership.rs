//! Membership ops: MEMBERS_GET (the member list a node is on) and MEMBERS_PUT (offer a newer
//! one).
//!
//! A member list is versioned by its **ring epoch**: a node applies a list only if its epoch is
//! higher than the node's own, keeps it durably, and answers with the epoch it is on, so a
//! list pushed twice, or late, changes nothing. The list travels in the body as `count`
//! entries (see [`MemberEntry`]).

use std::net::SocketAddr;

use nabu_core::ring::NodeId;

use super::impl_meta;
use crate::error::ProtoError;
use crate::wire::{Reader, Writer};

/// The most members one list holds.
pub const MEMBERS_MAX: u32 = 16_384;
/// The longest zone name.
pub const ZONE_BYTES_MAX: usize = 255;
/// The longest address text (`[v6 address]:port`).
const ADDR_BYTES_MAX: usize = 64;

fn invalid(field: &'static str, reason: &'static str) -> ProtoError {
    ProtoError::InvalidField { field, reason }
}

/// One member of a list.
///
/// Body layout per entry: `id u32`, `weight u32`, `zone str16`, then the data, peer and HTTP
/// addresses, each as `str16` text (`127.0.0.1:7400`, `[::1]:7400`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberEntry {
    /// The node's id.
    pub id: NodeId,
    /// Ring weight (0: draining, owns no virtual nodes).
    pub weight: u32,
    /// Failure domain.
    pub zone: String,
    /// Client data plane.
    pub data_addr: SocketAddr,
    /// Peer plane.
    pub peer_addr: SocketAddr,
    /// Management HTTP plane.
    pub http_addr: SocketAddr,
}

/// Encodes a member list as a body.
pub fn encode_members(members: &[MemberEntry]) -> Result<Vec<u8>, ProtoError> {
    if members.len() > MEMBERS_MAX as usize {
        return Err(invalid("members", "a list holds at most 16384 members"));
    }
    let mut out = Vec::new();
    let mut writer = Writer::new(&mut out);
    for member in members {
        writer.u32(member.id.0);
        writer.u32(member.weight);
        writer.str16("zone", &member.zone, ZONE_BYTES_MAX)?;
        for addr in [member.data_addr, member.peer_addr, member.http_addr] {
            writer.str16("addr", &addr.to_string(), ADDR_BYTES_MAX)?;
        }
    }
    Ok(out)
}

/// Decodes exactly `count` members from `body`.
pub fn decode_members(body: &[u8], count: u32) -> Result<Vec<MemberEntry>, ProtoError> {
    if count > MEMBERS_MAX {
        return Err(invalid("members", "a list holds at most 16384 members"));
    }
    let mut reader = Reader::new(body);
    let mut members = Vec::with_capacity((count as usize).min(body.len() / 16));
    for _ in 0..count {
        let id = NodeId(reader.u32("id")?);
        let weight = reader.u32("weight")?;
        let zone = reader.str16("zone", ZONE_BYTES_MAX)?.to_owned();
        let mut addr = || -> Result<SocketAddr, ProtoError> {
            reader
                .str16("addr", ADDR_BYTES_MAX)?
                .parse()
                .map_err(|_| invalid("addr", "an address is ip:port"))
        };
        let (data_addr, peer_addr, http_addr) = (addr()?, addr()?, addr()?);
        members.push(MemberEntry {
            id,
            weight,
            zone,
            data_addr,
            peer_addr,
            http_addr,
        });
    }
    reader.finish()?;
    Ok(members)
}

/// MEMBERS_GET request: empty metadata, no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MembersGet;

impl MembersGet {
    fn encode_fields(&self, _writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        Ok(())
    }

    fn decode_fields(_reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self)
    }
}
impl_meta!(MembersGet, MembersGet, Request);

/// A member list's header: MEMBERS_GET response and MEMBERS_PUT request.
///
/// Layout (16 bytes): `epoch u64`, `members u32`, `body_bytes u32`; the body holds the
/// members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberListHeader {
    /// The list's ring epoch (at least 1).
    pub epoch: u64,
    /// How many members the body holds.
    pub members: u32,
    /// The body's length.
    pub body_bytes: u32,
}

impl MemberListHeader {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        self.check()?;
        writer.u64(self.epoch);
        writer.u32(self.members);
        writer.u32(self.body_bytes);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let header = Self {
            epoch: reader.u64("epoch")?,
            members: reader.u32("members")?,
            body_bytes: reader.u32("body_bytes")?,
        };
        header.check()?;
        Ok(header)
    }

    fn check(&self) -> Result<(), ProtoError> {
        if self.epoch == 0 {
            return Err(invalid("epoch", "ring epochs start at 1"));
        }
        if self.members == 0 || self.members > MEMBERS_MAX {
            return Err(invalid("members", "a list holds 1..=16384 members"));
        }
        Ok(())
    }
}

/// MEMBERS_GET response: the node's member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembersGetReply(pub MemberListHeader);

impl MembersGetReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        self.0.encode_fields(writer)
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        MemberListHeader::decode_fields(reader).map(Self)
    }
}
impl_meta!(
    MembersGetReply,
    MembersGet,
    Response,
    body = |reply| u64::from(reply.0.body_bytes)
);

/// MEMBERS_PUT request: a member list for the node to apply if it is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembersPut(pub MemberListHeader);

impl MembersPut {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        self.0.encode_fields(writer)
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        MemberListHeader::decode_fields(reader).map(Self)
    }
}
impl_meta!(
    MembersPut,
    MembersPut,
    Request,
    body = |put| u64::from(put.0.body_bytes)
);

/// MEMBERS_PUT response.
///
/// Layout (9 bytes): `applied u8` (1: the list was newer and is now the node's), `epoch u64`
/// (the epoch the node is on after the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembersPutReply {
    /// Whether the node took the list.
    pub applied: bool,
    /// The node's epoch after the request.
    pub epoch: u64,
}

impl MembersPutReply {
    fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), ProtoError> {
        writer.bool(self.applied);
        writer.u64(self.epoch);
        Ok(())
    }

    fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(Self {
            applied: reader.bool("applied")?,
            epoch: reader.u64("epoch")?,
        })
    }
}
impl_meta!(MembersPutReply, MembersPut, Response);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Meta;

    #[test]
    fn member_lists_round_trip_and_bad_ones_are_refused() {
        let members = vec![
            MemberEntry {
                id: NodeId(7),
                weight: 2,
                zone: "rack-a".into(),
                data_addr: "127.0.0.1:7406".parse().unwrap(),
                peer_addr: "[::1]:7506".parse().unwrap(),
                http_addr: "10.0.0.7:7606".parse().unwrap(),
            };
            3
        ];
        let body = encode_members(&members).unwrap();
        assert_eq!(decode_members(&body, 3).unwrap(), members);
        assert!(decode_members(&body, 2).is_err(), "trailing bytes");
        assert!(decode_members(&body, 4).is_err(), "missing member");
        let header = MemberListHeader {
            epoch: 9,
            members: 3,
            body_bytes: body.len() as u32,
        };
        let put = MembersPut(header);
        assert_eq!(MembersPut::decode(&put.to_vec().unwrap()).unwrap(), put);
        assert_eq!(put.body_bytes(), body.len() as u64);
        let zero = MemberListHeader { epoch: 0, ..header };
        assert!(MembersPut(zero).to_vec().is_err());
        let reply = MembersPutReply {
            applied: true,
            epoch: 9,
        };
        assert_eq!(
            MembersPutReply::decode(&reply.to_vec().unwrap()).unwrap(),
            reply
        );
    }
}
