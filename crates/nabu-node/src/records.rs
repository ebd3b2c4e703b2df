//! How shards and metadata values are laid out in the chunk store: keys and record values.
//!
//! One [`nabu_store::Store`] holds both, told apart by the key's first byte:
//!
//! | key | value |
//! |---|---|
//! | `0x01` ‖ stripe id (32) | the shard bytes ‖ a 32-byte shard trailer |
//! | `0x02` ‖ table ‖ namespace length (u8) ‖ namespace ‖ key | a meta record |
//! | `0x03` ‖ BLAKE3(table ‖ namespace length ‖ namespace ‖ key) | a meta record |
//! | `0x04` ‖ stripe id (32) ‖ home node id (u32) | a hint record |
//!
//! **Why a trailer, not a header, for shards.** The store returns a record's payload in a
//! 4 KiB-aligned buffer; with the shard first its bytes stay aligned (DMA-ready) and a reply
//! slices them without a copy.
//!
//! **Why two meta key forms.** A store key has at most 1,024 bytes but a META address
//! (namespace up to 255 bytes, key up to 1,024) can be longer. Addresses that fit are stored
//! in the direct form, so start-up rebuilds the ordered meta index from `Store::keys` alone
//! for them; longer ones are stored under their hash and found by reading the record, which
//! always carries the full address anyway (so every record is self-describing).
//!
//! Shard trailer (32 bytes): shard info as on the wire (24 bytes: codec, K, M, index,
//! `stripe_bytes` u64, `shard_bytes` u64, `shard_crc` u32), 4 zero bytes, magic `NSH1`.
//!
//! Meta record: `format u8` (1), `hlc_timestamp u64`, `deleted u8`, `table u8`,
//! `namespace_len u8`, `namespace`, `key_len u16`, `key`, then the value (empty for a
//! tombstone). Hint record (26 bytes): `format u8` (1), `kind u8` (1 handoff, 2 repair), shard
//! info as on the wire (24 bytes). Integers are little-endian. Both formats are protected by the store's record
//! CRC32C; a record that decodes badly anyway is reported as corrupt.

use nabu_core::id::StripeId;
use nabu_proto::Meta;
use nabu_proto::ops::{HintKind, MetaTable, ShardInfo, ShardStatReply};

/// Key prefix of shard records.
const SHARD_PREFIX: u8 = 0x01;
/// Key prefix of meta records stored under their address.
const META_DIRECT_PREFIX: u8 = 0x02;
/// Key prefix of meta records stored under their address's hash.
const META_HASHED_PREFIX: u8 = 0x03;
/// Key prefix of hint records.
const HINT_PREFIX: u8 = 0x04;
const HINT_FORMAT: u8 = 1;
/// The shard trailer's length.
pub const SHARD_TRAILER_BYTES: usize = 32;
const SHARD_TRAILER_MAGIC: [u8; 4] = *b"NSH1";
const META_FORMAT: u8 = 1;

/// The store key of this node's shard of `stripe_id`.
pub fn shard_key(stripe_id: &StripeId) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = SHARD_PREFIX;
    key[1..].copy_from_slice(stripe_id.as_bytes());
    key
}

/// Whether a store key is a shard's.
pub fn is_shard_key(key: &[u8]) -> bool {
    key.len() == 33 && key[0] == SHARD_PREFIX
}

/// The store key of the hint that `stripe_id`'s shard belongs on node `home`.
pub fn hint_key(stripe_id: &StripeId, home: u32) -> [u8; 37] {
    let mut key = [0u8; 37];
    key[0] = HINT_PREFIX;
    key[1..33].copy_from_slice(stripe_id.as_bytes());
    key[33..].copy_from_slice(&home.to_le_bytes());
    key
}

/// The stripe id and home of a hint key, or `None` if the key is not one.
pub fn parse_hint_key(key: &[u8]) -> Option<(StripeId, u32)> {
    if key.len() != 37 || key[0] != HINT_PREFIX {
        return None;
    }
    let stripe_id = StripeId::from_bytes(key[1..33].try_into().ok()?);
    Some((stripe_id, u32::from_le_bytes(key[33..].try_into().ok()?)))
}

/// The hint record: format, kind, shard info.
pub fn encode_hint(kind: HintKind, info: &ShardInfo) -> Vec<u8> {
    let mut record = vec![HINT_FORMAT, kind as u8];
    ShardStatReply { shard: *info }
        .encode(&mut record)
        .expect("shard info from a decoded request encodes");
    record
}

/// The kind and shard info of a hint record, or `None` if it does not decode.
pub fn decode_hint(record: &[u8]) -> Option<(HintKind, ShardInfo)> {
    let (&[format, kind], info) = record.split_first_chunk::<2>()?;
    let kind = match (format, kind) {
        (HINT_FORMAT, 1) => HintKind::Handoff,
        (HINT_FORMAT, 2) => HintKind::Repair,
        _ => return None,
    };
    Some((kind, ShardStatReply::decode(info).ok()?.shard))
}

/// The shard record: the shard bytes, then the trailer (joined; the node itself hands the
/// two parts to the store separately).
#[cfg(test)]
pub fn encode_shard(info: &ShardInfo, shard: &[u8]) -> Vec<u8> {
    [shard, &shard_trailer(info)].concat()
}

/// The trailer that follows a shard's bytes in its store record (the store writes the two
/// parts into one record without joining them first: see `Store::put_parts`).
pub fn shard_trailer(info: &ShardInfo) -> Vec<u8> {
    let mut trailer = Vec::with_capacity(SHARD_TRAILER_BYTES);
    ShardStatReply { shard: *info }
        .encode(&mut trailer)
        .expect("shard info from a decoded request encodes");
    trailer.extend_from_slice(&[0; 4]);
    trailer.extend_from_slice(&SHARD_TRAILER_MAGIC);
    trailer
}

/// The shard info and the shard's length in a shard record, or `None` if the record is not
/// one (a bug or damage the store's checksum missed: report corrupt).
pub fn decode_shard(record: &[u8]) -> Option<(ShardInfo, usize)> {
    let shard_len = record.len().checked_sub(SHARD_TRAILER_BYTES)?;
    let trailer = &record[shard_len..];
    if trailer[28..] != SHARD_TRAILER_MAGIC || trailer[24..28] != [0; 4] {
        return None;
    }
    let info = ShardStatReply::decode(&trailer[..24]).ok()?.shard;
    (info.shard_bytes == shard_len as u64).then_some((info, shard_len))
}

/// A META address: which table, namespace and key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetaAddress {
    /// The table's wire value (1 key records, 2 manifests).
    pub table: u8,
    /// The namespace (1..=255 bytes of UTF-8).
    pub namespace: String,
    /// The key (1..=1,024 bytes).
    pub key: Vec<u8>,
}

impl MetaAddress {
    /// The address of `key` in `namespace` of `table`.
    pub fn new(table: MetaTable, namespace: &str, key: &[u8]) -> Self {
        Self {
            table: table as u8,
            namespace: namespace.to_owned(),
            key: key.to_vec(),
        }
    }

    fn prefix_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(2 + self.namespace.len() + self.key.len());
        bytes.push(self.table);
        bytes.push(self.namespace.len() as u8);
        bytes.extend_from_slice(self.namespace.as_bytes());
        bytes.extend_from_slice(&self.key);
        bytes
    }

    /// The store key of this address.
    pub fn store_key(&self) -> Vec<u8> {
        let body = self.prefix_bytes();
        if body.len() < nabu_store::KEY_BYTES_MAX {
            let mut key = Vec::with_capacity(1 + body.len());
            key.push(META_DIRECT_PREFIX);
            key.extend_from_slice(&body);
            key
        } else {
            let mut key = Vec::with_capacity(33);
            key.push(META_HASHED_PREFIX);
            key.extend_from_slice(blake3::hash(&body).as_bytes());
            key
        }
    }
}

/// What a store key is, as far as the meta index cares.
#[derive(Debug, PartialEq, Eq)]
pub enum MetaKey {
    /// A direct key: the address is in the key.
    Direct(MetaAddress),
    /// A hashed key: read the record for the address.
    Hashed,
    /// Not a meta key.
    Other,
}

/// Classifies a store key.
pub fn classify_meta_key(key: &[u8]) -> MetaKey {
    match key.first() {
        Some(&META_DIRECT_PREFIX) => {
            parse_direct(&key[1..]).map_or(MetaKey::Other, MetaKey::Direct)
        }
        Some(&META_HASHED_PREFIX) if key.len() == 33 => MetaKey::Hashed,
        _ => MetaKey::Other,
    }
}

fn parse_direct(bytes: &[u8]) -> Option<MetaAddress> {
    let (&table, rest) = bytes.split_first()?;
    let (&namespace_len, rest) = rest.split_first()?;
    let (namespace, key) = rest.split_at_checked(usize::from(namespace_len))?;
    Some(MetaAddress {
        table,
        namespace: String::from_utf8(namespace.to_vec()).ok()?,
        key: key.to_vec(),
    })
}

/// A decoded meta record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRecord {
    /// Its address.
    pub address: MetaAddress,
    /// The writer's HLC timestamp.
    pub hlc_timestamp: u64,
    /// Whether it is a tombstone.
    pub deleted: bool,
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
}

/// Encodes a meta record (see the module docs).
pub fn encode_meta(
    address: &MetaAddress,
    hlc_timestamp: u64,
    deleted: bool,
    value: &[u8],
) -> Vec<u8> {
    let mut record =
        Vec::with_capacity(15 + address.namespace.len() + address.key.len() + value.len());
    record.push(META_FORMAT);
    record.extend_from_slice(&hlc_timestamp.to_le_bytes());
    record.push(u8::from(deleted));
    record.push(address.table);
    record.push(address.namespace.len() as u8);
    record.extend_from_slice(address.namespace.as_bytes());
    record.extend_from_slice(&(address.key.len() as u16).to_le_bytes());
    record.extend_from_slice(&address.key);
    record.extend_from_slice(value);
    record
}

/// Decodes a meta record, or `None` if it is not one (report corrupt).
pub fn decode_meta(record: &[u8]) -> Option<MetaRecord> {
    let (&format, rest) = record.split_first()?;
    let (timestamp, rest) = rest.split_first_chunk::<8>()?;
    let (&deleted, rest) = rest.split_first()?;
    let (&table, rest) = rest.split_first()?;
    let (&namespace_len, rest) = rest.split_first()?;
    let (namespace, rest) = rest.split_at_checked(usize::from(namespace_len))?;
    let (key_len, rest) = rest.split_first_chunk::<2>()?;
    let (key, value) = rest.split_at_checked(usize::from(u16::from_le_bytes(*key_len)))?;
    if format != META_FORMAT || deleted > 1 || (deleted == 1 && !value.is_empty()) {
        return None;
    }
    Some(MetaRecord {
        address: MetaAddress {
            table,
            namespace: String::from_utf8(namespace.to_vec()).ok()?,
            key: key.to_vec(),
        },
        hlc_timestamp: u64::from_le_bytes(*timestamp),
        deleted: deleted == 1,
        value: value.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use nabu_proto::ops::ShardLayout;

    use super::*;

    #[test]
    fn shard_records_round_trip_and_damage_is_refused() {
        let shard = b"shard bytes".to_vec();
        let info = ShardInfo {
            layout: ShardLayout::Whole,
            stripe_bytes: shard.len() as u64,
            shard_bytes: shard.len() as u64,
            shard_crc: nabu_core::checksum::crc32c(&shard),
        };
        let record = encode_shard(&info, &shard);
        assert_eq!(decode_shard(&record), Some((info, shard.len())));
        assert_eq!(&record[..shard.len()], &shard[..]);
        let mut damaged = record.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert_eq!(decode_shard(&damaged), None);
        assert_eq!(decode_shard(&record[1..]), None);
        assert_eq!(decode_shard(b"short"), None);
    }

    #[test]
    fn hint_records_round_trip_and_are_neither_shards_nor_meta() {
        let stripe_id = StripeId::of(b"stripe");
        let key = hint_key(&stripe_id, 0x0102_0304);
        assert_eq!(parse_hint_key(&key), Some((stripe_id, 0x0102_0304)));
        assert!(!is_shard_key(&key));
        assert_eq!(classify_meta_key(&key), MetaKey::Other);
        assert_eq!(parse_hint_key(&shard_key(&stripe_id)), None);
        let info = ShardInfo {
            layout: ShardLayout::Whole,
            stripe_bytes: 5,
            shard_bytes: 5,
            shard_crc: 9,
        };
        for kind in [HintKind::Handoff, HintKind::Repair] {
            let record = encode_hint(kind, &info);
            assert_eq!(record.len(), 26);
            assert_eq!(decode_hint(&record), Some((kind, info)));
        }
        let mut damaged = encode_hint(HintKind::Repair, &info);
        damaged[1] = 3;
        assert_eq!(decode_hint(&damaged), None);
        assert_eq!(decode_hint(&damaged[..1]), None);
    }

    #[test]
    fn meta_keys_are_direct_when_they_fit_and_hashed_otherwise() {
        let short = MetaAddress::new(MetaTable::KeyRecords, "ns", b"key");
        assert_eq!(
            classify_meta_key(&short.store_key()),
            MetaKey::Direct(short)
        );
        let long = MetaAddress::new(MetaTable::Manifests, &"n".repeat(255), &[7; 1024]);
        assert_eq!(long.store_key().len(), 33);
        assert_eq!(classify_meta_key(&long.store_key()), MetaKey::Hashed);
        assert_eq!(
            classify_meta_key(&shard_key(&StripeId::of(b"x"))),
            MetaKey::Other
        );
    }

    #[test]
    fn meta_records_round_trip() {
        let address = MetaAddress::new(MetaTable::KeyRecords, "ns", b"k");
        let record = encode_meta(&address, 42, false, b"value");
        let decoded = decode_meta(&record).unwrap();
        assert_eq!(decoded.address, address);
        assert_eq!((decoded.hlc_timestamp, decoded.deleted), (42, false));
        assert_eq!(decoded.value, b"value");
        let tombstone = encode_meta(&address, 43, true, b"");
        assert!(decode_meta(&tombstone).unwrap().deleted);
        assert_eq!(decode_meta(&record[..5]), None);
    }
}
