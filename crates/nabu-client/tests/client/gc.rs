//! Garbage collection against real nodes: deleting or overwriting keys gives space back once
//! the last reference goes, never before; what was written within the grace period stays.

use std::time::{Duration, Instant};

use bytes::Bytes;
use nabu_client::{Client, ClientConfig, ClientError, ClusterMap, GcOptions, GcReport};
use nabu_core::ring::NodeId;

use super::{MIB, NS, TestCluster, assert_same, random_bytes};

/// The clients' put deadline here; the collector's grace period is twice it.
const PUT_DEADLINE: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(2);

impl TestCluster {
    fn gc_client(&self) -> Client {
        let config = ClientConfig {
            request_timeout: Duration::from_secs(20),
            put_deadline: PUT_DEADLINE,
            ..ClientConfig::default()
        };
        let map = ClusterMap::new(self.token.clone(), self.members.clone());
        Client::new(map, config).expect("client")
    }

    /// Shards held on all nodes together, by NODE_STATUS.
    async fn shards_held(&self, client: &Client) -> u64 {
        let mut total = 0;
        for node in &self.nodes {
            let status = client
                .pool()
                .node_status(NodeId(node.id))
                .await
                .expect("status");
            total += status.shards;
        }
        total
    }
}

async fn collect(client: &Client) -> GcReport {
    let options = GcOptions {
        grace: GRACE,
        dry_run: false,
    };
    client.collect_garbage(options, |_| {}).await.expect("gc")
}

/// Waits out the grace period after `since`: the collector's rule is about elapsed time.
async fn outlast_grace(since: Instant) {
    let wait = (GRACE + Duration::from_millis(100)).saturating_sub(since.elapsed());
    tokio::time::sleep(wait).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_comes_back_when_the_last_reference_goes_and_not_before() {
    let cluster = TestCluster::start(6).await;
    let client = cluster.gc_client();
    let shared = random_bytes(40, 9 * MIB);
    // `c` shares its first 4 MiB stripe with `a` (and `b`, which is `a` again).
    let mut c_bytes = shared[..4 * MIB].to_vec();
    c_bytes.extend_from_slice(&random_bytes(41, MIB));
    let c_bytes = Bytes::from(c_bytes);
    let d_old = random_bytes(42, 9 * MIB);
    let d_new = random_bytes(43, 5 * MIB);
    let small = random_bytes(44, 100 << 10);
    let tiny = random_bytes(45, 50 << 10); // whole copies, alive throughout
    client
        .put(NS, b"tiny", tiny.clone())
        .await
        .expect("put tiny");

    let a = client.put(NS, b"a", shared.clone()).await.expect("put a");
    client.put(NS, b"b", shared.clone()).await.expect("put b");
    client.put(NS, b"c", c_bytes.clone()).await.expect("put c");
    let old = client.put(NS, b"d", d_old).await.expect("put d");
    client
        .put(NS, b"d", d_new.clone())
        .await
        .expect("overwrite d");
    let s = client.put(NS, b"s", small).await.expect("put s");
    client.delete(NS, b"s").await.expect("delete s");
    let written = Instant::now();
    let held = cluster.shards_held(&client).await;

    // Right after the writes the old `d` and `s` are unreferenced but fresh: kept.
    let early = collect(&client).await;
    let unreferenced = old.shards_written + s.shards_written;
    assert_eq!(early.shards_unreferenced, unreferenced, "{early:?}");
    assert_eq!(early.shards_deleted, 0, "{early:?}");
    assert!(early.kept_recent >= unreferenced, "{early:?}");
    assert_eq!(cluster.shards_held(&client).await, held);

    outlast_grace(written).await;
    let dry = client
        .collect_garbage(
            GcOptions {
                grace: GRACE,
                dry_run: true,
            },
            |_| {},
        )
        .await
        .expect("dry run");
    assert_eq!(dry.shards_unreferenced, unreferenced);
    assert_eq!((dry.shards_deleted, dry.condemned), (0, 0));
    // Quiet now: the first collection condemns, one a grace period later drops.
    let condemned = collect(&client).await;
    assert_eq!(
        condemned.condemned,
        unreferenced + 6,
        "and 2 × 3 manifests: {condemned:?}"
    );
    assert_eq!(condemned.shards_deleted, 0, "{condemned:?}");
    let condemned_at = Instant::now();
    outlast_grace(condemned_at).await;
    let swept = collect(&client).await;
    assert_eq!(swept.shards_deleted, unreferenced, "{swept:?}");
    assert_eq!(
        swept.manifests_deleted, 6,
        "two blobs, three copies each: {swept:?}"
    );
    assert!(swept.bytes_freed >= unreferenced * (100 << 10), "{swept:?}");
    assert_eq!(cluster.shards_held(&client).await, held - unreferenced);
    assert!(matches!(
        client.get_blob(NS, old.blob_id).await,
        Err(ClientError::NotFound(_))
    ));
    assert_same(&client.get(NS, b"d").await.expect("d"), &d_new, "d");

    // One of two keys of a blob goes: nothing of it is even condemned.
    client.delete(NS, b"a").await.expect("delete a");
    let swept = collect(&client).await;
    assert_eq!(
        swept.shards_unreferenced, 0,
        "b still names the blob: {swept:?}"
    );

    // The last key of the blob goes while a reader streams it: the reader finishes, and
    // everything but the stripe `c` shares goes a grace period later.
    let mut reader = client.get_stream(NS, b"b").await.expect("stream b");
    let mut streamed = reader
        .next_chunk()
        .await
        .expect("a chunk")
        .expect("chunk")
        .to_vec();
    client.delete(NS, b"b").await.expect("delete b");
    let condemned = collect(&client).await;
    assert_eq!(
        condemned.condemned,
        a.shards_written - 6 + 3,
        "{condemned:?}"
    );
    while let Some(chunk) = reader.next_chunk().await {
        streamed.extend_from_slice(&chunk.expect("the rest of b"));
    }
    assert_same(&streamed, &shared, "b streamed across a collection");
    outlast_grace(Instant::now()).await;
    let swept = collect(&client).await;
    assert_eq!(swept.shards_deleted, a.shards_written - 6, "{swept:?}");
    assert_same(&client.get(NS, b"c").await.expect("c"), &c_bytes, "c");

    // Whole copies (kept under derived ids) of a live key survived every collection.
    assert_same(&client.get(NS, b"tiny").await.expect("tiny"), &tiny, "tiny");

    // Everything goes.
    client.delete(NS, b"tiny").await.expect("delete tiny");
    client.delete(NS, b"c").await.expect("delete c");
    client.delete(NS, b"d").await.expect("delete d");
    collect(&client).await;
    outlast_grace(Instant::now()).await;
    let swept = collect(&client).await;
    assert!(swept.shards_deleted > 0);
    assert_eq!(cluster.shards_held(&client).await, 0, "{swept:?}");
    assert_eq!(swept.blobs_live, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_needs_every_node_and_a_grace_period_covering_puts() {
    let mut cluster = TestCluster::start(6).await;
    let client = cluster.gc_client();
    client
        .put(NS, b"k", random_bytes(45, MIB))
        .await
        .expect("put");
    let short = GcOptions {
        grace: PUT_DEADLINE,
        dry_run: false,
    };
    assert!(matches!(
        client.collect_garbage(short, |_| {}).await,
        Err(ClientError::InvalidArgument(_))
    ));
    cluster.stop(NodeId(4)).await;
    let error = client
        .collect_garbage(
            GcOptions {
                grace: GRACE,
                dry_run: false,
            },
            |_| {},
        )
        .await
        .expect_err("a node is down");
    assert!(error.to_string().contains("n4"), "{error}");
}
