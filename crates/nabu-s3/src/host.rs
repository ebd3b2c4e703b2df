//! Virtual-hosted-style addressing: which bucket a request's `Host` names.
//!
//! S3 clients address a bucket either in the path (`host/BUCKET/KEY`, path-style) or in the
//! host name (`BUCKET.host/KEY`, virtual-hosted-style, the AWS SDKs' default for real S3).
//! A node knows the names it is reached under (`s3_domains` in its config, `localhost` by
//! default): a request to `BUCKET.NAME[:port]` names `BUCKET`; a request to a name itself, or
//! to any other name, is path-style. (`s3s` never asks about IP addresses: those are always
//! path-style.)

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// The host names a gateway is reached under.
#[derive(Debug, Clone)]
pub struct Domains {
    names: Vec<String>,
}

impl Domains {
    /// `names`, lowercased (host names compare without case).
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names.iter().map(|name| name.to_ascii_lowercase()).collect(),
        }
    }

    /// The bucket `host` (a `Host` header: name and optional port) names, if any.
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().is_ok() => name,
            _ => host,
        };
        let bytes = name.as_bytes();
        self.names.iter().find_map(|domain| {
            let end = bytes.len().checked_sub(domain.len() + 1)?;
            // Bytes, not `str` slices: a Host header need not be ASCII.
            let under =
                bytes[end] == b'.' && bytes[end + 1..].eq_ignore_ascii_case(domain.as_bytes());
            (under && end > 0).then(|| &name[..end])
        })
    }
}

impl S3Host for Domains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let virtual_host = VirtualHost::new(host);
        Ok(match self.bucket_of(host) {
            Some(bucket) => virtual_host.with_bucket(bucket),
            None => virtual_host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_the_part_before_a_known_name() {
        let domains = Domains::new(&["localhost".to_owned(), "S3.Example.com".to_owned()]);
        let cases = [
            ("models.localhost:7700", Some("models")),
            ("models.localhost", Some("models")),
            ("my.dotted.bucket.s3.example.com", Some("my.dotted.bucket")),
            ("ckpt.S3.EXAMPLE.COM:443", Some("ckpt")),
            ("localhost:7700", None),
            ("s3.example.com", None),
            (".localhost", None),
            ("models.otherhost:7700", None),
            ("modelslocalhost:7700", None),
            ("é.localhost", Some("é")),
            ("ünï", None),
        ];
        for (host, bucket) in cases {
            assert_eq!(domains.bucket_of(host), bucket, "{host}");
            let parsed = domains.parse_host_header(host).expect("parsed");
            assert_eq!(parsed.bucket(), bucket, "{host}");
        }
    }
}
