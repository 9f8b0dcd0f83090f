//! A minimal blocking HTTP/1.1 client over one keep-alive TCP connection,
//! for load generation.
//!
//! A load generator must cost the machine as little as possible (the server
//! under test shares the cores), must measure one request per connection
//! round trip, and must not hide reconnects: this client writes a request in
//! one `write_all`, reads `Content-Length` or chunked bodies, keeps the
//! connection open, and reconnects (counting it) only when the server closed
//! it. Plain `http://` only: the benchmarks talk to a local server.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug)]
pub enum HttpError {
    /// The URL is not `http://host:port[/prefix]`.
    BadUrl(String),
    /// Connecting, writing or reading failed.
    Io(std::io::Error),
    /// The answer is not valid HTTP/1.1.
    Protocol(String),
    /// A file to upload could not be opened.
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadUrl(u) => write!(f, "not an http://host:port URL: {u}"),
            HttpError::Io(e) => write!(f, "i/o: {e}"),
            HttpError::Protocol(m) => write!(f, "bad HTTP answer: {m}"),
            HttpError::File { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        HttpError::Io(e)
    }
}

/// A parsed `http://host:port/prefix` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, as connected to and sent in `Host`.
    pub authority: String,
    /// Path prefix without a trailing slash (often empty).
    pub prefix: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/prefix]` (port 80 when absent).
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| HttpError::BadUrl(url.into()))?;
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if auth.is_empty() {
            return Err(HttpError::BadUrl(url.into()));
        }
        let authority = if auth.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')) {
            auth.to_string()
        } else {
            format!("{auth}:80")
        };
        Ok(HttpUrl {
            authority,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The whole body.
    pub body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 client bound to one server.
#[derive(Debug)]
pub struct HttpClient {
    url: HttpUrl,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened so far (1 for a well-behaved keep-alive server).
    pub connects: u64,
}

const MAX_HEADER_BYTES: usize = 64 * 1024;

impl HttpClient {
    /// A client for `url` whose reads and writes give up after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, HttpError> {
        Ok(HttpClient {
            url: HttpUrl::parse(url)?,
            timeout,
            conn: None,
            connects: 0,
        })
    }

    fn connect(&mut self) -> Result<&mut BufReader<TcpStream>, HttpError> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.url.authority)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            self.connects += 1;
            self.conn = Some(BufReader::with_capacity(64 * 1024, s));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| HttpError::Protocol("no connection".into()))
    }

    fn head(&self, method: &str, path: &str, content_type: &str, len: u64) -> Vec<u8> {
        format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nAccept: application/json\r\n\r\n",
            self.url.prefix, self.url.authority
        )
        .into_bytes()
    }

    /// `POST path` with an in-memory body. A request on a reused connection
    /// the server had closed is retried once on a fresh one.
    pub fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let mut req = self.head("POST", path, content_type, body.len() as u64);
        req.extend_from_slice(body);
        let reused = self.conn.is_some();
        match self.exchange(&req) {
            Err(HttpError::Io(_)) if reused => {
                self.conn = None;
                self.exchange(&req)
            }
            r => r,
        }
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        self.bodyless("GET", path)
    }

    /// `DELETE path`.
    pub fn delete(&mut self, path: &str) -> Result<Response, HttpError> {
        self.bodyless("DELETE", path)
    }

    /// A request without a body. A request on a reused connection the server
    /// had closed is retried once on a fresh one.
    fn bodyless(&mut self, method: &str, path: &str) -> Result<Response, HttpError> {
        let req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.url.prefix, self.url.authority
        )
        .into_bytes();
        let reused = self.conn.is_some();
        match self.exchange(&req) {
            Err(HttpError::Io(_)) if reused => {
                self.conn = None;
                self.exchange(&req)
            }
            r => r,
        }
    }

    /// `POST path` streaming the file as the body (never held in memory),
    /// always on a fresh connection.
    pub fn post_file(
        &mut self,
        path: &str,
        content_type: &str,
        file: &Path,
    ) -> Result<Response, HttpError> {
        let fail = |source| HttpError::File {
            path: file.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(file).map_err(fail)?;
        let len = f.metadata().map_err(fail)?.len();
        let head = self.head("POST", path, content_type, len);
        self.conn = None;
        let result = (|| -> Result<Response, HttpError> {
            let conn = self.connect()?;
            conn.get_mut().write_all(&head)?;
            let sent = std::io::copy(&mut f, conn.get_mut())?;
            if sent != len {
                return Err(HttpError::Protocol(format!(
                    "{} changed size while uploading",
                    file.display()
                )));
            }
            self.read_response()
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange(&mut self, req: &[u8]) -> Result<Response, HttpError> {
        let result = (|| -> Result<Response, HttpError> {
            self.connect()?.get_mut().write_all(req)?;
            self.read_response()
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn read_response(&mut self) -> Result<Response, HttpError> {
        let conn = self.connect()?;
        let mut line = String::new();
        let mut header_bytes = 0usize;
        let mut read_line =
            |conn: &mut BufReader<TcpStream>, line: &mut String| -> Result<(), HttpError> {
                line.clear();
                let n = conn.read_line(line)?;
                header_bytes += n;
                if n == 0 {
                    return Err(HttpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                if header_bytes > MAX_HEADER_BYTES {
                    return Err(HttpError::Protocol("headers over 64 KiB".into()));
                }
                Ok(())
            };
        // Skip interim 1xx answers (e.g. 100 Continue).
        let status = loop {
            read_line(conn, &mut line)?;
            let status = parse_status_line(&line)?;
            if (100..200).contains(&status) {
                loop {
                    read_line(conn, &mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                continue;
            }
            break status;
        };
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            read_line(conn, &mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l
                .split_once(':')
                .ok_or_else(|| HttpError::Protocol(format!("header line {l:?}")))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    value
                        .parse()
                        .map_err(|_| HttpError::Protocol(format!("Content-Length {value:?}")))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            read_chunked(conn)?
        } else if let Some(n) = content_length {
            let mut b = vec![0u8; n];
            conn.read_exact(&mut b)?;
            b
        } else {
            close = true;
            let mut b = Vec::new();
            conn.read_to_end(&mut b)?;
            b
        };
        if close {
            self.conn = None;
        }
        Ok(Response { status, body })
    }
}

fn parse_status_line(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| HttpError::Protocol(format!("status line {:?}", line.trim_end()))),
        _ => Err(HttpError::Protocol(format!(
            "status line {:?}",
            line.trim_end()
        ))),
    }
}

fn read_chunked(conn: &mut BufReader<TcpStream>) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(HttpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let size_text = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Protocol(format!("chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                line.clear();
                if conn.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(HttpError::Protocol("chunk not followed by CRLF".into()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Reads one request (headers + Content-Length body) from `r`.
    fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
        let mut first = String::new();
        if r.read_line(&mut first).ok()? == 0 {
            return None;
        }
        let mut len = 0usize;
        loop {
            let mut l = String::new();
            r.read_line(&mut l).ok()?;
            if l.trim_end().is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        Some((first, body))
    }

    /// A server answering requests in turn with the given raw responses;
    /// returns its URL and the count of accepted connections.
    fn server(responses: Vec<&'static str>) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let accepts = Arc::new(AtomicUsize::new(0));
        let a = accepts.clone();
        std::thread::spawn(move || {
            let mut queue = responses.into_iter();
            while let Ok((s, _)) = l.accept() {
                a.fetch_add(1, Ordering::SeqCst);
                let mut r = BufReader::new(s);
                while let Some((_line, _body)) = read_request(&mut r) {
                    let Some(resp) = queue.next() else { return };
                    r.get_mut().write_all(resp.as_bytes()).unwrap();
                    if resp.contains("Connection: close") {
                        break;
                    }
                }
            }
        });
        (url, accepts)
    }

    #[test]
    fn keep_alive_content_length_and_chunked_bodies() {
        let (url, accepts) = server(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno",
        ]);
        let mut c = HttpClient::new(&url, Duration::from_secs(5)).unwrap();
        let r = c.post("/x", "application/json", b"{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{\"ok\":true}"[..]));
        let r = c.post("/x", "application/json", b"{\"q\":1}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{\"a\":1}"[..]));
        let r = c.delete("/missing").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"no"[..]));
        assert_eq!(
            accepts.load(Ordering::SeqCst),
            1,
            "one keep-alive connection"
        );
        assert_eq!(c.connects, 1);
    }

    #[test]
    fn reconnects_after_connection_close() {
        let (url, accepts) = server(vec![
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
        ]);
        let mut c = HttpClient::new(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(c.post("/", "text/plain", b"1").unwrap().body, b"a");
        assert_eq!(c.post("/", "text/plain", b"2").unwrap().body, b"b");
        assert_eq!(accepts.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn uploads_a_file_and_reports_a_missing_one() {
        let (url, _) = server(vec!["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shard.parquet");
        std::fs::write(&p, vec![7u8; 100_000]).unwrap();
        let mut c = HttpClient::new(&url, Duration::from_secs(5)).unwrap();
        let r = c
            .post_file("/bulk", "application/vnd.apache.parquet", &p)
            .unwrap();
        assert_eq!(r.body, b"ok");
        let err = c
            .post_file("/bulk", "x", &dir.path().join("gone.parquet"))
            .unwrap_err();
        assert!(err.to_string().contains("gone.parquet"), "{err}");
    }

    #[test]
    fn url_parsing_and_garbage_answers() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/api/").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.prefix.as_str()),
            ("127.0.0.1:8080", "/api")
        );
        assert_eq!(HttpUrl::parse("http://host").unwrap().authority, "host:80");
        assert!(HttpUrl::parse("https://x:1").is_err());
        assert!(HttpUrl::parse("http://").is_err());

        let (url, _) = server(vec!["SMTP ready\r\n\r\n"]);
        let mut c = HttpClient::new(&url, Duration::from_secs(5)).unwrap();
        let err = c.get("/").unwrap_err();
        assert!(matches!(err, HttpError::Protocol(_)), "{err}");
    }
}
