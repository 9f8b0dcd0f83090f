//! A real S3 API on loopback for the object-storage tests: moto's server
//! (`pip install "moto[server]"`), started per test on a free port, and a
//! TCP proxy in front of it that a test can take down and bring back (an
//! unreachable bucket without losing moto's in-memory state).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use conns::Conns;

/// `moto_server`: `GLIMPSE_MOTO_SERVER`, else on `PATH`. `None` (the test
/// skips) unless `GLIMPSE_REQUIRE_MOTO=1`, which CI sets.
pub fn moto_server_binary() -> Option<PathBuf> {
    let found = std::env::var_os("GLIMPSE_MOTO_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("moto_server"))
                    .find(|f| f.is_file())
            })
        });
    if found.is_none() && std::env::var("GLIMPSE_REQUIRE_MOTO").as_deref() == Ok("1") {
        panic!("GLIMPSE_REQUIRE_MOTO=1 but moto_server was not found (set GLIMPSE_MOTO_SERVER)");
    }
    found
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("addr: {e}"))
}

/// A running moto server with one bucket.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
}

impl Moto {
    /// Starts moto and creates bucket `bucket`; `None` when moto is not installed.
    pub fn start(bucket: &str) -> Option<Moto> {
        let bin = moto_server_binary()?;
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting moto_server: {e}"));
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        // moto does not check signatures: an unsigned PUT creates the bucket.
        loop {
            match client.put(format!("{endpoint}/{bucket}")).send() {
                Ok(r) if r.status().is_success() => break,
                _ if Instant::now() > deadline => panic!("moto_server did not start"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Some(Moto {
            child,
            endpoint,
            bucket: bucket.to_string(),
        })
    }

    /// Environment for a server using this moto at `endpoint` (moto's own or a proxy's).
    pub fn env(endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to `target` that can refuse and cut connections on demand.
pub struct Proxy {
    /// `http://127.0.0.1:PORT` of the proxy.
    pub endpoint: String,
    up: Arc<AtomicBool>,
    conns: Conns,
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:PORT to `target` (`host:port`).
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let up = Arc::new(AtomicBool::new(true));
        let conns = Conns::default();
        let target = target.to_string();
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if !up2.load(Ordering::Acquire) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&target) else {
                    continue;
                };
                conns2.add(&inbound, &outbound);
                pipe(&inbound, &outbound);
                pipe(&outbound, &inbound);
            }
        });
        Proxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            up,
            conns,
        }
    }

    /// Takes the bucket away: open connections are cut, new ones closed at once.
    pub fn down(&self) {
        self.up.store(false, Ordering::Release);
        self.conns.cut_all();
    }

    /// Brings it back.
    pub fn up(&self) {
        self.up.store(true, Ordering::Release);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The proxy's open connections, to cut them when it goes down.
mod conns {
    use std::net::{Shutdown, TcpStream};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct Conns(Arc<Mutex<Vec<TcpStream>>>);

    impl Conns {
        pub fn add(&self, a: &TcpStream, b: &TcpStream) {
            if let (Ok(a), Ok(b), Ok(mut v)) = (a.try_clone(), b.try_clone(), self.0.lock()) {
                v.push(a);
                v.push(b);
            }
        }

        pub fn cut_all(&self) {
            if let Ok(mut v) = self.0.lock() {
                for s in v.drain(..) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
}
