//! A small W3C WebDriver client over chromedriver and Debian's headless Chromium, for the
//! browser tests. (The WebDriver crates pull a C crypto library into the build for their TLS;
//! these tests only ever talk to a local chromedriver over plain HTTP, which needs a handful of
//! JSON calls.)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// A chromedriver process and one browser session, both ended when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver package; .ci/run installs it)");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while agent.get(format!("{base}/status")).call().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let v = browser.post("/session", &caps);
        browser.session = v["sessionId"].as_str().expect("a session").to_string();
        browser
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut r = self
            .agent
            .post(&url)
            .send_json(body)
            .expect("webdriver request");
        let v: Value = r.body_mut().read_json().expect("webdriver JSON");
        v["value"].clone()
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut r = self.agent.get(&url).call().expect("webdriver request");
        let v: Value = r.body_mut().read_json().expect("webdriver JSON");
        v["value"].clone()
    }

    /// Forgets every cookie of the page's site (a new visitor: logged out, no language chosen).
    pub fn clear_cookies(&self) {
        let url = format!("{}/session/{}/cookie", self.base, self.session);
        self.agent.delete(&url).call().expect("webdriver request");
    }

    pub fn goto(&self, url: &str) {
        self.post("/url", &json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.get("/url").as_str().unwrap_or_default().to_string()
    }

    /// Waits up to 15 s for the page's address to end with `suffix` (a form's redirect may
    /// still be under way when a click returns) and returns it.
    pub fn wait_url(&self, suffix: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.url();
            if url.ends_with(suffix) {
                return url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the page stayed at {url}, not …{suffix}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn source(&self) -> String {
        self.get("/source").as_str().unwrap_or_default().to_string()
    }

    /// Waits up to 10 s for the page to contain `text` (after a form posts back to the same
    /// address, the page before it has the same elements).
    pub fn wait_source(&self, text: &str) {
        let started = Instant::now();
        while !self.source().contains(text) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no {text:?} in the page:\n{}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The element matching a CSS selector, waiting up to `secs` for it.
    pub fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let v = self.post("/element", &json!({"using": "css selector", "value": css}));
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no element `{css}` on {} ({v}):\n{}",
                self.url(),
                self.source().chars().take(300).collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many elements match a CSS selector now (no waiting): to assert one is absent.
    pub fn count(&self, css: &str) -> usize {
        let v = self.post("/elements", &json!({"using": "css selector", "value": css}));
        v.as_array().map_or(0, Vec::len)
    }

    /// Runs a script in the page and returns what it returns.
    pub fn script(&self, js: &str) -> Value {
        self.post("/execute/sync", &json!({ "script": js, "args": [] }))
    }

    pub fn fill(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.post(&format!("/element/{el}/clear"), &json!({}));
        self.post(&format!("/element/{el}/value"), &json!({ "text": text }));
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.post(&format!("/element/{el}/click"), &json!({}));
    }

    pub fn text(&self, css: &str) -> String {
        let el = self.find(css);
        self.get(&format!("/element/{el}/text"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a screenshot of the page as PNG.
    pub fn screenshot(&self, file: &Path) {
        let b64 = self.get("/screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a PNG");
        std::fs::write(file, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .agent
            .delete(format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
