//! What each RESP command does, with Redis's reply bytes and error texts (the ones clients
//! match on: `NOAUTH`, `WRONGPASS`, `ERR unknown command`, `ERR wrong number of arguments`).
//! Every key goes to its owner node through [`crate::kv::route`].

use std::sync::Arc;

use bytes::Bytes;
use nabu_client::KvItem;
use nabu_proto::ops::{KEY_BYTES_MAX, KvCondition, KvPutOutcome, KvTtlAction};

use super::reply::Replies;
use crate::kv::route::{self, RouteError};
use crate::node::Node;

/// The namespace the RESP gateway serves.
pub const RESP_NAMESPACE: &str = "kv";
/// The Redis version the gateway reports (HELLO, INFO): the command set it follows.
pub const REDIS_VERSION: &str = "7.2.0";

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// Whether AUTH (or HELLO … AUTH) succeeded.
    pub authenticated: bool,
    /// 2 or 3 (HELLO).
    pub protocol: u8,
    /// CLIENT SETNAME / HELLO SETNAME.
    pub name: Option<Bytes>,
    /// The connection's id (CLIENT ID, HELLO).
    pub id: u64,
    /// QUIT was received: close after the reply.
    pub quit: bool,
}

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn lower(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_lowercase()
}

fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// Redis's unknown-command text: the name and the first arguments, quoted, each cut short.
fn unknown_command(args: &[Bytes]) -> String {
    let show = |arg: &Bytes| {
        let text = String::from_utf8_lossy(&arg[..arg.len().min(128)]).replace(['\r', '\n'], " ");
        format!("'{text}'")
    };
    let rest: Vec<String> = args[1..].iter().take(8).map(show).collect();
    format!(
        "ERR unknown command {}, with args beginning with: {}",
        show(&args[0]),
        rest.iter().map(|a| format!("{a} ")).collect::<String>()
    )
}

/// Compares secrets in time independent of where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn parse_integer(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// Checks a key: 1..=1,024 bytes.
fn check_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("ERR empty keys are not supported by this server".into());
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "ERR key of {} bytes is over the limit of {KEY_BYTES_MAX}",
            key.len()
        ));
    }
    Ok(())
}

fn route_error(error: &RouteError) -> String {
    format!("ERR {error}")
}

/// Runs one command and appends its reply.
pub async fn dispatch(
    node: &Arc<Node>,
    session: &mut Session,
    args: Vec<Bytes>,
    replies: &mut Replies,
) {
    let name = lower(&args[0]);
    let counters = &node.resp_metrics;
    counters
        .commands_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let before_auth = matches!(name.as_str(), "auth" | "hello" | "quit");
    let result = if !session.authenticated && !before_auth {
        Err(NOAUTH.to_owned())
    } else {
        run(node, session, &name, &args, replies).await
    };
    if let Err(message) = result {
        counters
            .errors_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        replies.error(&message);
    }
}

async fn run(
    node: &Arc<Node>,
    session: &mut Session,
    name: &str,
    args: &[Bytes],
    replies: &mut Replies,
) -> Result<(), String> {
    let arity = |ok: bool| if ok { Ok(()) } else { Err(wrong_arity(name)) };
    match name {
        "ping" => {
            arity(args.len() <= 2)?;
            match args.get(1) {
                Some(message) => replies.bulk(message.clone()),
                None => replies.simple("PONG"),
            }
        }
        "echo" => {
            arity(args.len() == 2)?;
            replies.bulk(args[1].clone());
        }
        "quit" => {
            session.quit = true;
            replies.ok();
        }
        "auth" => auth(node, session, args, replies)?,
        "hello" => hello(node, session, args, replies)?,
        "select" => {
            arity(args.len() == 2)?;
            match parse_integer(&args[1]) {
                Some(0) => replies.ok(),
                Some(_) => return Err("ERR DB index is out of range".into()),
                None => return Err(NOT_INTEGER.into()),
            }
        }
        "client" => client(session, args, replies)?,
        "command" => replies.array(0),
        "get" => {
            arity(args.len() == 2)?;
            check_key(&args[1])?;
            let mut values = route::get(node, RESP_NAMESPACE, &[args[1].to_vec()])
                .await
                .map_err(|e| route_error(&e))?;
            replies.bulk_or_null(values.pop().flatten());
        }
        "mget" => {
            arity(args.len() >= 2)?;
            let keys = keys_of(&args[1..])?;
            let values = route::get(node, RESP_NAMESPACE, &keys)
                .await
                .map_err(|e| route_error(&e))?;
            replies.array(values.len());
            values
                .into_iter()
                .for_each(|value| replies.bulk_or_null(value));
        }
        "set" => set(node, args, replies).await?,
        "setex" | "psetex" => {
            arity(args.len() == 4)?;
            let unit = if name == "setex" { 1000 } else { 1 };
            let ttl = parse_integer(&args[2]).ok_or(NOT_INTEGER)?;
            if ttl <= 0 {
                return Err(format!("ERR invalid expire time in '{name}' command"));
            }
            check_key(&args[1])?;
            let mut item = KvItem::new(args[1].to_vec(), owned_value(&args[3]));
            item.ttl_ms = (ttl as u64).saturating_mul(unit);
            route::put(node, RESP_NAMESPACE, vec![item])
                .await
                .map_err(|e| route_error(&e))?;
            replies.ok();
        }
        "mset" => {
            arity(args.len() >= 3 && !args.len().is_multiple_of(2))?;
            // The last value of a key given twice wins, as in Redis.
            let mut items: Vec<KvItem> = Vec::with_capacity(args.len() / 2);
            for pair in args[1..].chunks(2) {
                check_key(&pair[0])?;
                items.retain(|item| item.key != pair[0]);
                items.push(KvItem::new(pair[0].to_vec(), owned_value(&pair[1])));
            }
            route::put(node, RESP_NAMESPACE, items)
                .await
                .map_err(|e| route_error(&e))?;
            replies.ok();
        }
        "exists" => {
            arity(args.len() >= 2)?;
            let keys = keys_of(&args[1..])?;
            let found = route::exists(node, RESP_NAMESPACE, &keys, 0)
                .await
                .map_err(|e| route_error(&e))?;
            replies.integer(found.iter().filter(|&&exists| exists).count() as i64);
        }
        "del" | "unlink" => {
            arity(args.len() >= 2)?;
            let mut keys = keys_of(&args[1..])?;
            keys.sort();
            keys.dedup();
            let deleted = route::delete(node, RESP_NAMESPACE, &keys)
                .await
                .map_err(|e| route_error(&e))?;
            replies.integer(deleted as i64);
        }
        "ttl" | "pttl" => {
            arity(args.len() == 2)?;
            check_key(&args[1])?;
            let reply = route::ttl(node, RESP_NAMESPACE, &args[1], KvTtlAction::Read, 0)
                .await
                .map_err(|e| route_error(&e))?;
            let value = match (reply.exists, reply.has_ttl) {
                (false, _) => -2,
                (true, false) => -1,
                (true, true) if name == "ttl" => reply.ttl_ms.div_ceil(1000) as i64,
                (true, true) => reply.ttl_ms as i64,
            };
            replies.integer(value);
        }
        "expire" | "pexpire" => {
            arity(args.len() == 3)?;
            check_key(&args[1])?;
            let amount = parse_integer(&args[2]).ok_or(NOT_INTEGER)?;
            let unit = if name == "expire" { 1000 } else { 1 };
            let ttl_ms = u64::try_from(amount).unwrap_or(0).saturating_mul(unit);
            // A time that is not positive deletes the key; the reply says whether it existed.
            let existed = if ttl_ms == 0 {
                let before = route::ttl(node, RESP_NAMESPACE, &args[1], KvTtlAction::Read, 0)
                    .await
                    .map_err(|e| route_error(&e))?;
                if before.exists {
                    route::ttl(node, RESP_NAMESPACE, &args[1], KvTtlAction::Set, 0)
                        .await
                        .map_err(|e| route_error(&e))?;
                }
                before.exists
            } else {
                route::ttl(node, RESP_NAMESPACE, &args[1], KvTtlAction::Set, ttl_ms)
                    .await
                    .map_err(|e| route_error(&e))?
                    .exists
            };
            replies.integer(i64::from(existed));
        }
        "persist" => {
            arity(args.len() == 2)?;
            check_key(&args[1])?;
            let before = route::ttl(node, RESP_NAMESPACE, &args[1], KvTtlAction::Read, 0)
                .await
                .map_err(|e| route_error(&e))?;
            if before.exists && before.has_ttl {
                route::ttl(node, RESP_NAMESPACE, &args[1], KvTtlAction::Persist, 0)
                    .await
                    .map_err(|e| route_error(&e))?;
                replies.integer(1);
            } else {
                replies.integer(0);
            }
        }
        "dbsize" => {
            arity(args.len() == 1)?;
            let total = route::dbsize(node, RESP_NAMESPACE)
                .await
                .map_err(|e| route_error(&e))?;
            replies.integer(total as i64);
        }
        "scan" => scan(node, args, replies).await?,
        "info" => info(node, replies).await?,
        _ => return Err(unknown_command(args)),
    }
    Ok(())
}

/// A value to store: large values are already slices of their own buffer (the connection
/// reads them into place); small ones are copied out of the shared read buffer, so a stored
/// 4 KiB value never keeps a 64 KiB read buffer alive.
fn owned_value(value: &Bytes) -> Bytes {
    if value.len() >= super::reply::LARGE_VALUE_BYTES {
        value.clone()
    } else {
        Bytes::copy_from_slice(value)
    }
}

fn keys_of(args: &[Bytes]) -> Result<Vec<Vec<u8>>, String> {
    args.iter()
        .map(|key| check_key(key).map(|()| key.to_vec()))
        .collect()
}

fn auth(
    node: &Arc<Node>,
    session: &mut Session,
    args: &[Bytes],
    replies: &mut Replies,
) -> Result<(), String> {
    let (user, password) = match args {
        [_, password] => (None, password),
        [_, user, password] => (Some(user), password),
        _ => return Err(wrong_arity("auth")),
    };
    check_password(node, session, user.map(|u| &u[..]), password)?;
    replies.ok();
    Ok(())
}

fn check_password(
    node: &Arc<Node>,
    session: &mut Session,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(), String> {
    let user_ok = user.is_none_or(|user| user == b"default");
    if user_ok && same_secret(password, node.config.resp_password.as_bytes()) {
        session.authenticated = true;
        return Ok(());
    }
    node.resp_metrics
        .auth_failures_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!("RESP authentication failed");
    Err(WRONGPASS.into())
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
fn hello(
    node: &Arc<Node>,
    session: &mut Session,
    args: &[Bytes],
    replies: &mut Replies,
) -> Result<(), String> {
    let mut protocol = session.protocol;
    if let Some(version) = args.get(1) {
        protocol = match parse_integer(version) {
            Some(version @ 2..=3) => version as u8,
            Some(_) => return Err("NOPROTO unsupported protocol version".into()),
            None => return Err("ERR Protocol version is not an integer or out of range".into()),
        };
    }
    let mut at = 2;
    let mut name = None;
    while at < args.len() {
        match lower(&args[at]).as_str() {
            "auth" if at + 2 < args.len() => {
                check_password(node, session, Some(&args[at + 1]), &args[at + 2])?;
                at += 3;
            }
            "setname" if at + 1 < args.len() => {
                name = Some(args[at + 1].clone());
                at += 2;
            }
            _ => {
                return Err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[at])
                ));
            }
        }
    }
    if !session.authenticated {
        return Err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
    }
    if name.is_some() {
        session.name = name;
    }
    session.protocol = protocol;
    replies.protocol = protocol;
    replies.map(7);
    replies.bulk_text("server");
    replies.bulk_text("redis");
    replies.bulk_text("version");
    replies.bulk_text(REDIS_VERSION);
    replies.bulk_text("proto");
    replies.integer(i64::from(protocol));
    replies.bulk_text("id");
    replies.integer(session.id as i64);
    replies.bulk_text("mode");
    replies.bulk_text("standalone");
    replies.bulk_text("role");
    replies.bulk_text("master");
    replies.bulk_text("modules");
    replies.array(0);
    Ok(())
}

/// CLIENT SETINFO / SETNAME / GETNAME / ID; other subcommands are refused as Redis does.
fn client(session: &mut Session, args: &[Bytes], replies: &mut Replies) -> Result<(), String> {
    let Some(sub) = args.get(1) else {
        return Err(wrong_arity("client"));
    };
    match lower(sub).as_str() {
        "setinfo" if args.len() == 4 => replies.ok(),
        "setname" if args.len() == 3 => {
            session.name = Some(args[2].clone());
            replies.ok();
        }
        "getname" if args.len() == 2 => replies.bulk_or_null(session.name.clone()),
        "id" if args.len() == 2 => replies.integer(session.id as i64),
        "setinfo" | "setname" | "getname" | "id" => {
            return Err(format!(
                "ERR wrong number of arguments for 'client|{}' command",
                lower(sub)
            ));
        }
        other => {
            return Err(format!(
                "ERR unknown subcommand '{other}'. Try CLIENT HELP."
            ));
        }
    }
    Ok(())
}

/// `SET key value [NX|XX] [EX s|PX ms|KEEPTTL]`.
async fn set(node: &Arc<Node>, args: &[Bytes], replies: &mut Replies) -> Result<(), String> {
    if args.len() < 3 {
        return Err(wrong_arity("set"));
    }
    check_key(&args[1])?;
    let mut item = KvItem::new(args[1].to_vec(), owned_value(&args[2]));
    let mut at = 3;
    let mut expiry_given = false;
    while at < args.len() {
        let option = lower(&args[at]);
        match option.as_str() {
            "nx" | "xx" if item.condition == KvCondition::Always => {
                item.condition = if option == "nx" {
                    KvCondition::IfAbsent
                } else {
                    KvCondition::IfPresent
                };
                at += 1;
            }
            "ex" | "px" if !expiry_given && at + 1 < args.len() => {
                let amount = parse_integer(&args[at + 1]).ok_or(NOT_INTEGER)?;
                if amount <= 0 {
                    return Err("ERR invalid expire time in 'set' command".into());
                }
                let unit = if option == "ex" { 1000 } else { 1 };
                item.ttl_ms = (amount as u64).saturating_mul(unit);
                expiry_given = true;
                at += 2;
            }
            _ => return Err(SYNTAX.into()),
        }
    }
    let outcome = route::put(node, RESP_NAMESPACE, vec![item])
        .await
        .map_err(|e| route_error(&e))?;
    match outcome.first() {
        Some(KvPutOutcome::ConditionFailed) => replies.null(),
        _ => replies.ok(),
    }
    Ok(())
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE string]`.
async fn scan(node: &Arc<Node>, args: &[Bytes], replies: &mut Replies) -> Result<(), String> {
    if args.len() < 2 || !args.len().is_multiple_of(2) {
        return Err(if args.len() < 2 {
            wrong_arity("scan")
        } else {
            SYNTAX.into()
        });
    }
    let cursor: u64 = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or("ERR invalid cursor")?;
    let mut pattern: Option<Bytes> = None;
    let mut count = 10u32;
    let mut only_strings = true;
    for pair in args[2..].chunks(2) {
        match lower(&pair[0]).as_str() {
            "match" => pattern = Some(pair[1].clone()),
            "count" => {
                count = parse_integer(&pair[1])
                    .filter(|&n| n > 0)
                    .ok_or(NOT_INTEGER)?
                    .min(i64::from(nabu_proto::ops::KV_SCAN_COUNT_MAX))
                    as u32;
            }
            "type" => only_strings = lower(&pair[1]) == "string",
            _ => return Err(SYNTAX.into()),
        }
    }
    let (next, keys) = route::scan(node, RESP_NAMESPACE, cursor, count)
        .await
        .map_err(|e| route_error(&e))?;
    let keys: Vec<Vec<u8>> = keys
        .into_iter()
        .filter(|key| only_strings && pattern.as_ref().is_none_or(|p| glob_match(p, key)))
        .collect();
    replies.array(2);
    replies.bulk_text(&next.to_string());
    replies.array(keys.len());
    keys.into_iter()
        .for_each(|key| replies.bulk(Bytes::from(key)));
    Ok(())
}

/// Redis's glob: `*`, `?`, `[abc]`, `[a-z]`, `[^x]` and `\` escapes.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return text.first() == Some(&b'[') && glob_match(rest, &text[1..]);
            };
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let Some(&byte) = text.first() else {
                return false;
            };
            let (negate, class) = match class.split_first() {
                Some((b'^', class)) => (true, class),
                _ => (false, class),
            };
            let mut matched = false;
            let mut at = 0;
            while at < class.len() {
                if at + 2 < class.len() && class[at + 1] == b'-' {
                    let (low, high) = (class[at].min(class[at + 2]), class[at].max(class[at + 2]));
                    matched |= (low..=high).contains(&byte);
                    at += 3;
                } else {
                    matched |= class[at] == byte;
                    at += 1;
                }
            }
            matched != negate && glob_match(after, &text[1..])
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob_match(&rest[1..], &text[1..])
        }
        Some((&byte, rest)) => text.first() == Some(&byte) && glob_match(rest, &text[1..]),
    }
}

/// INFO: the sections tools read (server, clients, memory, stats, keyspace).
async fn info(node: &Arc<Node>, replies: &mut Replies) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    let keys = route::dbsize(node, RESP_NAMESPACE)
        .await
        .map_err(|e| route_error(&e))?;
    let gauges = node.kv.gauges();
    let counters = &node.kv.counters;
    let text = format!(
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nnabu_node_id:{}\r\n\
         uptime_in_seconds:{}\r\n\r\n# Clients\r\nconnected_clients:{}\r\n\r\n# Memory\r\n\
         used_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:{}\r\n\r\n# Stats\r\n\
         keyspace_hits:{}\r\nkeyspace_misses:{}\r\nevicted_keys:{}\r\nexpired_keys:{}\r\n\r\n\
         # Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n",
        node.id.0,
        node.started.elapsed().as_secs(),
        node.resp_metrics.connections_open.load(Relaxed),
        gauges.used_bytes,
        node.kv.config().capacity_bytes,
        match node.kv.config().policy {
            crate::kv::PolicyKind::S3Fifo => "s3-fifo",
            crate::kv::PolicyKind::Lru => "lru",
        },
        counters.hits.load(Relaxed),
        counters.misses.load(Relaxed),
        counters.evictions.load(Relaxed),
        counters.expirations.load(Relaxed),
    );
    replies.bulk_text(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_redis() {
        for (pattern, text, expected) in [
            (&b"*"[..], &b"anything"[..], true),
            (b"h?llo", b"hello", true),
            (b"h?llo", b"hllo", false),
            (b"h*llo", b"heeeello", true),
            (b"h[ae]llo", b"hallo", true),
            (b"h[^e]llo", b"hello", false),
            (b"h[a-b]llo", b"hbllo", true),
            (b"a\\*b", b"a*b", true),
            (b"a\\*b", b"axb", false),
            (b"*kv_bytes", b"vllm@x@1kv_bytes", true),
        ] {
            assert_eq!(glob_match(pattern, text), expected, "{pattern:?} {text:?}");
        }
    }

    #[test]
    fn unknown_command_text_matches_redis() {
        let args = [Bytes::from_static(b"FOO"), Bytes::from_static(b"a")];
        assert_eq!(
            unknown_command(&args),
            "ERR unknown command 'FOO', with args beginning with: 'a' "
        );
    }
}
