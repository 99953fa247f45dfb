//! A real HTTP receiver for alert webhooks: Python's `http.server` as a child process on a
//! free port of 127.0.0.1. It records every POST (the `Authorization` and `Content-Type`
//! headers, the body, the status it answered) as one JSON line in its log, and answers 200,
//! or 500 to as many requests as [`WebhookReceiver::fail_next`] asked (a failing receiver).

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::TestEnv;
use super::process::Background;
use super::servers::start_on_free_port;

const RECEIVER: &str = r#"
import http.server, json, os, sys
port, log, fail = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = 200
        try:
            left = int(open(fail).read() or "0")
        except FileNotFoundError:
            left = 0
        if left > 0:
            open(fail, "w").write(str(left - 1))
            status = 500
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "auth": self.headers.get("Authorization"),
                "content_type": self.headers.get("Content-Type"), "status": status,
                "body": body.decode("utf-8")}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// The receiver; killed on drop.
pub struct WebhookReceiver {
    _process: Background,
    port: u16,
    log: PathBuf,
    fail: PathBuf,
}

impl WebhookReceiver {
    pub fn start(env: &TestEnv) -> WebhookReceiver {
        let script = env.unique_path("webhook/receiver", "py");
        fs::write(&script, RECEIVER).expect("write the receiver");
        let log = env.unique_path("webhook/requests", "jsonl");
        let fail = env.unique_path("webhook/fail", "count");
        let server_log = env.unique_path("logs/webhook", "log");
        let (process, port) = start_on_free_port("webhook receiver", &server_log, |port| {
            let mut cmd = env.command("python3");
            cmd.arg(&script).arg(port.to_string()).arg(&log).arg(&fail);
            cmd
        });
        WebhookReceiver {
            _process: process,
            port,
            log,
            fail,
        }
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Makes the next `n` requests get 500.
    pub fn fail_next(&self, n: u32) {
        fs::write(&self.fail, n.to_string()).expect("write the failure count");
    }

    /// Every request received so far, oldest first: `path`, `auth`, `content_type`,
    /// `status`, `body` (the raw text).
    pub fn requests(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("the receiver writes JSON lines"))
            .collect()
    }

    /// The events of the requests answered 200, parsed.
    pub fn events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r["status"] == 200)
            .map(|r| {
                let body = r["body"].as_str().unwrap_or_default();
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
            })
            .collect()
    }
}
