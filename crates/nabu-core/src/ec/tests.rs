//! Tests of the public codec API against every implementation available here.

use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

use super::kernel::Kernel;
use super::*;

/// Every implementation that runs on this machine: portable with the detected kernel,
/// portable scalar (when that differs), and ISA-L when it loads.
fn implementations(k: usize, m: usize) -> Vec<Arc<dyn ErasureCodec>> {
    let mut codecs = vec![portable(k, m).expect("valid geometry")];
    if Kernel::detect() != Kernel::Scalar {
        codecs.push(portable_with_kernel(k, m, Kernel::Scalar).expect("valid geometry"));
    }
    match isal(k, m) {
        Ok(codec) => codecs.push(codec),
        Err(EcError::Unavailable(_)) => {}
        Err(other) => panic!("isal({k}, {m}): {other}"),
    }
    codecs
}

fn random_data(k: usize, len: usize, rng: &mut StdRng) -> Vec<Vec<u8>> {
    (0..k)
        .map(|_| {
            let mut shard = vec![0u8; len];
            rng.fill(&mut shard[..]);
            shard
        })
        .collect()
}

/// The whole stripe (data then parity) of `data`, encoded by `codec`.
fn encode_stripe(codec: &dyn ErasureCodec, data: &[Vec<u8>]) -> Vec<AlignedBuf> {
    let len = data.first().map_or(0, Vec::len);
    let mut parity: Vec<AlignedBuf> = (0..codec.parity_shards())
        .map(|_| AlignedBuf::zeroed(len))
        .collect();
    let data_refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut parity_refs: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
    codec.encode(&data_refs, &mut parity_refs).expect("encode");
    data.iter()
        .map(|shard| AlignedBuf::copy_from(shard))
        .chain(parity)
        .collect()
}

/// The stripe with the shards at `erased` replaced by `None`.
fn erase(stripe: &[AlignedBuf], erased: &[usize]) -> Vec<Option<AlignedBuf>> {
    let mut shards: Vec<Option<AlignedBuf>> = stripe.iter().cloned().map(Some).collect();
    for &index in erased {
        shards[index] = None;
    }
    shards
}

fn random_erasures(total: usize, count: usize, rng: &mut StdRng) -> Vec<usize> {
    sample(rng, total, count).into_vec()
}

/// Checks that `codec` rebuilds `stripe` from every tried subset of survivors.
fn check_rebuilds(codec: &dyn ErasureCodec, stripe: &[AlignedBuf], rng: &mut StdRng) {
    let (k, m) = (codec.data_shards(), codec.parity_shards());
    let lost = random_erasures(k + m, rng.random_range(0..=m), rng);
    let name = codec.implementation();

    let mut shards = erase(stripe, &lost);
    codec.reconstruct(&mut shards).expect("reconstruct");
    assert!(
        shards.iter().flatten().eq(stripe.iter()),
        "{name}: lost {lost:?}"
    );

    let mut shards = erase(stripe, &lost);
    codec
        .reconstruct_data(&mut shards)
        .expect("reconstruct_data");
    assert!(
        shards[..k].iter().flatten().eq(stripe[..k].iter()),
        "{name}: lost {lost:?}"
    );
    for &index in lost.iter().filter(|&&index| index >= k) {
        assert!(
            shards[index].is_none(),
            "{name}: rebuilt parity {index} needlessly"
        );
    }

    let lost_too_many = random_erasures(k + m, m + 1, rng);
    let too_few = EcError::TooFewShards {
        present: k - 1,
        needed: k,
    };
    let mut shards = erase(stripe, &lost_too_many);
    assert_eq!(
        codec.reconstruct(&mut shards),
        Err(too_few.clone()),
        "{name}"
    );
    assert_eq!(codec.reconstruct_data(&mut shards), Err(too_few), "{name}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any K of the K + M shards rebuild the stripe exactly; K - 1 give `TooFewShards`.
    #[test]
    fn any_k_of_k_plus_m_shards_rebuild_the_stripe(
        k in 1..=8usize,
        m in 0..=4usize,
        len in prop_oneof![0..=70usize, 70..=3000usize],
        seed in any::<u64>(),
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let data = random_data(k, len, &mut rng);
        let codecs = implementations(k, m);
        let stripe = encode_stripe(codecs[0].as_ref(), &data);
        for codec in &codecs {
            let name = codec.implementation();
            prop_assert!(encode_stripe(codec.as_ref(), &data) == stripe, "{name}");
            check_rebuilds(codec.as_ref(), &stripe, &mut rng);
        }
    }
}

#[test]
fn implementations_agree_byte_for_byte_and_decode_each_other() {
    if isal(4, 2).is_err() {
        eprintln!("ISA-L did not load: comparing the portable kernels only, not against ISA-L");
    }
    let mut rng = StdRng::seed_from_u64(0x4e61_6275);
    let geometries = [
        (4, 2),
        (1, 0),
        (1, 3),
        (3, 3),
        (6, 3),
        (10, 4),
        (12, 4),
        (17, 7),
        (200, 55),
    ];
    for (k, m) in geometries {
        let codecs = implementations(k, m);
        for len in [0, 1, 31, 32, 33, 100, 4103] {
            let data = random_data(k, len, &mut rng);
            let stripes: Vec<Vec<AlignedBuf>> = codecs
                .iter()
                .map(|codec| encode_stripe(codec.as_ref(), &data))
                .collect();
            for (codec, stripe) in codecs.iter().zip(&stripes) {
                let name = codec.implementation();
                assert!(stripe == &stripes[0], "{name} differs, {k}+{m} len {len}");
            }
            for decoder in &codecs {
                let lost = random_erasures(k + m, m, &mut rng);
                let mut shards = erase(&stripes[0], &lost);
                decoder.reconstruct(&mut shards).expect("reconstruct");
                assert!(
                    shards.iter().flatten().eq(stripes[0].iter()),
                    "{k}+{m} len {len}"
                );
            }
        }
    }
}

#[test]
fn long_shards_cross_block_and_vector_boundaries() {
    // 100_003 bytes: several 16 KiB blocks, then a partial vector.
    let mut rng = StdRng::seed_from_u64(7);
    let data = random_data(4, 100_003, &mut rng);
    let codecs = implementations(4, 2);
    let stripe = encode_stripe(codecs[0].as_ref(), &data);
    for codec in &codecs {
        assert!(encode_stripe(codec.as_ref(), &data) == stripe);
        let mut shards = erase(&stripe, &[0, 3]);
        codec.reconstruct(&mut shards).expect("reconstruct");
        assert!(
            shards.iter().flatten().eq(stripe.iter()),
            "{}",
            codec.implementation()
        );
    }
}

/// Data shard `index`, byte `t` of the known-answer stripes.
fn known_answer_data(k: usize, len: usize) -> Vec<Vec<u8>> {
    let byte = |index: usize, t: usize| ((index * len + t) * 37 + 11) as u8;
    (0..k)
        .map(|index| (0..len).map(|t| byte(index, t)).collect())
        .collect()
}

/// Parity computed once with ISA-L 2.30 (`gf_gen_cauchy1_matrix`, `ec_init_tables`,
/// `ec_encode_data`) from a C program and pasted here. If this test fails, the code changed
/// and data already on disk would no longer decode: do not "fix" the constants.
#[test]
fn parity_matches_known_answers_from_isal() {
    #[rustfmt::skip]
    let parity_4_2: [[u8; 40]; 2] = [
        [0xbb, 0xab, 0xa4, 0x8a, 0x6e, 0x56, 0x2d, 0x1b, 0xcb, 0x8d, 0x6a, 0x2c,
         0x36, 0x8d, 0xea, 0x6b, 0xed, 0x18, 0xcc, 0x98, 0xed, 0x4a, 0xc9, 0x4d,
         0x78, 0x9c, 0x78, 0x7c, 0x2a, 0x69, 0x4f, 0xd8, 0xfc, 0xc9, 0x9c, 0x03,
         0x09, 0xef, 0x36, 0x5c],
        [0x9c, 0x07, 0x51, 0x22, 0x3d, 0xa3, 0x8d, 0x3c, 0x67, 0x13, 0xc2, 0x14,
         0xc3, 0x2d, 0xd2, 0xc7, 0x73, 0x20, 0xf4, 0x72, 0x4d, 0x72, 0xf5, 0xd3,
         0x40, 0x65, 0x92, 0x1d, 0x12, 0x55, 0xba, 0xe0, 0x05, 0x3c, 0xfd, 0x50,
         0x35, 0x1a, 0x11, 0xa5],
    ];
    #[rustfmt::skip]
    let parity_12_4: [[u8; 33]; 4] = [
        [0xe0, 0x20, 0x5a, 0x55, 0xa6, 0x17, 0xf4, 0xff, 0x25, 0x54, 0xee, 0xae,
         0xc0, 0xd8, 0x04, 0xa2, 0x12, 0xc8, 0x69, 0xe7, 0xa4, 0x25, 0x4a, 0x3a,
         0xb3, 0xdb, 0x83, 0xfd, 0xd7, 0xfc, 0x05, 0x85, 0xa7],
        [0x81, 0xfd, 0x5a, 0xd4, 0x98, 0x0d, 0xff, 0xe4, 0x54, 0x66, 0xbf, 0x14,
         0x5b, 0xa1, 0x83, 0xd3, 0xe8, 0x88, 0x52, 0xef, 0x84, 0xad, 0x1a, 0x43,
         0xd3, 0xd7, 0x64, 0x7e, 0xc8, 0x4c, 0xaf, 0x0d, 0x51],
        [0x99, 0x90, 0x6f, 0xc1, 0x91, 0xac, 0x3a, 0x11, 0x7b, 0x4f, 0x78, 0xf8,
         0xa3, 0x72, 0xcb, 0xc6, 0xe3, 0xac, 0xdc, 0xda, 0x3c, 0x43, 0xec, 0x0f,
         0x1b, 0x78, 0xd2, 0x07, 0x55, 0x68, 0x5e, 0xae, 0xba],
        [0x94, 0x4e, 0x49, 0x10, 0xbb, 0x25, 0x8d, 0x25, 0xb6, 0x7e, 0xe4, 0xbb,
         0xe4, 0xec, 0x87, 0x90, 0x6d, 0xe9, 0xc7, 0x39, 0x55, 0x8b, 0x47, 0xd1,
         0x43, 0x7d, 0x92, 0xb4, 0x0c, 0x9a, 0xb7, 0x54, 0x09],
    ];
    let cases: [(usize, &[&[u8]]); 2] = [
        (4, &[&parity_4_2[0], &parity_4_2[1]]),
        (
            12,
            &[
                &parity_12_4[0],
                &parity_12_4[1],
                &parity_12_4[2],
                &parity_12_4[3],
            ],
        ),
    ];
    for (k, expected_parity) in cases {
        let len = expected_parity[0].len();
        let data = known_answer_data(k, len);
        for codec in implementations(k, expected_parity.len()) {
            assert_eq!(codec.id(), CodecId::RS_CAUCHY_GF256);
            let stripe = encode_stripe(codec.as_ref(), &data);
            let parity: Vec<&[u8]> = stripe[k..].iter().map(|shard| &shard[..]).collect();
            assert_eq!(
                parity,
                expected_parity,
                "{} {k}+{}",
                codec.implementation(),
                parity.len()
            );
        }
    }
}

#[test]
fn generator_matches_known_answer_from_isal() {
    let generator = gf::cauchy_matrix(4, 2);
    assert_eq!(
        &generator[..16],
        &[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    );
    assert_eq!(
        &generator[16..],
        &[0x47, 0xa7, 0x7a, 0xba, 0xa7, 0x47, 0xba, 0x7a]
    );
}

/// The pure-Rust algebra equals ISA-L's: every product, generators, tables, inverses.
#[test]
fn field_arithmetic_matches_isal() {
    let Some(library) = isal::library() else {
        eprintln!("ISA-L did not load: skipping the field-arithmetic comparison");
        return;
    };
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            assert_eq!(gf::mul(a, b), library.mul(a, b), "{a} * {b}");
        }
    }
    let mut rng = StdRng::seed_from_u64(11);
    for (k, m) in [(1, 0), (4, 2), (10, 4), (100, 155), (254, 1)] {
        let generator = gf::cauchy_matrix(k, m);
        assert_eq!(generator, library.cauchy_matrix(k, m), "{k}+{m}");
        let rows = rng.random_range(0..=m);
        let coefficients = &generator[k * k..][..rows * k];
        assert_eq!(
            gf::mul_tables(coefficients),
            library.init_tables(k, rows, coefficients)
        );
        let survivors = random_erasures(k + m, k, &mut rng);
        let square: Vec<u8> = survivors
            .iter()
            .flat_map(|&r| generator[r * k..][..k].to_vec())
            .collect();
        assert_eq!(
            gf::invert(square.clone(), k),
            library.invert(square, k),
            "{k}+{m}"
        );
    }
}

#[test]
fn decode_writes_into_caller_buffers_and_skips_unavailable_shards() {
    let mut rng = StdRng::seed_from_u64(3);
    let data = random_data(4, 1000, &mut rng);
    for codec in implementations(4, 2) {
        let stripe = encode_stripe(codec.as_ref(), &data);
        let mut rebuilt = vec![0xaa; 1000];
        let mut slots = [
            ShardSlot::Present(&stripe[0]),
            ShardSlot::Rebuild(&mut rebuilt),
            ShardSlot::Present(&stripe[2]),
            ShardSlot::Present(&stripe[3]),
            ShardSlot::Unavailable,
            ShardSlot::Present(&stripe[5]),
        ];
        codec.decode(&mut slots).expect("decode");
        assert_eq!(rebuilt, &stripe[1][..], "{}", codec.implementation());
    }
}

#[test]
fn invalid_geometries_are_rejected() {
    for (k, m) in [(0, 0), (0, 2), (200, 56), (255, 1), (1, usize::MAX)] {
        let invalid = EcError::InvalidGeometry {
            data_shards: k,
            parity_shards: m,
        };
        assert_eq!(portable(k, m).unwrap_err(), invalid);
        assert_eq!(isal(k, m).unwrap_err(), invalid);
        assert_eq!(codec(k, m).unwrap_err(), invalid);
    }
    assert!(portable(255, 0).is_ok());
    assert!(portable(1, 254).is_ok());
    let unknown = codec_for_id(CodecId(99), 4, 2).unwrap_err();
    assert_eq!(unknown, EcError::UnknownCodec(CodecId(99)));
    assert_eq!(
        codec_for_id(CodecId::RS_CAUCHY_GF256, 4, 2).unwrap().id(),
        CodecId(1)
    );
}

#[test]
fn encode_rejects_wrong_counts_and_lengths() {
    let (a, b, short) = (vec![1u8; 64], vec![2u8; 64], vec![3u8; 63]);
    for codec in implementations(4, 2) {
        let (mut p, mut q, mut long) = (vec![0u8; 64], vec![0u8; 64], vec![0u8; 65]);
        let wrong_data = codec.encode(&[&a, &a, &a], &mut [&mut p, &mut q]);
        let expected = EcError::WrongShardCount {
            role: ShardRole::Data,
            expected: 4,
            found: 3,
        };
        assert_eq!(wrong_data, Err(expected));
        let wrong_parity = codec.encode(&[&a, &a, &a, &b], &mut [&mut p]);
        let expected = EcError::WrongShardCount {
            role: ShardRole::Parity,
            expected: 2,
            found: 1,
        };
        assert_eq!(wrong_parity, Err(expected));
        let short_data = codec.encode(&[&a, &b, &short, &a], &mut [&mut p, &mut q]);
        let expected = EcError::ShardLengthMismatch {
            index: 2,
            expected: 64,
            found: 63,
        };
        assert_eq!(short_data, Err(expected));
        let long_parity = codec.encode(&[&a, &b, &a, &a], &mut [&mut p, &mut long]);
        let expected = EcError::ShardLengthMismatch {
            index: 5,
            expected: 64,
            found: 65,
        };
        assert_eq!(long_parity, Err(expected));
    }
}

#[test]
fn reconstruct_rejects_wrong_counts_lengths_and_too_few_shards() {
    let mut rng = StdRng::seed_from_u64(5);
    let data = random_data(4, 128, &mut rng);
    for codec in implementations(4, 2) {
        let stripe = encode_stripe(codec.as_ref(), &data);
        let mut five = erase(&stripe[..5], &[0]);
        let expected = EcError::WrongShardCount {
            role: ShardRole::Stripe,
            expected: 6,
            found: 5,
        };
        assert_eq!(codec.reconstruct(&mut five), Err(expected));

        let mut mismatched = erase(&stripe, &[1]);
        mismatched[3] = Some(AlignedBuf::zeroed(100));
        let expected = EcError::ShardLengthMismatch {
            index: 3,
            expected: 128,
            found: 100,
        };
        assert_eq!(codec.reconstruct_data(&mut mismatched), Err(expected));

        let mut three_left = erase(&stripe, &[0, 2, 5]);
        let expected = EcError::TooFewShards {
            present: 3,
            needed: 4,
        };
        assert_eq!(codec.reconstruct(&mut three_left), Err(expected));
        assert!(
            three_left[0].is_none(),
            "a failed reconstruct leaves the stripe as it was"
        );

        let mut none_left = erase(&stripe, &[0, 1, 2, 3, 4, 5]);
        let expected = EcError::TooFewShards {
            present: 0,
            needed: 4,
        };
        assert_eq!(codec.reconstruct(&mut none_left), Err(expected));

        let mut complete = erase(&stripe, &[]);
        assert_eq!(codec.reconstruct(&mut complete), Ok(()));
    }
}

#[test]
fn codec_picks_an_available_implementation() {
    let chosen = codec(4, 2).expect("4+2");
    let available: Vec<&str> = implementations(4, 2)
        .iter()
        .map(|c| c.implementation())
        .collect();
    assert!(
        available.contains(&chosen.implementation()),
        "{}",
        chosen.implementation()
    );
    if isal(4, 2).is_err() {
        assert_eq!(chosen.implementation(), Kernel::detect().implementation());
    }
    assert_eq!(
        (
            chosen.data_shards(),
            chosen.parity_shards(),
            chosen.stripe_shards()
        ),
        (4, 2, 6)
    );
}
