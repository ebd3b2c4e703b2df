//! Reads into the caller's memory and renames without moving bytes: what the Python
//! package's `get_into`, `load_safetensors` and fsspec `mv` stand on.

use bytes::Bytes;
use nabu_client::ClientError;
use nabu_core::id::BlobId;

use super::{MIB, NS, TestCluster, assert_same, random_bytes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_land_in_the_callers_buffer_in_place_and_a_node_loss_changes_nothing() {
    let mut cluster = TestCluster::start(6).await;
    let client = cluster.client();
    let large = random_bytes(11, 13 * MIB + 4_321);
    client.put(NS, b"into", large.clone()).await.expect("put");
    let stripe = 4 * MIB as u64;
    let end = large.len() as u64;

    // The whole object, then ranges across stripe boundaries, each into a buffer whose
    // surrounding bytes must stay untouched (a marker on each side).
    for (offset, length) in [
        (0, end),
        (1, 100),
        (stripe - 3, 7),
        (stripe, 2 * stripe),
        (end - 5, 5),
    ] {
        let mut buffer = vec![0xA5u8; length as usize + 2];
        let address = buffer.as_ptr();
        let written = client
            .get_range_into(NS, b"into", offset, &mut buffer[1..=length as usize])
            .await
            .expect("read into");
        assert_eq!(written as u64, length, "offset {offset}");
        assert_eq!(buffer.as_ptr(), address, "the buffer was not replaced");
        let expected = &large[offset as usize..(offset + length) as usize];
        assert_same(&buffer[1..=length as usize], expected, "bytes read into");
        assert_eq!((buffer[0], buffer[length as usize + 1]), (0xA5, 0xA5));
    }

    // A buffer longer than what is left: only the rest is written, the tail is kept.
    let mut buffer = vec![0x5Au8; 10];
    let written = client
        .get_range_into(NS, b"into", end - 4, &mut buffer)
        .await
        .expect("read the end");
    assert_eq!(written, 4);
    assert_same(&buffer[..4], &large[large.len() - 4..], "tail");
    assert!(buffer[4..].iter().all(|&byte| byte == 0x5A));
    assert!(matches!(
        client
            .get_range_into(NS, b"into", end + 1, &mut buffer)
            .await,
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(matches!(
        client.get_range_into(NS, b"missing", 0, &mut buffer).await,
        Err(ClientError::NotFound(_))
    ));

    // One version: an object opened before an overwrite still reads the old bytes.
    let opened = client.open(NS, b"into").await.expect("open");
    client
        .put(NS, b"into", Bytes::from_static(b"new"))
        .await
        .expect("overwrite");
    let mut old = vec![0u8; 1000];
    opened.read_into(stripe, &mut old).await.expect("read old");
    assert_same(&old, &large[stripe as usize..stripe as usize + 1000], "old");

    // Two nodes down: decoded around them, straight into the buffer.
    let opened = client.open(NS, b"into").await.expect("open");
    assert_eq!(opened.info.size, 3);
    client
        .put(NS, b"into", large.clone())
        .await
        .expect("put again");
    for id in [2, 5] {
        cluster.stop(nabu_core::ring::NodeId(id)).await;
    }
    let mut buffer = vec![0u8; large.len()];
    client
        .get_range_into(NS, b"into", 0, &mut buffer)
        .await
        .expect("degraded read into");
    assert_same(&buffer, &large, "degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_moves_the_key_not_the_bytes() {
    let cluster = TestCluster::start(6).await;
    let client = cluster.client();
    let bytes = random_bytes(12, 5 * MIB + 17);
    let mut options = nabu_client::PutOptions::default();
    options
        .metadata
        .insert("content-type".into(), "application/x-test".into());
    let put = client
        .put_with(NS, b"from", bytes.clone(), options)
        .await
        .expect("put");
    let renamed = client.rename(NS, b"from", b"to").await.expect("rename");
    assert_eq!(renamed.blob_id, put.blob_id, "the same blob");
    assert!(matches!(
        client.stat(NS, b"from").await,
        Err(ClientError::NotFound(_))
    ));
    let info = client.stat(NS, b"to").await.expect("stat");
    assert_eq!(
        (info.blob_id, info.size),
        (BlobId::of(&bytes), bytes.len() as u64)
    );
    assert_eq!(info.metadata, put_metadata());
    assert_same(
        &client.get(NS, b"to").await.expect("get"),
        &bytes,
        "renamed",
    );
    client
        .rename(NS, b"to", b"to")
        .await
        .expect("rename to itself");
    assert!(client.stat(NS, b"to").await.is_ok(), "still there");
    assert!(matches!(
        client.rename(NS, b"gone", b"elsewhere").await,
        Err(ClientError::NotFound(_))
    ));
}

fn put_metadata() -> nabu_client::UserMetadata {
    let mut metadata = nabu_client::UserMetadata::default();
    metadata.insert("content-type".into(), "application/x-test".into());
    metadata
}
