//! A minimal HTTP/1.1 GET of a management plane: a client finding the cluster from one node's
//! address (`/api/v1/cluster`), readiness checks and `nabu status` (in the `nabu` binary) and
//! the dashboard's collection of every member's counters (`nabu_node::http_get` re-exports
//! it). The management plane is plain HTTP on a known address, and this avoids a client stack.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response body read (the cluster JSON of a large ring stays far below this).
const RESPONSE_BYTES_MAX: u64 = 16 << 20;
/// Per-request deadline.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The status code of `GET path`, or `None` if the node did not answer.
pub async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    get(addr, path).await.map(|(status, _)| status)
}

/// `GET path` → `(status, body)`, or `None` if the node did not answer in time.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream
            .take(RESPONSE_BYTES_MAX)
            .read_to_end(&mut response)
            .await
            .ok()?;
        parse(&response)
    })
    .await
    .ok()
    .flatten()
}

fn parse(response: &[u8]) -> Option<(u16, Vec<u8>)> {
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..head_end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = &response[head_end + 4..];
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(super::parse(plain), Some((200, b"ok".to_vec())));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(super::parse(chunked), Some((503, b"abcde".to_vec())));
        assert_eq!(super::parse(b"garbage"), None);
    }
}
