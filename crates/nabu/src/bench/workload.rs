//! The timed PUT and GET passes of `nabu bench`: `concurrency` tasks share one client and
//! one op counter, each op is timed alone, and a pass stops at its op count, its time bound
//! or its byte bound, whichever comes first.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use nabu_client::Client;
use tokio::task::JoinSet;

use super::{Latency, Op, PassResult, format_size};

/// User bytes one PUT pass writes at most (the cluster stores 1.5× that under `ec:4+2`).
pub const PUT_BYTES_PER_PASS_MAX: u64 = 1 << 30;
/// Objects larger than this are read as a stream (a stripe at a time), smaller ones whole.
const STREAM_BYTES_MIN: u64 = 4 << 20;
/// Every this many bytes of an object carry its run and op number, so that no two objects
/// (and no two stripes of the benchmark) are identical and deduplicated.
const STAMP_EVERY_BYTES: usize = 64 << 10;
/// Deletes in flight at once while cleaning up.
const DELETES_INFLIGHT_MAX: usize = 16;
/// Keys per LIST page while cleaning up.
const LIST_PAGE_KEYS: u32 = 1000;

/// What one pass does.
#[derive(Debug, Clone)]
pub struct PassPlan {
    /// PUT or GET.
    pub op: Op,
    /// The namespace.
    pub namespace: String,
    /// Keys are `<key_prefix><op index>`.
    pub key_prefix: String,
    /// Bytes per object.
    pub object_bytes: u64,
    /// Tasks issuing ops at once.
    pub concurrency: usize,
    /// Most ops (a PUT pass also stops at [`PUT_BYTES_PER_PASS_MAX`]).
    pub ops_max: u64,
    /// The pass stops issuing ops after this long.
    pub duration_max: Duration,
    /// GET: how many objects the PUT pass stored (op `i` reads object `i % objects`).
    pub objects: u64,
    /// The run's number, stamped into PUT objects.
    pub run_number: u64,
}

impl PassPlan {
    fn key(&self, index: u64) -> Vec<u8> {
        format!("{}{index}", self.key_prefix).into_bytes()
    }
}

/// Shared between the tasks of one pass.
#[derive(Debug)]
struct PassState {
    plan: PassPlan,
    client: Client,
    next_op: AtomicU64,
    deadline: Instant,
    template: Vec<u8>,
    progress: ProgressBar,
}

/// Runs one pass; errors stop it (the first one is returned).
pub async fn run_pass(client: &Client, plan: PassPlan) -> anyhow::Result<PassResult> {
    let mut template = vec![
        0u8;
        if plan.op == Op::Put {
            plan.object_bytes as usize
        } else {
            0
        }
    ];
    getrandom::fill(&mut template).map_err(|e| anyhow::anyhow!("random object bytes: {e}"))?;
    let progress = progress_line(&plan);
    let state = Arc::new(PassState {
        deadline: Instant::now() + plan.duration_max,
        client: client.clone(),
        next_op: AtomicU64::new(0),
        template,
        progress,
        plan,
    });
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..state.plan.concurrency {
        let state = state.clone();
        tasks.spawn(async move { run_task(&state).await });
    }
    let mut samples = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("benchmark task panicked")? {
            Ok(task_samples) => samples.extend(task_samples),
            Err(error) => {
                state.next_op.store(u64::MAX / 2, Ordering::Relaxed);
                first_error.get_or_insert(error);
            }
        }
    }
    let elapsed = start.elapsed();
    state.progress.finish_and_clear();
    if let Some(error) = first_error {
        return Err(error);
    }
    let plan = &state.plan;
    let ops = samples.len() as u64;
    Ok(PassResult {
        op: plan.op,
        object_bytes: plan.object_bytes,
        concurrency: plan.concurrency,
        ops,
        bytes: ops * plan.object_bytes,
        elapsed_sec: elapsed.as_secs_f64(),
        latency: Latency::from_samples(samples),
    })
}

/// One task's loop: the durations of the ops it completed.
async fn run_task(state: &PassState) -> anyhow::Result<Vec<Duration>> {
    let plan = &state.plan;
    let ops_max = match plan.op {
        Op::Put => plan
            .ops_max
            .min((PUT_BYTES_PER_PASS_MAX / plan.object_bytes.max(1)).max(1)),
        Op::Get => plan.ops_max,
    };
    let mut samples = Vec::new();
    loop {
        let index = state.next_op.fetch_add(1, Ordering::Relaxed);
        if index >= ops_max || Instant::now() >= state.deadline {
            return Ok(samples);
        }
        let elapsed = match plan.op {
            Op::Put => put_one(state, index).await?,
            Op::Get => get_one(state, index % plan.objects.max(1)).await?,
        };
        samples.push(elapsed);
        state.progress.inc(1);
    }
}

async fn put_one(state: &PassState, index: u64) -> anyhow::Result<Duration> {
    let plan = &state.plan;
    let object = stamped_object(&state.template, plan.run_number, index);
    let key = plan.key(index);
    let start = Instant::now();
    state
        .client
        .put(&plan.namespace, &key, object)
        .await
        .with_context(|| format!("put {}", String::from_utf8_lossy(&key)))?;
    Ok(start.elapsed())
}

async fn get_one(state: &PassState, index: u64) -> anyhow::Result<Duration> {
    let plan = &state.plan;
    let key = plan.key(index);
    let what = || format!("get {}", String::from_utf8_lossy(&key));
    let start = Instant::now();
    let received = if plan.object_bytes > STREAM_BYTES_MIN {
        let mut reader = state
            .client
            .get_stream(&plan.namespace, &key)
            .await
            .with_context(what)?;
        let mut received = 0u64;
        while let Some(chunk) = reader.next_chunk().await {
            received += chunk.with_context(what)?.len() as u64;
        }
        received
    } else {
        let bytes = state
            .client
            .get(&plan.namespace, &key)
            .await
            .with_context(what)?;
        bytes.len() as u64
    };
    let elapsed = start.elapsed();
    anyhow::ensure!(
        received == plan.object_bytes,
        "{}: {received} bytes, expected {}",
        what(),
        plan.object_bytes
    );
    Ok(elapsed)
}

/// A copy of `template` with the run and op number written every [`STAMP_EVERY_BYTES`].
fn stamped_object(template: &[u8], run_number: u64, index: u64) -> Vec<u8> {
    let mut object = template.to_vec();
    let mut stamp = [0u8; 16];
    stamp[..8].copy_from_slice(&index.to_le_bytes());
    stamp[8..].copy_from_slice(&run_number.to_le_bytes());
    for block in object.chunks_mut(STAMP_EVERY_BYTES) {
        let len = block.len().min(stamp.len());
        block[..len].copy_from_slice(&stamp[..len]);
    }
    object
}

fn progress_line(plan: &PassPlan) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(format!(
        "{} {} x{}",
        plan.op.name(),
        format_size(plan.object_bytes),
        plan.concurrency
    ));
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg}: {pos} ops {per_sec} {elapsed}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Deletes every key under `prefix`, a page at a time, a bounded number of deletes at once;
/// returns how many were deleted.
pub async fn delete_prefix(client: &Client, namespace: &str, prefix: &str) -> anyhow::Result<u64> {
    let mut deleted = 0;
    let mut continuation: Option<Vec<u8>> = None;
    loop {
        let page = client
            .list(
                namespace,
                prefix.as_bytes(),
                continuation.as_deref(),
                LIST_PAGE_KEYS,
            )
            .await
            .context("list benchmark objects")?;
        let mut tasks = JoinSet::new();
        for listed in page.keys {
            if tasks.len() >= DELETES_INFLIGHT_MAX
                && let Some(joined) = tasks.join_next().await
            {
                joined.context("delete task panicked")??;
                deleted += 1;
            }
            let (client, namespace) = (client.clone(), namespace.to_owned());
            tasks.spawn(async move { client.delete(&namespace, &listed.key).await });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("delete task panicked")??;
            deleted += 1;
        }
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => return Ok(deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_objects_differ_in_every_block() {
        let template = vec![9u8; 3 * STAMP_EVERY_BYTES + 5];
        let a = stamped_object(&template, 1, 0);
        let b = stamped_object(&template, 1, 1);
        assert_eq!(a.len(), template.len());
        for (block_a, block_b) in a.chunks(STAMP_EVERY_BYTES).zip(b.chunks(STAMP_EVERY_BYTES)) {
            assert_ne!(block_a, block_b);
        }
    }
}
