//! Merging the listing pages of many nodes into one page (pure, unit-tested).
//!
//! Every node returns its key records after the continuation, in key order, at most `limit`
//! of them, tombstones included. A node whose page was cut short (it returned a continuation)
//! has only been read up to its last key, so the merged page may go no further than the
//! smallest such last key: beyond it a newer record (or a tombstone) may still be waiting on
//! that node. Within that bound each key keeps its newest record (last writer wins), deleted
//! keys are dropped, and the page holds at most `limit` live keys. The continuation handed
//! back is the last key the page covered; nodes are asked for keys after it next time.

use std::collections::BTreeMap;

use nabu_proto::ops::ListEntry;

use crate::client::{ListPage, ListedKey};

/// Merges per-node pages `(entries, node continuation)` into one page of at most `limit` keys.
pub(crate) fn merge_pages(pages: Vec<(Vec<ListEntry>, Vec<u8>)>, limit: usize) -> ListPage {
    let cut: Option<Vec<u8>> = pages
        .iter()
        .filter(|(_, continuation)| !continuation.is_empty())
        .filter_map(|(entries, _)| entries.last().map(|entry| entry.key.clone()))
        .min();
    let mut newest: BTreeMap<Vec<u8>, ListEntry> = BTreeMap::new();
    for entry in pages.into_iter().flat_map(|(entries, _)| entries) {
        if cut.as_ref().is_some_and(|cut| &entry.key > cut) {
            continue;
        }
        match newest.get(&entry.key) {
            Some(kept) if kept.hlc_timestamp >= entry.hlc_timestamp => {}
            _ => {
                newest.insert(entry.key.clone(), entry);
            }
        }
    }
    let mut keys: Vec<ListedKey> = Vec::new();
    for (key, entry) in newest {
        if keys.len() == limit {
            let continuation = keys.last().map(|last| last.key.clone());
            return ListPage { keys, continuation };
        }
        if !entry.deleted {
            keys.push(ListedKey {
                key,
                hlc_timestamp: entry.hlc_timestamp,
            });
        }
    }
    ListPage {
        keys,
        continuation: cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, hlc: u64, deleted: bool) -> ListEntry {
        ListEntry {
            key: key.as_bytes().to_vec(),
            hlc_timestamp: hlc,
            deleted,
            value_bytes: if deleted { 0 } else { 60 },
        }
    }

    fn keys(page: &ListPage) -> Vec<&str> {
        page.keys
            .iter()
            .map(|k| std::str::from_utf8(&k.key).unwrap())
            .collect()
    }

    #[test]
    fn newest_record_wins_and_tombstones_hide_keys() {
        let pages = vec![
            (vec![entry("a", 1, false), entry("b", 5, false)], vec![]),
            (vec![entry("a", 2, true), entry("b", 4, true)], vec![]),
            (vec![entry("c", 1, false)], vec![]),
        ];
        let page = merge_pages(pages, 10);
        assert_eq!(keys(&page), ["b", "c"]);
        assert_eq!(page.keys[0].hlc_timestamp, 5);
        assert_eq!(page.continuation, None);
    }

    #[test]
    fn a_truncated_node_bounds_the_page() {
        // Node 1 stopped at "b": node 2's "c" and "d" wait for the next page, since node 1
        // may hold a newer tombstone for them.
        let pages = vec![
            (
                vec![entry("a", 1, false), entry("b", 1, false)],
                b"b".to_vec(),
            ),
            (vec![entry("c", 1, false), entry("d", 1, false)], vec![]),
        ];
        let page = merge_pages(pages, 10);
        assert_eq!(keys(&page), ["a", "b"]);
        assert_eq!(page.continuation, Some(b"b".to_vec()));
    }

    #[test]
    fn the_limit_cuts_the_page_after_the_last_key() {
        let pages = vec![(
            vec![
                entry("a", 1, false),
                entry("b", 1, true),
                entry("c", 1, false),
            ],
            vec![],
        )];
        let page = merge_pages(pages, 1);
        assert_eq!(keys(&page), ["a"]);
        assert_eq!(page.continuation, Some(b"a".to_vec()));
    }
}
