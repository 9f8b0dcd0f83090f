//! The `glimpse serve` process under test, and its RSS.

#[allow(unused_imports)]
use super::*;

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) log: PathBuf,
}

impl Server {
    pub(crate) fn start(bin: &Path, data: &Path, import: &Path, log: PathBuf) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bind = format!("127.0.0.1:{port}");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--model", "none", "--bind", &bind, "--import-root"])
            .arg(import)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut s = Server {
            child,
            url: format!("http://{bind}"),
            log,
        };
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = s.child.try_wait()? {
                return Err(format!("glimpse exited with {status}\n{}", s.log_tail()).into());
            }
            if let Ok(mut c) = HttpClient::new(&s.url, Duration::from_secs(5))
                && let Ok(r) = c.get("/readyz")
                && r.status == 200
            {
                return Ok(s);
            }
            if Instant::now() > until {
                return Err(format!("glimpse not ready after 120 s\n{}", s.log_tail()).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }

    /// SIGTERM, then SIGKILL after 60 s; returns how it ended.
    pub(crate) fn stop(&mut self) -> String {
        if let Ok(Some(s)) = self.child.try_wait() {
            return format!("had already exited ({s})");
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            let _ = self.child.kill();
            return "killed".into();
        };
        // SAFETY: kill(2) takes plain integers and touches no memory of this
        // process; `pid` is our own child, not yet reaped (try_wait above saw
        // it running), so the signal cannot reach a recycled pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                return format!("stopped by SIGTERM ({s})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "did not stop within 60 s of SIGTERM; killed".into()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS`, `RssAnon` of a process in KiB.
pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}
