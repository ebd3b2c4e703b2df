//! ListObjectsV2 over the client's ordered listing.
//!
//! Keys come from every node merged in byte order (`Client::list`). With a delimiter, the
//! keys under one common prefix collapse into it, and the listing jumps past them in one
//! step: it continues after `prefix ‖ 0xFF`, since no UTF-8 key continues with byte 0xFF.
//! The gateway's own keys start with 0xFF (see `multipart`), so they sort last and the listing
//! stops at the first of them. The continuation token is the hex of the last key (or jump
//! point) a page covered. A page is cut only once the next entry is seen, so `IsTruncated`
//! is exact.

use nabu_client::{Client, ClientError};
use s3s::dto::*;
use s3s::{S3Result, s3_error};
use tokio::task::JoinSet;

use crate::error::{Missing, s3_error};
use crate::meta;
use crate::multipart::HIDDEN_KEY_BYTE;

/// Keys asked of the cluster per listing round.
const LIST_PAGE_KEYS: u32 = 1000;
/// Most keys one response holds (S3's limit).
const MAX_KEYS_MAX: i32 = 1000;
/// Key records read at once to fill in sizes and ETags.
const STATS_INFLIGHT_MAX: usize = 32;

/// One entry of a listing.
enum Entry {
    Key(String),
    CommonPrefix(String),
}

/// Runs a ListObjectsV2 request on a bucket that exists.
pub async fn list_objects_v2(
    client: &Client,
    input: ListObjectsV2Input,
) -> S3Result<ListObjectsV2Output> {
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let max_keys = input
        .max_keys
        .unwrap_or(MAX_KEYS_MAX)
        .clamp(0, MAX_KEYS_MAX) as usize;
    let url = input
        .encoding_type
        .as_ref()
        .is_some_and(|encoding| encoding.as_str() == EncodingType::URL);
    let cursor: Option<Vec<u8>> = match (&input.continuation_token, &input.start_after) {
        (Some(token), _) => Some(decode_token(token)?),
        (None, Some(after)) if !after.is_empty() => Some(after.as_bytes().to_vec()),
        _ => None,
    };
    let scope = Scope {
        bucket: &input.bucket,
        prefix: &prefix,
        delimiter: delimiter.as_deref(),
    };
    let walked = if max_keys == 0 {
        Walked {
            entries: Vec::new(),
            truncated: false,
            cursor,
        }
    } else {
        walk(client, &scope, cursor, max_keys).await?
    };
    let (entries, truncated, cursor) = (walked.entries, walked.truncated, walked.cursor);
    let keys: Vec<String> = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Key(key) => Some(key.clone()),
            Entry::CommonPrefix(_) => None,
        })
        .collect();
    let contents = stat_keys(client, &input.bucket, keys, url).await?;
    let common_prefixes: Vec<CommonPrefix> = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::CommonPrefix(common) => Some(CommonPrefix {
                prefix: Some(encode(common, url)),
            }),
            Entry::Key(_) => None,
        })
        .collect();
    let key_count = (contents.len() + common_prefixes.len()) as i32;
    Ok(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(encode(&prefix, url)),
        delimiter: delimiter.map(|d| encode(&d, url)),
        max_keys: Some(max_keys as i32),
        key_count: Some(key_count),
        continuation_token: input.continuation_token,
        start_after: input.start_after.map(|after| encode(&after, url)),
        is_truncated: Some(truncated),
        next_continuation_token: truncated.then(|| encode_token(cursor.as_deref().unwrap_or(b""))),
        contents: Some(contents),
        common_prefixes: Some(common_prefixes),
        encoding_type: input.encoding_type,
        ..ListObjectsV2Output::default()
    })
}

/// Up to `want` live keys of `namespace` starting with `prefix`, after `after`, and whether
/// more may follow. A page of the client's listing can hold fewer keys than asked (deleted
/// keys count against a node's page), so this follows continuations until it has enough.
pub(crate) async fn list_keys(
    client: &Client,
    namespace: &str,
    prefix: &[u8],
    after: Option<Vec<u8>>,
    want: usize,
) -> Result<(Vec<nabu_client::ListedKey>, bool), ClientError> {
    let mut keys = Vec::new();
    let mut cursor = after;
    while keys.len() < want {
        let limit = (want - keys.len()).clamp(1, LIST_PAGE_KEYS as usize) as u32;
        let page = client
            .list(namespace, prefix, cursor.as_deref(), limit)
            .await?;
        keys.extend(page.keys);
        match page.continuation {
            Some(next) => cursor = Some(next),
            None => return Ok((keys, false)),
        }
    }
    Ok((keys, true))
}

/// What one listing covers.
struct Scope<'a> {
    bucket: &'a str,
    prefix: &'a str,
    delimiter: Option<&'a str>,
}

/// The entries of one response.
struct Walked {
    entries: Vec<Entry>,
    /// Whether another entry follows the last one.
    truncated: bool,
    /// The last key (or jump point) the entries cover.
    cursor: Option<Vec<u8>>,
}

/// Walks the keys after `cursor` until `max_keys` (≥ 1) entries and the sight of one more,
/// or the end (see the module docs).
async fn walk(
    client: &Client,
    scope: &Scope<'_>,
    mut cursor: Option<Vec<u8>>,
    max_keys: usize,
) -> S3Result<Walked> {
    let mut entries = Vec::new();
    loop {
        let page = client
            .list(
                scope.bucket,
                scope.prefix.as_bytes(),
                cursor.as_deref(),
                LIST_PAGE_KEYS,
            )
            .await
            .map_err(|error| s3_error(error, Missing::Bucket))?;
        let mut jumped = false;
        for listed in &page.keys {
            let done = |entries, truncated, cursor| Walked {
                entries,
                truncated,
                cursor,
            };
            if listed.key.first() == Some(&HIDDEN_KEY_BYTE) {
                return Ok(done(entries, false, cursor));
            }
            let Ok(key) = std::str::from_utf8(&listed.key) else {
                // Not an S3 key (written by another tool): skip it.
                cursor = Some(listed.key.clone());
                continue;
            };
            if entries.len() == max_keys {
                return Ok(done(entries, true, cursor));
            }
            match common_prefix(key, scope.prefix, scope.delimiter) {
                Some(common) => {
                    let mut jump = common.clone().into_bytes();
                    jump.push(HIDDEN_KEY_BYTE);
                    cursor = Some(jump);
                    entries.push(Entry::CommonPrefix(common));
                    jumped = true;
                    break;
                }
                None => {
                    cursor = Some(listed.key.clone());
                    entries.push(Entry::Key(key.to_owned()));
                }
            }
        }
        if jumped {
            continue;
        }
        match page.continuation {
            Some(next) => cursor = Some(next),
            None => {
                return Ok(Walked {
                    entries,
                    truncated: false,
                    cursor,
                });
            }
        }
    }
}

/// The common prefix `key` rolls up into: up to and including the first `delimiter` after
/// `prefix`.
fn common_prefix(key: &str, prefix: &str, delimiter: Option<&str>) -> Option<String> {
    let delimiter = delimiter?;
    let rest = key.get(prefix.len()..)?;
    let at = rest.find(delimiter)?;
    Some(key[..prefix.len() + at + delimiter.len()].to_owned())
}

/// The listing entries of `keys` with size, ETag and date (keys deleted meanwhile drop out).
async fn stat_keys(
    client: &Client,
    bucket: &str,
    keys: Vec<String>,
    url: bool,
) -> S3Result<Vec<Object>> {
    let mut found: Vec<Option<Object>> = vec![None; keys.len()];
    let mut tasks = JoinSet::new();
    let mut pending = keys.into_iter().enumerate();
    loop {
        while tasks.len() < STATS_INFLIGHT_MAX {
            let Some((slot, key)) = pending.next() else {
                break;
            };
            let (client, bucket) = (client.clone(), bucket.to_owned());
            tasks.spawn(async move {
                let info = client.stat(&bucket, key.as_bytes()).await;
                (slot, key, info)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined.expect("stat task panicked") {
            (slot, key, Ok(info)) => {
                found[slot] = Some(Object {
                    key: Some(encode(&key, url)),
                    size: Some(info.size as i64),
                    e_tag: Some(meta::etag(&info.blob_id)),
                    last_modified: Some(meta::timestamp(info.hlc_timestamp)),
                    storage_class: Some(ObjectStorageClass::from_static(
                        ObjectStorageClass::STANDARD,
                    )),
                    ..Object::default()
                });
            }
            (_, _, Err(ClientError::NotFound(_))) => {}
            (_, _, Err(error)) => return Err(s3_error(error, Missing::Key)),
        }
    }
    Ok(found.into_iter().flatten().collect())
}

/// `encoding-type=url`: percent-encodes all but unreserved characters and `/`.
fn encode(text: &str, url: bool) -> String {
    if !url {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn encode_token(cursor: &[u8]) -> String {
    cursor.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_token(token: &str) -> S3Result<Vec<u8>> {
    let invalid = || {
        s3_error!(
            InvalidArgument,
            "The continuation token provided is incorrect"
        )
    };
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    (0..token.len())
        .step_by(2)
        .map(|at| {
            token
                .get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(invalid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let cursor = b"a/b\xff".to_vec();
        assert_eq!(decode_token(&encode_token(&cursor)).unwrap(), cursor);
        assert!(decode_token("zz").is_err());
        assert!(decode_token("abc").is_err());
    }

    #[test]
    fn keys_roll_up_to_the_first_delimiter_after_the_prefix() {
        assert_eq!(
            common_prefix("a/b/c", "a/", Some("/")).as_deref(),
            Some("a/b/")
        );
        assert_eq!(common_prefix("a/b", "a/", Some("/")), None);
        assert_eq!(common_prefix("a/b/c", "", None), None);
        assert_eq!(
            common_prefix("x--y--z", "", Some("--")).as_deref(),
            Some("x--")
        );
    }

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved_characters() {
        assert_eq!(encode("a b/ü+c", true), "a%20b/%C3%BC%2Bc");
        assert_eq!(encode("a b", false), "a b");
    }
}
