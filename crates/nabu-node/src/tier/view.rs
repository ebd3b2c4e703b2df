//! The tiers as others see them: the JSON view (`/api/v1/cluster`'s `tiers`, shown by
//! `nabu status`) and the Prometheus families (`nabu_tier_*`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{CxlHardware, MemoryTier, TierCounters, TierName, Tiers};

/// One tier's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierView {
    /// `dram`, `cxl` or `nvme`.
    pub tier: TierName,
    /// Whether the tier is on (NVMe always is).
    pub enabled: bool,
    /// Its capacity (0 for NVMe: see the store's figures).
    pub capacity_bytes: u64,
    /// Bytes it holds now (for NVMe: the store's live bytes).
    pub bytes: u64,
    /// Shards it holds now (memory tiers; for NVMe the node's shards).
    pub entries: u64,
    /// Reads it served.
    pub hits: u64,
    /// Reads that asked it and went on to the next tier down (NVMe never misses a shard
    /// it holds).
    pub misses: u64,
    /// Shards that entered it from a lower tier.
    pub promotions: u64,
    /// Shards that left it for a lower tier (evictions).
    pub demotions: u64,
    /// What backs it: `heap`, `anonymous`, the mapped path, or `chunk store`.
    pub backing: String,
}

/// Every tier of a node, in `/api/v1/cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TiersView {
    /// DRAM, CXL, NVMe, top down.
    pub tiers: Vec<TierView>,
    /// Reads of one shard within this window count towards its promotion.
    pub promote_window_ms: u64,
    /// Reads within the window that promote a shard into DRAM.
    pub promote_hits: u32,
    /// CXL memory found on this machine.
    pub cxl_hardware: CxlHardware,
}

impl TiersView {
    /// The view of `name`, if listed.
    pub fn tier(&self, name: TierName) -> Option<&TierView> {
        self.tiers.iter().find(|view| view.tier == name)
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn counted(
    tier: TierName,
    counters: &TierCounters,
    backing: String,
    sizes: (u64, u64, u64),
) -> TierView {
    let (capacity_bytes, bytes, entries) = sizes;
    TierView {
        tier,
        enabled: true,
        capacity_bytes,
        bytes,
        entries,
        hits: load(&counters.hits),
        misses: load(&counters.misses),
        promotions: load(&counters.promotions),
        demotions: load(&counters.demotions),
        backing,
    }
}

fn memory_view(tier: TierName, memory: Option<&MemoryTier>, backing: String) -> TierView {
    match memory {
        Some(memory) => counted(
            tier,
            &memory.counters,
            backing,
            (
                memory.capacity_bytes(),
                memory.used_bytes(),
                memory.entries(),
            ),
        ),
        None => TierView {
            tier,
            enabled: false,
            capacity_bytes: 0,
            bytes: 0,
            entries: 0,
            hits: 0,
            misses: 0,
            promotions: 0,
            demotions: 0,
            backing: "off".to_owned(),
        },
    }
}

impl Tiers {
    /// The view, with the NVMe tier's sizes from the store (`live_bytes`, `shards`).
    pub fn view(&self, nvme_bytes: u64, nvme_shards: u64) -> TiersView {
        let cxl_backing = self
            .cxl()
            .and_then(MemoryTier::region_path)
            .map_or("anonymous".to_owned(), |path| path.display().to_string());
        TiersView {
            tiers: vec![
                memory_view(TierName::Dram, self.dram(), "heap".to_owned()),
                memory_view(TierName::Cxl, self.cxl(), cxl_backing),
                counted(
                    TierName::Nvme,
                    &self.nvme,
                    "chunk store".to_owned(),
                    (0, nvme_bytes, nvme_shards),
                ),
            ],
            promote_window_ms: self.config().promote_window_ms,
            promote_hits: self.config().promote_hits,
            cxl_hardware: self.cxl_hardware.clone(),
        }
    }
}

/// Appends the `nabu_tier_*` families (one series per tier) and `nabu_cxl_present`.
pub fn render_metrics(view: &TiersView, out: &mut String) {
    type Field = fn(&TierView) -> u64;
    let families: [(&str, &str, &str, Field); 7] = [
        (
            "nabu_tier_capacity_bytes",
            "gauge",
            "A memory tier's capacity (0 when off; NVMe: see nabu_store_*).",
            |view| view.capacity_bytes,
        ),
        (
            "nabu_tier_bytes",
            "gauge",
            "Bytes a tier holds now (NVMe: the store's live bytes).",
            |view| view.bytes,
        ),
        (
            "nabu_tier_entries",
            "gauge",
            "Shards a tier holds now.",
            |view| view.entries,
        ),
        (
            "nabu_tier_hits_total",
            "counter",
            "Shard reads a tier served.",
            |view| view.hits,
        ),
        (
            "nabu_tier_misses_total",
            "counter",
            "Shard reads that asked a tier and went on to the next one down.",
            |view| view.misses,
        ),
        (
            "nabu_tier_promotions_total",
            "counter",
            "Shards that entered a tier from a lower one.",
            |view| view.promotions,
        ),
        (
            "nabu_tier_demotions_total",
            "counter",
            "Shards evicted from a tier to a lower one (or dropped: NVMe holds them).",
            |view| view.demotions,
        ),
    ];
    for (name, kind, help, field) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for tier in &view.tiers {
            let _ = writeln!(
                out,
                "{name}{{tier=\"{}\"}} {}",
                tier.tier.label(),
                field(tier)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP nabu_cxl_present 1 if this machine has CXL memory (sysfs), else 0."
    );
    let _ = writeln!(out, "# TYPE nabu_cxl_present gauge");
    let _ = writeln!(
        out,
        "nabu_cxl_present {}",
        u8::from(view.cxl_hardware.present)
    );
}
