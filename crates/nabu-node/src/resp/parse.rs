//! The RESP request parser: multibulk commands (`*N\r\n$len\r\narg\r\n…`, what every client
//! library sends) and inline commands (`PING\r\n`, what a person types into `telnet`).
//!
//! **Why hand-written.** A KV chunk is tens of MB; the parser must neither copy it nor rescan
//! it. [`parse`] reads only the length lines: given a buffer, it either cuts one complete
//! command off the front (its arguments are slices of one frozen buffer, no copy) or says how
//! many bytes the command needs in all ([`Parsed::Incomplete`]), so the connection reserves
//! exactly that and reads the value straight into place. Every length is checked against its
//! limit before anything is reserved, so a hostile length costs nothing.

use bytes::{Bytes, BytesMut};

/// The parser's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// The most arguments one command has.
    pub args_max: usize,
    /// The longest argument (a bulk string).
    pub bulk_bytes_max: usize,
    /// The most bytes one whole command takes.
    pub command_bytes_max: usize,
}

/// The longest inline command or length line.
pub const INLINE_BYTES_MAX: usize = 64 << 10;

/// What [`parse`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command: its arguments (the first is the command name).
    Command(Vec<Bytes>),
    /// Not yet a whole command; it needs at least this many bytes in the buffer (a lower
    /// bound while length lines are still missing).
    Incomplete(usize),
}

/// Input that is not RESP, or over a limit: the connection answers `-ERR Protocol error: …`
/// and closes, as Redis does (the byte stream cannot be resynchronised).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn error(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// Finds the `\r\n` ending the line that starts at `start`: the index of `\r`.
fn line_end(buffer: &[u8], start: usize) -> Result<Option<usize>, ProtocolError> {
    let window = &buffer[start..buffer.len().min(start + INLINE_BYTES_MAX + 2)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(at) => Ok(Some(start + at)),
        None if window.len() >= INLINE_BYTES_MAX + 2 => Err(error("too big inline request")),
        None => Ok(None),
    }
}

/// Parses the decimal after a type byte (`*3`, `$5`), as Redis does: digits with an
/// optional leading `-`.
fn parse_length(line: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .filter(|text| !text.is_empty() && text.len() <= 20)
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| error(format!("invalid {what} length")))
}

/// Cuts one command off the front of `buffer`, if it holds a whole one.
pub fn parse(buffer: &mut BytesMut, limits: &ParseLimits) -> Result<Parsed, ProtocolError> {
    match buffer.first() {
        None => Ok(Parsed::Incomplete(1)),
        Some(b'*') => parse_multibulk(buffer, limits),
        Some(_) => parse_inline(buffer),
    }
}

fn parse_multibulk(buffer: &mut BytesMut, limits: &ParseLimits) -> Result<Parsed, ProtocolError> {
    let Some(end) = line_end(buffer, 0)? else {
        return Ok(Parsed::Incomplete(buffer.len() + 1));
    };
    let count = parse_length(&buffer[1..end], "multibulk")?;
    if count > limits.args_max as i64 {
        return Err(error("invalid multibulk length"));
    }
    if count <= 0 {
        // `*0` and `*-1` are empty commands: skipped, as Redis does.
        let _ = buffer.split_to(end + 2);
        return Ok(Parsed::Command(Vec::new()));
    }
    let count = count as usize;
    let mut at = end + 2;
    let mut spans = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        if at >= buffer.len() {
            return Ok(Parsed::Incomplete(at + 1));
        }
        if buffer[at] != b'$' {
            return Err(error(format!(
                "expected '$', got '{}'",
                char::from(buffer[at]).escape_default()
            )));
        }
        let Some(end) = line_end(buffer, at)? else {
            return Ok(Parsed::Incomplete(buffer.len() + 1));
        };
        let length = parse_length(&buffer[at + 1..end], "bulk")?;
        if length < 0 || length > limits.bulk_bytes_max as i64 {
            return Err(error("invalid bulk length"));
        }
        let start = end + 2;
        let stop = start + length as usize;
        if stop + 2 > limits.command_bytes_max {
            return Err(error("command over the size limit"));
        }
        if stop + 2 > buffer.len() {
            return Ok(Parsed::Incomplete(stop + 2));
        }
        if &buffer[stop..stop + 2] != b"\r\n" {
            return Err(error("bulk string not followed by CRLF"));
        }
        spans.push(start..stop);
        at = stop + 2;
    }
    let command = buffer.split_to(at).freeze();
    Ok(Parsed::Command(
        spans.into_iter().map(|span| command.slice(span)).collect(),
    ))
}

fn parse_inline(buffer: &mut BytesMut) -> Result<Parsed, ProtocolError> {
    let newline = buffer
        .iter()
        .take(INLINE_BYTES_MAX + 1)
        .position(|&byte| byte == b'\n');
    let Some(newline) = newline else {
        if buffer.len() > INLINE_BYTES_MAX {
            return Err(error("too big inline request"));
        }
        return Ok(Parsed::Incomplete(buffer.len() + 1));
    };
    let line = buffer.split_to(newline + 1).freeze();
    let text = line.slice(..newline);
    let text = text
        .strip_suffix(b"\r")
        .map_or(text.clone(), |t| text.slice(..t.len()));
    let mut args = Vec::new();
    let mut start = None;
    for (index, &byte) in text.iter().enumerate() {
        match (byte.is_ascii_whitespace(), start) {
            (true, Some(from)) => {
                args.push(text.slice(from..index));
                start = None;
            }
            (false, None) => start = Some(index),
            _ => {}
        }
    }
    if let Some(from) = start {
        args.push(text.slice(from..));
    }
    Ok(Parsed::Command(args))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: ParseLimits = ParseLimits {
        args_max: 1024,
        bulk_bytes_max: 1 << 20,
        command_bytes_max: 2 << 20,
    };

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn command(args: &[&[u8]]) -> Parsed {
        Parsed::Command(args.iter().map(|a| Bytes::copy_from_slice(a)).collect())
    }

    #[test]
    fn multibulk_and_inline_commands_parse_and_leave_the_rest() {
        let mut buffer = BytesMut::from(&encode(&[b"SET", b"k", b"v\r\n"])[..]);
        buffer.extend_from_slice(b"PING\r\n  get   x \n");
        assert_eq!(
            parse(&mut buffer, &LIMITS).unwrap(),
            command(&[b"SET", b"k", b"v\r\n"])
        );
        assert_eq!(parse(&mut buffer, &LIMITS).unwrap(), command(&[b"PING"]));
        assert_eq!(
            parse(&mut buffer, &LIMITS).unwrap(),
            command(&[b"get", b"x"])
        );
        assert_eq!(parse(&mut buffer, &LIMITS).unwrap(), Parsed::Incomplete(1));
    }

    #[test]
    fn incomplete_commands_say_how_much_they_need() {
        let whole = encode(&[b"SET", b"key", &[7u8; 1000]]);
        let mut buffer = BytesMut::from(&whole[..30]);
        assert_eq!(
            parse(&mut buffer, &LIMITS).unwrap(),
            Parsed::Incomplete(whole.len())
        );
        assert_eq!(buffer.len(), 30, "nothing is consumed");
    }

    #[test]
    fn bad_and_oversized_input_is_a_protocol_error() {
        for bad in [
            &b"*2\r\n$3\r\nGET\r\n:1\r\n"[..],
            b"*1\r\n$-5\r\n",
            b"*x\r\n",
            b"*1\r\n$3\r\nGETxx",
            b"*99999999\r\n",
            b"*1\r\n$2000000\r\n",
        ] {
            let mut buffer = BytesMut::from(bad);
            assert!(parse(&mut buffer, &LIMITS).is_err(), "{bad:?}");
        }
        let mut long_inline = BytesMut::from(&vec![b'a'; INLINE_BYTES_MAX + 10][..]);
        assert!(parse(&mut long_inline, &LIMITS).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any commands, encoded and cut anywhere, parse back exactly; a prefix never parses
        /// to anything but Incomplete.
        #[test]
        fn encoded_commands_round_trip_through_any_split(
            commands in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..5), 1..4),
            cut in 0usize..1000,
        ) {
            let mut wire = Vec::new();
            for args in &commands {
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                wire.extend(encode(&args));
            }
            let cut = cut.min(wire.len());
            let mut buffer = BytesMut::from(&wire[..cut]);
            let mut parsed = Vec::new();
            loop {
                match parse(&mut buffer, &LIMITS).unwrap() {
                    Parsed::Command(args) => parsed.push(args),
                    Parsed::Incomplete(need) => {
                        prop_assert!(need > buffer.len());
                        break;
                    }
                }
            }
            buffer.extend_from_slice(&wire[cut..]);
            while let Parsed::Command(args) = parse(&mut buffer, &LIMITS).unwrap() {
                parsed.push(args);
            }
            let expected: Vec<Vec<Bytes>> = commands
                .iter()
                .map(|args| args.iter().map(|a| Bytes::copy_from_slice(a)).collect())
                .collect();
            prop_assert_eq!(parsed, expected);
        }

        /// Arbitrary bytes never panic the parser, and what it consumes it explains.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut buffer = BytesMut::from(&bytes[..]);
            for _ in 0..300 {
                match parse(&mut buffer, &LIMITS) {
                    Ok(Parsed::Command(_)) if !buffer.is_empty() => continue,
                    _ => break,
                }
            }
        }
    }
}
