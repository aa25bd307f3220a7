//! A real Prometheus server (Debian's `prometheus`) on loopback, scraping targets
//! every second; its storage lives in a temporary directory.

use std::{
    fs::File,
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{http, process, tempdir::TempDir, wait::Wait};

pub struct Prometheus {
    child: Child,
    addr: String,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`) at /metrics every second.
    pub fn start(targets: &[String]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("local addr").to_string();
        drop(listener);
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: session-monitor\n    static_configs:\n      - targets: [{}]\n",
                quoted.join(", ")
            ),
        );
        let log = File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus (Debian package `prometheus`)");
        let prometheus = Prometheus { child, addr, dir };
        Wait::new("Prometheus to be ready")
            .timeout(Duration::from_secs(60))
            .until_ok(|| match http::get(&prometheus.addr, "/-/ready") {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("{status}: {body}")),
                Err(e) => Err(e),
            });
        prometheus
    }

    /// Runs an instant query; returns the `data.result` array.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", http::encode(promql));
        let (status, body) = http::get(&self.addr, &path)?;
        let value: Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if value["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        Ok(value["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until `promql` returns a sample whose value satisfies `check`; returns it.
    pub fn wait_for(&self, promql: &str, timeout: Duration, check: impl Fn(f64) -> bool) -> f64 {
        Wait::new(format!("Prometheus to answer `{promql}` as expected"))
            .timeout(timeout)
            .poll(Duration::from_millis(500))
            .until_ok(|| {
                let result = self.query(promql)?;
                let values: Vec<f64> = result
                    .iter()
                    .filter_map(|r| r["value"][1].as_str().and_then(|v| v.parse().ok()))
                    .collect();
                values
                    .iter()
                    .copied()
                    .find(|v| check(*v))
                    .ok_or_else(|| format!("result: {result:?}"))
            })
    }

    /// Scrape health of every target, as Prometheus sees it (`up`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        process::stop_child(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log());
        }
    }
}
