//! [`Pacer`]: spaces transfers so that their bytes average at most a given rate (background
//! work such as repair and rebalancing must not starve client traffic).

use std::time::Duration;

use tokio::time::Instant;

/// Spaces transfers so that their bytes average at most `bytes_per_s`; shared by the tasks of
/// one job, each calling [`Pacer::wait`] before it sends.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_s: u64,
    next: tokio::sync::Mutex<Instant>,
}

impl Pacer {
    /// A pacer at `bytes_per_s` (at least 1).
    pub fn new(bytes_per_s: u64) -> Self {
        Self {
            bytes_per_s: bytes_per_s.max(1),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits until `bytes` more may go.
    pub async fn wait(&self, bytes: u64) {
        let start = {
            let mut next = self.next.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_s as f64);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}
