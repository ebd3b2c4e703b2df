use super::*;

fn sample_manifest() -> Manifest {
    let blob_bytes = 10 * 4096 + 17;
    let stripe_bytes = 4 * 4096;
    let stripes = (0..3)
        .map(|index: u64| StripeEntry {
            stripe_id: StripeId::of(&index.to_le_bytes()),
            stripe_bytes: (blob_bytes - index * stripe_bytes).min(stripe_bytes),
        })
        .collect();
    Manifest {
        blob_id: BlobId::of(b"blob"),
        blob_bytes,
        durability: Durability::EC_4_2,
        codec: CodecId::RS_CAUCHY_GF256,
        stripe_bytes,
        created_hlc: 0x1234_5678_9abc,
        stripes,
        shard_crcs: (0..18).map(|shard| 0x1000_0000 + shard).collect(),
        metadata: UserMetadata::from([
            (
                "content-type".to_owned(),
                "application/octet-stream".to_owned(),
            ),
            ("owner".to_owned(), "team-ü".to_owned()),
        ]),
    }
}

fn sample_key_record() -> KeyRecord {
    KeyRecord {
        blob_id: BlobId::of(b"blob"),
        blob_bytes: 42,
        hlc_timestamp: 7 << 16 | 3,
        metadata: UserMetadata::from([("a".to_owned(), "b".to_owned())]),
    }
}

/// Re-computes the trailing CRC after a test edited the bytes, so the decoder reaches the
/// field checks behind it.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(bytes.len() - 4);
    seal(&mut bytes);
    bytes
}

#[test]
fn manifests_round_trip() {
    let manifest = sample_manifest();
    let bytes = manifest.encode().unwrap();
    assert_eq!(&bytes[..5], b"NBMF\x02");
    assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
    assert_eq!(
        manifest.shard_crcs_of(1),
        Some(
            &[
                0x1000_0006,
                0x1000_0007,
                0x1000_0008,
                0x1000_0009,
                0x1000_000a,
                0x1000_000b
            ][..]
        )
    );
    // Without shard checksums: version 1, as written before version 2, still read.
    let v1 = Manifest {
        shard_crcs: Vec::new(),
        ..manifest.clone()
    };
    let bytes = v1.encode().unwrap();
    assert_eq!(&bytes[..5], b"NBMF\x01");
    assert_eq!(Manifest::decode(&bytes).unwrap(), v1);
    assert_eq!(v1.shard_crcs_of(0), None);

    let empty = Manifest {
        blob_id: BlobId::of(b""),
        blob_bytes: 0,
        durability: Durability::Replicas { copies: 3 },
        codec: CodecId(0),
        stripe_bytes: 4 << 20,
        created_hlc: 1,
        stripes: Vec::new(),
        shard_crcs: Vec::new(),
        metadata: UserMetadata::new(),
    };
    assert_eq!(Manifest::decode(&empty.encode().unwrap()).unwrap(), empty);
}

#[test]
fn manifest_layout_matches_the_document() {
    // docs/formats/manifest.md: fixed part 69 bytes, 40 + 4 × 6 per stripe (version 2,
    // ec:4+2), u16 metadata count, 4 + name + value per entry, 4-byte CRC.
    let manifest = sample_manifest();
    let bytes = manifest.encode().unwrap();
    let metadata_bytes: usize = manifest
        .metadata
        .iter()
        .map(|(name, value)| 4 + name.len() + value.len())
        .sum();
    assert_eq!(bytes.len(), 69 + 3 * (40 + 24) + 2 + metadata_bytes + 4);
    assert_eq!(
        bytes[101..109],
        manifest.stripes[0].stripe_bytes.to_le_bytes()
    );
    assert_eq!(
        bytes[109..113],
        0x1000_0000u32.to_le_bytes(),
        "shard 0's crc"
    );
    assert_eq!(&bytes[133..165], manifest.stripes[1].stripe_id.as_bytes());
    assert_eq!(&bytes[5..37], manifest.blob_id.as_bytes());
    assert_eq!(bytes[45..48], [1, 4, 2]);
    assert_eq!(bytes[48], 1);
    assert_eq!(bytes[65..69], 3u32.to_le_bytes());
    assert_eq!(&bytes[69..101], manifest.stripes[0].stripe_id.as_bytes());
    let key_record = sample_key_record().encode().unwrap();
    assert_eq!(key_record.len(), 53 + 2 + 4 + 2 + 4);
}

#[test]
fn key_and_namespace_records_round_trip() {
    let record = sample_key_record();
    assert_eq!(
        KeyRecord::decode(&record.encode().unwrap()).unwrap(),
        record
    );
    for durability in [
        Durability::EC_4_2,
        Durability::Replicas { copies: 1 },
        Durability::None,
    ] {
        let record = NamespaceRecord { durability };
        assert_eq!(NamespaceRecord::decode(&record.encode()).unwrap(), record);
    }
}

#[test]
fn every_truncation_and_every_flipped_bit_is_refused() {
    let encoded = [
        sample_manifest().encode().unwrap(),
        sample_key_record().encode().unwrap(),
    ];
    for bytes in &encoded {
        for length in 0..bytes.len() {
            let cut = &bytes[..length];
            assert!(Manifest::decode(cut).is_err() && KeyRecord::decode(cut).is_err());
        }
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(&damaged).is_err() && KeyRecord::decode(&damaged).is_err());
        }
    }
}

#[test]
fn bad_input_gets_typed_errors() {
    let bytes = sample_manifest().encode().unwrap();
    assert_eq!(
        KeyRecord::decode(&bytes),
        Err(FormatError::BadMagic {
            expected: KEY_RECORD_MAGIC,
            found: MANIFEST_MAGIC
        })
    );
    let mut version_three = bytes.clone();
    version_three[4] = 3;
    assert_eq!(
        Manifest::decode(&version_three),
        Err(FormatError::UnsupportedVersion(3))
    );
    let mut key_record_two = sample_key_record().encode().unwrap();
    key_record_two[4] = 2;
    assert_eq!(
        KeyRecord::decode(&key_record_two),
        Err(FormatError::UnsupportedVersion(2)),
        "version 2 is a manifest format only"
    );
    let mut flipped = bytes.clone();
    flipped[40] ^= 0xff;
    assert!(matches!(
        Manifest::decode(&flipped),
        Err(FormatError::ChecksumMismatch { .. })
    ));
    let mut trailing = bytes.clone();
    trailing.insert(bytes.len() - 4, 0);
    assert_eq!(
        Manifest::decode(&reseal(trailing)),
        Err(FormatError::TrailingBytes(1))
    );
    assert_eq!(
        Manifest::decode(&[]),
        Err(FormatError::Truncated { field: "header" })
    );
}

#[test]
fn inconsistent_manifests_are_refused() {
    let bytes = sample_manifest().encode().unwrap();
    // A stripe count far beyond the bytes present: refused before anything is reserved.
    let mut huge_count = bytes.clone();
    huge_count[65..69].copy_from_slice(&MANIFEST_STRIPES_MAX.to_le_bytes());
    assert_eq!(
        Manifest::decode(&reseal(huge_count)),
        Err(FormatError::Truncated { field: "stripes" })
    );
    let mut over_max = bytes.clone();
    over_max[65..69].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Manifest::decode(&reseal(over_max)),
        Err(FormatError::TooLarge {
            field: "stripe_count",
            ..
        })
    ));
    // The blob size no longer matches the stripe list.
    let mut wrong_size = bytes.clone();
    wrong_size[37..45].copy_from_slice(&5u64.to_le_bytes());
    assert!(matches!(
        Manifest::decode(&reseal(wrong_size)),
        Err(FormatError::Invalid {
            field: "stripe_count",
            ..
        })
    ));
    // An erasure layout without a codec.
    let mut no_codec = bytes.clone();
    no_codec[48] = 0;
    assert!(matches!(
        Manifest::decode(&reseal(no_codec)),
        Err(FormatError::Invalid { field: "codec", .. })
    ));
    // Durability kind 9.
    let mut bad_kind = bytes.clone();
    bad_kind[45] = 9;
    assert!(matches!(
        Manifest::decode(&reseal(bad_kind)),
        Err(FormatError::Invalid {
            field: "durability",
            ..
        })
    ));
    // Metadata names out of order: swap the two entries' first letters.
    let mut manifest = sample_manifest();
    manifest.metadata = UserMetadata::from([
        ("a".to_owned(), "1".to_owned()),
        ("b".to_owned(), "2".to_owned()),
    ]);
    let mut unsorted = manifest.encode().unwrap();
    let at = unsorted.len() - 4 - 12;
    assert_eq!(&unsorted[at..at + 6], &[1, 0, b'a', 1, 0, b'1']);
    unsorted[at + 2] = b'c';
    assert!(matches!(
        Manifest::decode(&reseal(unsorted)),
        Err(FormatError::Invalid {
            field: "metadata_name",
            ..
        })
    ));
}

#[test]
fn oversized_metadata_is_refused_when_encoding() {
    let mut record = sample_key_record();
    record.metadata = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
    assert!(matches!(
        record.encode(),
        Err(FormatError::TooLarge {
            field: "metadata_count",
            ..
        })
    ));
    record.metadata = UserMetadata::from([("k".to_owned(), "v".repeat(3000))]);
    assert!(matches!(
        record.encode(),
        Err(FormatError::TooLarge {
            field: "metadata_value",
            ..
        })
    ));
    record.metadata = UserMetadata::from([(String::new(), "v".to_owned())]);
    assert!(record.encode().is_err());
}

#[test]
fn key_record_points_depend_on_namespace_and_key() {
    let point = key_record_point("default", b"a");
    assert_eq!(point, key_record_point("default", b"a"));
    assert_ne!(point, key_record_point("default", b"b"));
    assert_ne!(point, key_record_point("kv", b"a"));
    // The namespace length is hashed, so ("ab", "c") and ("a", "bc") differ.
    assert_ne!(key_record_point("ab", b"c"), key_record_point("a", b"bc"));
}

#[test]
fn worked_example_matches_the_document() {
    let record = KeyRecord {
        blob_id: BlobId::of(b"abc"),
        blob_bytes: 3,
        hlc_timestamp: 0x0190_0000_0000_0001,
        metadata: UserMetadata::from([("a".to_owned(), "b".to_owned())]),
    };
    let document = include_str!("../../../../docs/formats/manifest.md");
    let dump = document
        .split("```hexdump\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the document has a hexdump block");
    let documented: Vec<u8> = dump
        .lines()
        .flat_map(|line| {
            let hex = line.split('|').next().unwrap_or("");
            hex.split_whitespace()
                .skip(1)
                .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
                .collect::<Vec<u8>>()
        })
        .collect();
    assert_eq!(record.encode().unwrap(), documented);
    assert_eq!(KeyRecord::decode(&documented).unwrap(), record);
}
