//! CXL memory detection from sysfs.
//!
//! Two signs, either enough: devices on the CXL bus (`/sys/bus/cxl/devices/*`: memory
//! devices `memN`, ports, decoders, regions) and memory-only NUMA nodes
//! (`/sys/devices/system/node/nodeN` with memory in its `meminfo` but no CPU in its
//! `cpulist`), which is how the kernel onlines CXL memory as system RAM. The root is a
//! parameter so tests run against a fake sysfs tree; the node passes `/`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What [`detect_cxl`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CxlHardware {
    /// Whether this machine has CXL memory (either sign below).
    pub present: bool,
    /// Entries of `/sys/bus/cxl/devices`, sorted (e.g. `mem0`, `region0`).
    pub devices: Vec<String>,
    /// Memory-only NUMA nodes: `(node id, MemTotal bytes)`, by id.
    pub memory_only_numa_nodes: Vec<(u32, u64)>,
}

/// Looks for CXL memory under `root` (`/` on a real machine). Missing or unreadable files
/// count as absent: detection never fails.
pub fn detect_cxl(root: &Path) -> CxlHardware {
    let mut devices: Vec<String> = std::fs::read_dir(root.join("sys/bus/cxl/devices"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    devices.sort();
    let mut memory_only_numa_nodes: Vec<(u32, u64)> =
        std::fs::read_dir(root.join("sys/devices/system/node"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let id: u32 = name.strip_prefix("node")?.parse().ok()?;
                let cpus =
                    std::fs::read_to_string(entry.path().join("cpulist")).unwrap_or_default();
                let memory = node_memory_bytes(&entry.path().join("meminfo"))?;
                (cpus.trim().is_empty() && memory > 0).then_some((id, memory))
            })
            .collect();
    memory_only_numa_nodes.sort_unstable();
    CxlHardware {
        present: !devices.is_empty() || !memory_only_numa_nodes.is_empty(),
        devices,
        memory_only_numa_nodes,
    }
}

/// `MemTotal` of a NUMA node's `meminfo` (`Node 2 MemTotal:   16777216 kB`).
fn node_memory_bytes(meminfo: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(meminfo).ok()?;
    let line = text.lines().find(|line| line.contains("MemTotal:"))?;
    let kib: u64 = line
        .split_once("MemTotal:")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numa_node(root: &Path, id: u32, cpulist: &str, mem_kib: u64) {
        let dir = root.join(format!("sys/devices/system/node/node{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpulist"), cpulist).unwrap();
        let meminfo = format!("Node {id} MemTotal:       {mem_kib} kB\nNode {id} MemFree: 1 kB\n");
        std::fs::write(dir.join("meminfo"), meminfo).unwrap();
    }

    #[test]
    fn a_machine_without_cxl_has_none() {
        let root = tempfile::tempdir().unwrap();
        numa_node(root.path(), 0, "0-7\n", 64 << 20);
        assert_eq!(detect_cxl(root.path()), CxlHardware::default());
        // An empty root (no sysfs at all) is the same.
        assert!(!detect_cxl(&root.path().join("missing")).present);
    }

    #[test]
    fn cxl_bus_devices_and_memory_only_numa_nodes_are_found() {
        let root = tempfile::tempdir().unwrap();
        numa_node(root.path(), 0, "0-7\n", 64 << 20);
        // A memory-only node (CXL memory onlined as system RAM), and a CPU-less node
        // without memory (not memory: ignored).
        numa_node(root.path(), 2, "\n", 16 << 20);
        numa_node(root.path(), 3, "", 0);
        let memory_only = detect_cxl(root.path());
        assert!(memory_only.present);
        assert_eq!(memory_only.memory_only_numa_nodes, [(2, 16 << 30)]);
        assert!(memory_only.devices.is_empty());
        for device in ["mem0", "decoder0.0", "region0"] {
            std::fs::create_dir_all(root.path().join("sys/bus/cxl/devices").join(device)).unwrap();
        }
        let both = detect_cxl(root.path());
        assert_eq!(both.devices, ["decoder0.0", "mem0", "region0"]);
        assert_eq!(both.memory_only_numa_nodes, [(2, 16 << 30)]);
    }
}
