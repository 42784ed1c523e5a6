//! A minimal blocking HTTP/1.1 client over loopback for the `augur serve` tests and load benchmark:
//! keep-alive connections, Content-Length and chunked bodies, raw writes for malformed requests.
//! (No client crate: the tests need to send what a well-behaved client never would.)
#![allow(dead_code)]
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: not JSON ({e}): {}", self.status, self.text()))
    }
}

/// One keep-alive connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    port: u16,
}

impl Conn {
    pub fn open(port: u16) -> io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            reader: BufReader::new(s),
            port,
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Sends a request with a body (or none) and reads the answer.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> io::Result<Response> {
        self.write_head(method, path, content_type, body.len(), &[])?;
        self.stream().write_all(body)?;
        self.read_response()
    }

    /// Writes request line and headers, announcing `len` bytes of body.
    pub fn write_head(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        len: usize,
        extra: &[(&str, &str)],
    ) -> io::Result<()> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {len}\r\n",
            self.port
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.stream().write_all(head.as_bytes())
    }

    pub fn read_response(&mut self) -> io::Result<Response> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before an answer",
                ));
            }
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                self.reader.read_line(&mut h)?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            if status == 100 {
                continue;
            }
            let mut r = Response {
                status,
                headers,
                body: Vec::new(),
            };
            if let Some(n) = r
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
            {
                r.body = vec![0; n];
                self.reader.read_exact(&mut r.body)?;
            } else if r
                .header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
            {
                loop {
                    let mut size = String::new();
                    self.reader.read_line(&mut size)?;
                    let n = usize::from_str_radix(size.trim(), 16)
                        .map_err(|_| io::Error::other("bad chunk size"))?;
                    let mut chunk = vec![0; n + 2];
                    self.reader.read_exact(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    r.body.extend_from_slice(&chunk[..n]);
                }
            }
            return Ok(r);
        }
    }
}

/// One request on a fresh connection.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> io::Result<Response> {
    Conn::open(port)?.send(method, path, content_type, body)
}

pub fn get(port: u16, path: &str) -> io::Result<Response> {
    request(port, "GET", path, None, b"")
}

pub fn post_json(port: u16, path: &str, body: &serde_json::Value) -> io::Result<Response> {
    request(
        port,
        "POST",
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}
