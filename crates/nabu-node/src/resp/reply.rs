//! RESP reply encoding, in the connection's negotiated protocol (2 or 3), byte-exact with
//! Redis: `+OK\r\n`, `:1\r\n`, `$3\r\nabc\r\n`, a miss `$-1\r\n` (RESP2) or `_\r\n` (RESP3).
//!
//! Small replies are appended to one output buffer; a bulk value of at least
//! [`LARGE_VALUE_BYTES`] is kept as its own [`Bytes`] (a slice of the stored value) and written
//! to the socket as is, never copied into the buffer.

use std::io::Write;

use bytes::Bytes;

/// Values this long or longer are written from their own buffer.
pub const LARGE_VALUE_BYTES: usize = 64 << 10;

/// One piece of output: buffered small replies, or a large value to write as it is.
#[derive(Debug)]
pub enum Piece {
    /// Encoded small replies.
    Buffer(Vec<u8>),
    /// A large value's bytes (its `$len\r\n` header precedes it in a buffer piece).
    Value(Bytes),
}

/// The replies of a batch of commands, in order.
#[derive(Debug)]
pub struct Replies {
    /// 2 or 3.
    pub protocol: u8,
    pieces: Vec<Piece>,
    buffer: Vec<u8>,
}

impl Replies {
    /// No replies yet, in `protocol`.
    pub fn new(protocol: u8) -> Self {
        Self {
            protocol,
            pieces: Vec::new(),
            buffer: Vec::with_capacity(4096),
        }
    }

    /// Bytes buffered or queued (for flushing before they grow large).
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len()
            + self
                .pieces
                .iter()
                .map(|piece| match piece {
                    Piece::Buffer(bytes) => bytes.len(),
                    Piece::Value(bytes) => bytes.len(),
                })
                .sum::<usize>()
    }

    /// Takes the pieces to write, leaving this empty.
    pub fn take(&mut self) -> Vec<Piece> {
        if !self.buffer.is_empty() {
            self.pieces
                .push(Piece::Buffer(std::mem::take(&mut self.buffer)));
        }
        std::mem::take(&mut self.pieces)
    }

    /// `+text`.
    pub fn simple(&mut self, text: &str) {
        let _ = write!(self.buffer, "+{text}\r\n");
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.buffer.extend_from_slice(b"+OK\r\n");
    }

    /// `-message` (the message starts with its code: `ERR …`, `NOAUTH …`). CR and LF in it
    /// become spaces, so a reply is always one line.
    pub fn error(&mut self, message: &str) {
        self.buffer.push(b'-');
        self.buffer.extend(message.bytes().map(|byte| {
            if byte == b'\r' || byte == b'\n' {
                b' '
            } else {
                byte
            }
        }));
        self.buffer.extend_from_slice(b"\r\n");
    }

    /// `:n`.
    pub fn integer(&mut self, value: i64) {
        let _ = write!(self.buffer, ":{value}\r\n");
    }

    /// `$len\r\nbytes\r\n`, the bytes not copied when large.
    pub fn bulk(&mut self, value: Bytes) {
        let _ = write!(self.buffer, "${}\r\n", value.len());
        if value.len() >= LARGE_VALUE_BYTES {
            self.pieces
                .push(Piece::Buffer(std::mem::take(&mut self.buffer)));
            self.pieces.push(Piece::Value(value));
        } else {
            self.buffer.extend_from_slice(&value);
        }
        self.buffer.extend_from_slice(b"\r\n");
    }

    /// A bulk string of text.
    pub fn bulk_text(&mut self, text: &str) {
        self.bulk(Bytes::copy_from_slice(text.as_bytes()));
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        if self.protocol == 3 {
            self.buffer.extend_from_slice(b"_\r\n");
        } else {
            self.buffer.extend_from_slice(b"$-1\r\n");
        }
    }

    /// A bulk value or the null reply.
    pub fn bulk_or_null(&mut self, value: Option<Bytes>) {
        match value {
            Some(value) => self.bulk(value),
            None => self.null(),
        }
    }

    /// `*n`: an array of `n` elements follows.
    pub fn array(&mut self, length: usize) {
        let _ = write!(self.buffer, "*{length}\r\n");
    }

    /// A map of `pairs` key/value pairs follows: `%n` in RESP3, `*2n` in RESP2.
    pub fn map(&mut self, pairs: usize) {
        if self.protocol == 3 {
            let _ = write!(self.buffer, "%{pairs}\r\n");
        } else {
            self.array(pairs * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(replies: &mut Replies) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in replies.take() {
            match piece {
                Piece::Buffer(b) => out.extend(b),
                Piece::Value(b) => out.extend_from_slice(&b),
            }
        }
        out
    }

    #[test]
    fn replies_are_byte_exact_in_both_protocols() {
        let mut two = Replies::new(2);
        two.ok();
        two.integer(1);
        two.bulk(Bytes::from_static(b"abc"));
        two.null();
        two.error("ERR bad\r\nthing");
        two.map(1);
        assert_eq!(
            bytes(&mut two),
            b"+OK\r\n:1\r\n$3\r\nabc\r\n$-1\r\n-ERR bad  thing\r\n*2\r\n"
        );
        let mut three = Replies::new(3);
        three.null();
        three.map(2);
        assert_eq!(bytes(&mut three), b"_\r\n%2\r\n");
    }

    #[test]
    fn large_values_are_their_own_piece() {
        let value = Bytes::from(vec![9u8; LARGE_VALUE_BYTES]);
        let mut replies = Replies::new(2);
        replies.bulk(value.clone());
        let pieces = replies.take();
        assert_eq!(pieces.len(), 3);
        assert!(matches!(&pieces[1], Piece::Value(v) if v.as_ptr() == value.as_ptr()));
    }
}
