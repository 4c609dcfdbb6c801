//! The test harness: runs the real `passerelle` binary in temporary directories, and builds
//! whole mechanisms (root keys, organisations, endorsed nodes, signed versions) from the same
//! commands a ministry and its partners would type.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The `passerelle` binary, built once per test run so tests never run a stale one.
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("PASSERELLE_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "passerelle-node",
                "--bin",
                "passerelle",
            ])
            // The directory `cargo test` runs us from, rather than the one this library was
            // built in: a target directory shared between clones may hold a build made elsewhere.
            .current_dir(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from),
            )
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "building the passerelle binary failed"
        );
        let exe = std::env::current_exe().unwrap_or_default();
        // target/debug/deps/tests-HASH -> target/debug/passerelle
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        dir.join("passerelle")
    })
}

/// What a command printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the command's output unless it succeeded.
    #[track_caller]
    pub fn expect_ok(self) -> Self {
        assert!(
            self.ok(),
            "command failed ({:?}):\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed with exit code 1 and an error line containing `needle`.
    #[track_caller]
    pub fn expect_refused(self, needle: &str) -> Self {
        assert_eq!(
            self.code,
            Some(1),
            "expected a refusal with `{needle}`, got exit {:?}:\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "the refusal does not say `{needle}`:\n{}",
            self.stderr
        );
        let error_lines: Vec<_> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(
            error_lines.len(),
            1,
            "a refusal is one line:\n{}",
            self.stderr
        );
        self
    }
}

/// Runs `passerelle` with `args` in `cwd`, with no inherited data directory or passphrase.
pub fn run_in(cwd: &Path, args: &[&str]) -> Run {
    run_env(cwd, args, &[])
}

/// Runs `passerelle` with extra environment variables.
pub fn run_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("PASSERELLE_DATA_DIR")
        .env_remove("PASSERELLE_PASSPHRASE")
        .env_remove("PASSERELLE_KEY_PASSPHRASE")
        .env("HOME", cwd)
        .env_remove("XDG_DATA_HOME")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {}: {e}", bin().display()),
    };
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A mechanism set up from scratch in a temporary directory, the way scenario 1 tells it:
/// two ministry officials (threshold 2), organisations with their keys, endorsed nodes.
#[derive(Debug)]
pub struct Setup {
    pub dir: tempfile::TempDir,
    /// Public keys of the root key files `root-<name>.key`.
    pub roots: Vec<(String, String)>,
}

impl Setup {
    /// Root keys `a` and `b` exist; nothing else yet.
    pub fn new() -> Self {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let mut setup = Self {
            dir,
            roots: Vec::new(),
        };
        setup.root_key("a");
        setup.root_key("b");
        setup
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_default()
    }

    pub fn write(&self, name: &str, text: &str) {
        if let Err(e) = std::fs::write(self.file(name), text) {
            panic!("write {name}: {e}");
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run_in(self.path(), args)
    }

    /// Creates root key `root-<name>.key` and returns its public key.
    pub fn root_key(&mut self, name: &str) -> String {
        let file = format!("root-{name}.key");
        let out = self
            .run(&["mechanism", "keygen", "--out", &file])
            .expect_ok();
        let public = out.stdout.trim().to_string();
        self.roots.push((name.to_string(), public.clone()));
        public
    }

    pub fn root_public(&self, name: &str) -> String {
        self.roots
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    /// Writes the template document `name` with the given root keys and threshold.
    pub fn template(&self, name: &str, roots: &[&str], threshold: u32) {
        let mut args = vec!["mechanism".to_string(), "template".to_string()];
        for r in roots {
            args.push("--root-key".into());
            args.push(self.root_public(r));
        }
        args.extend([
            "--threshold".into(),
            threshold.to_string(),
            "--out".into(),
            name.into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).expect_ok();
    }

    /// Creates the organisation key file `org-<org>.key`; returns its stanzas.
    pub fn org_keygen(&self, org: &str) -> String {
        let key = format!("org-{org}.key");
        self.run(&["org", "keygen", "--org", org, "--out", &key])
            .expect_ok()
            .stdout
    }

    /// Creates node `node-<name>` of `org` and returns (node id, endorsed stanza).
    pub fn node(&self, name: &str, org: &str) -> (String, String) {
        let data = format!("node-{name}");
        self.run(&["--data-dir", &data, "init", "--org", org, "--label", name])
            .expect_ok();
        let stanza = self
            .run(&["--data-dir", &data, "id", "--toml"])
            .expect_ok()
            .stdout;
        let stanza_file = format!("{name}.node.toml");
        self.write(&stanza_file, &stanza);
        let endorsed = self
            .run(&[
                "org",
                "endorse",
                &stanza_file,
                "--key",
                &format!("org-{org}.key"),
            ])
            .expect_ok()
            .stdout;
        let id = self
            .run(&["--data-dir", &data, "id"])
            .expect_ok()
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        (id, endorsed)
    }

    /// Appends TOML text to a document.
    pub fn append(&self, doc: &str, text: &str) {
        let mut current = self.read(doc);
        if !current.ends_with('\n') {
            current.push('\n');
        }
        current.push('\n');
        current.push_str(text);
        self.write(doc, &current);
    }

    /// Signs `doc` (TOML or .signed) with root keys into `out`.
    pub fn sign(&self, doc: &str, keys: &[&str], out: &str) -> Run {
        let mut args = vec!["mechanism".to_string(), "sign".into(), doc.into()];
        for k in keys {
            args.push("--key".into());
            args.push(format!("root-{k}.key"));
        }
        args.extend(["--out".into(), out.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }

    /// Runs `mechanism next` from a signed file into a new document.
    pub fn next(&self, current: &str, out: &str) {
        self.run(&["mechanism", "next", current, "--out", out])
            .expect_ok();
    }

    /// The node's status as JSON.
    pub fn status(&self, node: &str) -> serde_json::Value {
        let out = self
            .run(&["--data-dir", &format!("node-{node}"), "status", "--json"])
            .expect_ok();
        serde_json::from_str(&out.stdout).unwrap_or_default()
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

/// A genesis with organisations `crt` (two nodes) and `iom` (one node), signed by a and b.
/// Returns the setup; files: `v1.toml`, `v1.signed`, nodes `crt1`, `crt2`, `iom1`.
pub fn standard_genesis() -> Setup {
    let setup = Setup::new();
    setup.template("v1.toml", &["a", "b"], 2);
    for org in ["crt", "iom"] {
        let stanzas = setup.org_keygen(org);
        setup.append("v1.toml", &stanzas);
    }
    for (name, org) in [("crt1", "crt"), ("crt2", "crt"), ("iom1", "iom")] {
        let (_, stanza) = setup.node(name, org);
        setup.append("v1.toml", &stanza);
    }
    setup.sign("v1.toml", &["a", "b"], "v1.signed").expect_ok();
    setup
}

/// A running `passerelle run` daemon on loopback, stopped (SIGTERM) when dropped.
#[derive(Debug)]
pub struct Daemon {
    pub child: std::process::Child,
    pub data_dir: PathBuf,
    /// The node's p2p address (`/ip4/127.0.0.1/tcp/PORT/p2p/ID`).
    pub addr: String,
    /// The local API address (`127.0.0.1:PORT`).
    pub api: String,
    /// The public directory's address, when started with `--hsds-listen`.
    pub hsds: Option<String>,
}

/// Reads a `passerelle run` child's standard output on a thread of its own and sends back
/// its ready line (`{"ready": {"node", "api", "p2p"}}`); the thread reads on to the end, so
/// the daemon never writes into a closed pipe. The channel closes when the child exits.
pub fn ready_line(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::BufRead as _;
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("the daemon's standard output must be piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                && value.get("ready").is_some()
            {
                // The test may have stopped waiting; the rest is read all the same.
                let _ = tx.send(value);
            }
        }
    });
    rx
}

/// Waits up to `secs` seconds for a daemon's ready line: its first p2p address
/// (`/ip4/127.0.0.1/tcp/PORT/p2p/ID`) and its API address, or `None` if it exited first or
/// took too long.
pub fn wait_ready(
    ready: &std::sync::mpsc::Receiver<serde_json::Value>,
    secs: u64,
) -> Option<(String, String)> {
    wait_ready_line(ready, secs).map(|(addr, api, _)| (addr, api))
}

/// As `wait_ready`, with the public directory's address when the daemon serves one.
pub fn wait_ready_line(
    ready: &std::sync::mpsc::Receiver<serde_json::Value>,
    secs: u64,
) -> Option<(String, String, Option<String>)> {
    let line = ready
        .recv_timeout(std::time::Duration::from_secs(secs))
        .ok()?;
    let ready = &line["ready"];
    let addr = ready["p2p"][0].as_str()?.to_string();
    let api = ready["api"].as_str()?.to_string();
    let hsds = ready["hsds"].as_str().map(str::to_string);
    Some((addr, api, hsds))
}

/// Waits until `f` returns `Some`, up to `secs` seconds.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

impl Daemon {
    /// Starts node `node-<name>` in `cwd`, listening on loopback, dialling `peers`; returns
    /// once the daemon has printed its ready line (where it listens).
    pub fn start(cwd: &Path, name: &str, peers: &[&str], extra: &[&str]) -> Self {
        // TEST_RUST_LOG raises the daemons' log level when a test needs looking into.
        let level = std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        Self::start_logged(cwd, name, peers, extra, &level)
    }

    /// Starts a daemon as `start` does, logging at `rust_log` into `<name>.log`.
    pub fn start_logged(
        cwd: &Path,
        name: &str,
        peers: &[&str],
        extra: &[&str],
        rust_log: &str,
    ) -> Self {
        Self::start_env(cwd, name, peers, extra, &[("RUST_LOG", rust_log)])
    }

    /// Starts a daemon as `start` does, with extra environment variables (`RUST_LOG` among
    /// them, or the test's level).
    pub fn start_env(
        cwd: &Path,
        name: &str,
        peers: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let level = std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        let data_dir = cwd.join(format!("node-{name}"));
        let log_path = cwd.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = Command::new(bin());
        cmd.current_dir(cwd)
            .args(["--data-dir", &data_dir.to_string_lossy(), "run"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
            .env("RUST_LOG", &level)
            .env_remove("PASSERELLE_PASSPHRASE")
            .env("HOME", cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        for p in peers {
            cmd.args(["--peer", p]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn daemon: {e}"));
        let ready = ready_line(&mut child);
        let (addr, api, hsds) = match wait_ready_line(&ready, 30) {
            Some(listening) => listening,
            None => {
                let _ = child.kill();
                let status = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("daemon {name} did not start ({status:?}):\n{log}");
            }
        };
        Self {
            child,
            data_dir,
            addr,
            api,
            hsds,
        }
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The API token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("api.token"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A mechanism of several organisations and nodes, every node joined and holding its
/// organisation's key except those listed in `without_keys`.
pub fn mechanism(orgs: &[&str], nodes: &[(&str, &str)], without_keys: &[&str]) -> Setup {
    mechanism_edited(orgs, nodes, without_keys, |doc| doc)
}

/// A mechanism as `mechanism` sets it up, its configuration text changed by `edit` before the
/// officials sign it (an SOP rule a test needs, say).
pub fn mechanism_edited(
    orgs: &[&str],
    nodes: &[(&str, &str)],
    without_keys: &[&str],
    edit: impl Fn(String) -> String,
) -> Setup {
    let setup = Setup::new();
    setup.template("v1.toml", &["a", "b"], 2);
    setup.write("v1.toml", &edit(setup.read("v1.toml")));
    for org in orgs {
        let stanzas = setup.org_keygen(org);
        setup.append("v1.toml", &stanzas);
    }
    for (name, org) in nodes {
        let (_, stanza) = setup.node(name, org);
        setup.append("v1.toml", &stanza);
    }
    setup.sign("v1.toml", &["a", "b"], "v1.signed").expect_ok();
    for (name, org) in nodes {
        let data = format!("node-{name}");
        setup
            .run(&["--data-dir", &data, "join", "v1.signed"])
            .expect_ok();
        if !without_keys.contains(name) {
            setup
                .run(&[
                    "--data-dir",
                    &data,
                    "org",
                    "import-key",
                    &format!("org-{org}.key"),
                ])
                .expect_ok();
        }
    }
    setup
}

impl Setup {
    /// Runs a command as node `name`.
    pub fn node_run(&self, name: &str, args: &[&str]) -> Run {
        let data = format!("node-{name}");
        let mut all = vec!["--data-dir", data.as_str(), "--user", "tester"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// A node's command output as JSON.
    pub fn node_json(&self, name: &str, args: &[&str]) -> serde_json::Value {
        let out = self.node_run(name, args).expect_ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{name} {args:?}: not JSON ({e}): {}", out.stdout))
    }

    /// Writes a CASE.json for a general case (or `case_type`) and opens it at `node`.
    pub fn open_case(&self, node: &str, first_name: &str, case_type: &str) -> String {
        let file = format!("case-{first_name}.json");
        self.write(
            &file,
            &serde_json::json!({
                "case_type": case_type,
                "site": "medenine",
                "person": {"first_name": first_name, "age": 16, "languages": ["ar"],
                           "health": "fever and cough", "phone": "+216 00 000 000"},
                "needs": ["health", "shelter"],
                "consent": {"given": true, "guardian_given": true,
                            "guardian_name": "centre guardian", "explained_by": "Aïcha",
                            "explained": "referral to a health partner",
                            "recorded_at": "2026-11-27T09:00:00Z"}
            })
            .to_string(),
        );
        self.node_run(node, &["case", "open", "--from", &file])
            .expect_ok()
            .stdout
            .trim()
            .to_string()
    }
}

impl Setup {
    /// Writes bytes to a file in the setup's directory.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) {
        if let Err(e) = std::fs::write(self.file(name), bytes) {
            panic!("write {name}: {e}");
        }
    }
}

impl Setup {
    /// Writes a general case's CASE.json and opens it through `run` (which runs `passerelle`
    /// with the arguments it is given and returns its standard output).
    pub fn open_case_in(&self, run: impl Fn(&[&str]) -> String) -> String {
        self.write(
            "case-lan.json",
            &serde_json::json!({
                "case_type": "general", "site": "zarzis",
                "person": {"first_name": "Lina", "languages": ["ar"]},
                "needs": ["shelter"],
                "consent": {"given": true, "explained_by": "Aïcha", "recorded_at": "2026-11-27T09:00:00Z"}
            })
            .to_string(),
        );
        run(&["case", "open", "--from", "case-lan.json"])
    }
}

/// The arguments of `referral send`, written once: a case, the organisation it is sent to and
/// the service category, then the optional urgency, shared fields and note.
#[derive(Debug, Clone, Copy)]
pub struct ReferralSend<'a> {
    pub case: &'a str,
    pub to: &'a str,
    pub category: &'a str,
    pub urgency: Option<&'a str>,
    /// Comma-separated case fields, as `--share` takes them.
    pub share: Option<&'a str>,
    pub note: Option<&'a str>,
}

impl<'a> ReferralSend<'a> {
    /// A referral of `case` to `to` for `category`, with nothing optional given.
    pub fn new(case: &'a str, to: &'a str, category: &'a str) -> Self {
        Self {
            case,
            to,
            category,
            urgency: None,
            share: None,
            note: None,
        }
    }

    pub fn urgency(self, urgency: &'a str) -> Self {
        Self {
            urgency: Some(urgency),
            ..self
        }
    }

    pub fn share(self, fields: &'a str) -> Self {
        Self {
            share: Some(fields),
            ..self
        }
    }

    pub fn note(self, note: &'a str) -> Self {
        Self {
            note: Some(note),
            ..self
        }
    }

    /// The command line: `referral send --case … --to … --category …` and the options given,
    /// in that order.
    pub fn args(&self) -> Vec<&'a str> {
        let mut args = vec![
            "referral",
            "send",
            "--case",
            self.case,
            "--to",
            self.to,
            "--category",
            self.category,
        ];
        for (flag, value) in [
            ("--urgency", self.urgency),
            ("--share", self.share),
            ("--note", self.note),
        ] {
            if let Some(value) = value {
                args.extend([flag, value]);
            }
        }
        args
    }
}

impl Setup {
    /// Runs `referral send` as node `node`.
    pub fn send_referral(&self, node: &str, referral: &ReferralSend<'_>) -> Run {
        self.node_run(node, &referral.args())
    }
}

#[cfg(test)]
mod tests {
    use super::ReferralSend;

    #[test]
    fn referral_send_gives_its_options_in_order_and_only_those_given() {
        let bare = ReferralSend::new("c0ffee", "mdm", "health");
        assert_eq!(
            bare.args(),
            [
                "referral",
                "send",
                "--case",
                "c0ffee",
                "--to",
                "mdm",
                "--category",
                "health"
            ]
        );
        let full = bare.note("today").share("first_name,age").urgency("urgent");
        assert_eq!(
            full.args()[8..],
            [
                "--urgency",
                "urgent",
                "--share",
                "first_name,age",
                "--note",
                "today"
            ]
        );
    }
}
