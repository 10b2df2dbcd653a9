//! A real BuildGrid REAPI server for the remote cache tests, one per test, on a free local port.
//!
//! No fakes: the remote client is only as good as what a real server accepts. The server is
//! cache-only (action cache, CAS, ByteStream over a disk store in a temp dir); `scripts/test`
//! installs it into `target/buildgrid-venv` and exports `CUENV_TEST_BGD`. The child runs in
//! its own process group, which is killed when the `BuildGrid` drops.
//!
//! With [`BuildGridOptions::tls`] the server speaks TLS with a certificate for `127.0.0.1` and
//! `localhost` signed by a throwaway CA made for that server alone (see [`BuildGrid::ca_cert_path`]).

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cuenv_actors::remote::{RemoteSettings, RemoteTuning};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// How long a server may take to listen before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The HS256 secret of servers that require a token.
const JWT_SECRET: &str = "cuenv-test-secret-0123456789abcdef0123456789abcdef";

/// What kind of server to start.
#[derive(Debug, Clone)]
pub(crate) struct BuildGridOptions {
    /// The instance the tests use.
    pub(crate) instance_name: String,
    /// Whether that instance's action cache accepts updates.
    pub(crate) allow_updates: bool,
    /// A second instance over the same action cache that always accepts updates, so a test
    /// can seed a read-only instance.
    pub(crate) writer_instance: Option<String>,
    /// Require a JWT (HS256, see [`BuildGrid::token`]) on every call.
    pub(crate) require_token: bool,
    /// Serve TLS (`grpcs://`) with a certificate for `127.0.0.1` and `localhost` signed by a
    /// throwaway CA; [`BuildGrid::settings`] then trusts that CA.
    pub(crate) tls: bool,
    /// The server's gRPC worker threads, which is also the most calls it serves at once
    /// (more are refused with `RESOURCE_EXHAUSTED`); BuildGrid's default is 5 per CPU, and
    /// it accepts no fewer than 5.
    pub(crate) workers: Option<u32>,
}

impl Default for BuildGridOptions {
    fn default() -> Self {
        BuildGridOptions {
            instance_name: String::new(),
            allow_updates: true,
            writer_instance: None,
            require_token: false,
            tls: false,
            workers: None,
        }
    }
}

/// A running BuildGrid server.
pub(crate) struct BuildGrid {
    options: BuildGridOptions,
    bgd: PathBuf,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

/// The `bgd` to run: `$CUENV_TEST_BGD`, else the venv `scripts/test` creates.
fn bgd() -> PathBuf {
    if let Some(path) = std::env::var_os("CUENV_TEST_BGD") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/buildgrid-venv/bin/bgd");
    assert!(
        venv.exists(),
        "BuildGrid is not installed: CUENV_TEST_BGD is unset and {} does not exist; run scripts/test \
         (it installs BuildGrid into target/buildgrid-venv) or set CUENV_TEST_BGD",
        venv.display()
    );
    venv
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

impl BuildGrid {
    /// Starts a server and waits until it accepts connections.
    pub(crate) async fn start(options: BuildGridOptions) -> BuildGrid {
        let dir = tempfile::tempdir().expect("a temp dir");
        fs::create_dir_all(dir.path().join("cas")).expect("the CAS dir");
        fs::write(dir.path().join("jwt.secret"), JWT_SECRET).expect("the JWT secret");
        if options.tls {
            write_certificates(dir.path());
        }
        let mut grid = BuildGrid { options, bgd: bgd(), dir, port: free_port(), child: None };
        // The port was free when picked; another process may take it before the server binds
        // it, so a server that exits before it listens gets a fresh port, a few times over.
        for attempt in 1.. {
            fs::write(grid.config_path(), grid.config()).expect("the server config");
            if grid.spawn_and_wait().await || attempt == 3 {
                break;
            }
            grid.port = free_port();
        }
        grid
    }

    /// Starts the server again on the same port and storage (the in-memory action cache
    /// starts empty).
    pub(crate) async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn_and_wait().await, "BuildGrid did not restart on port {}", self.port);
    }

    /// `grpc://127.0.0.1:PORT`, or `grpcs://127.0.0.1:PORT` for a TLS server (its certificate
    /// names the IP address as well as `localhost`).
    pub(crate) fn endpoint(&self) -> String {
        let scheme = if self.options.tls { "grpcs" } else { "grpc" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The files of the server's disk storage (one per CAS blob) that are `size` bytes long.
    pub(crate) fn stored_blobs_of_size(&self, size: u64) -> Vec<PathBuf> {
        let of_size = |path: &PathBuf| fs::metadata(path).is_ok_and(|meta| meta.len() == size);
        super::files_under(&self.dir.path().join("cas")).into_iter().filter(of_size).collect()
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub(crate) fn ca_cert_path(&self) -> PathBuf {
        assert!(self.options.tls, "only a server started with `tls` has a CA");
        self.dir.path().join(CA_CERT)
    }

    /// Client settings for this server's instance, with fault handling made fast for tests; a
    /// TLS server's CA is trusted.
    pub(crate) fn settings(&self) -> RemoteSettings {
        let mut settings = RemoteSettings::new(self.endpoint());
        settings.instance_name = self.options.instance_name.clone();
        settings.ca_cert = self.options.tls.then(|| self.ca_cert_path());
        settings.timeout = Duration::from_secs(10);
        settings.tuning = RemoteTuning {
            attempts: 2,
            base_delay: Duration::from_millis(5),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_millis(400),
            max_batch_bytes: None,
        };
        settings
    }

    /// A valid token for a server started with `require_token`, valid for an hour. Signed by
    /// the PyJWT that BuildGrid itself verifies with.
    pub(crate) fn token(&self) -> String {
        let python = self.bgd.with_file_name("python");
        let script = "import jwt, sys, time; print(jwt.encode({'sub': 'cuenv-test', \
                      'exp': int(time.time()) + 3600}, sys.argv[1], algorithm='HS256'))";
        let output =
            Command::new(&python).args(["-c", script, JWT_SECRET]).output().expect("run python");
        assert!(
            output.status.success(),
            "signing a JWT failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("a UTF-8 token").trim().to_owned()
    }

    /// Kills the server (and its process group) and reaps it.
    pub(crate) fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: killpg only sends a signal; the group is the one the child leads.
            unsafe { libc::killpg(pid, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("buildgrid.yml")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("server.stderr")
    }

    /// Starts the server; `false` if it exited before it listened (its port was taken).
    async fn spawn_and_wait(&mut self) -> bool {
        let stderr = fs::File::create(self.stderr_path()).expect("the server's stderr file");
        let child = Command::new(&self.bgd)
            .args(["server", "start"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("clone a file handle"))
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.bgd.display()));
        self.child = Some(child);
        self.wait_until_listening().await
    }

    async fn wait_until_listening(&mut self) -> bool {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        loop {
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            let log = || fs::read_to_string(self.stderr_path()).unwrap_or_default();
            if exited.is_some() && log().contains("in use") {
                self.kill();
                return false;
            }
            // Our own child must still be alive: a listener there could be another process.
            if exited.is_none()
                && TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
            {
                return true;
            }
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let log = log();
                self.kill();
                panic!(
                    "BuildGrid did not listen on {address} (exit: {exited:?}); its output:\n{log}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's YAML configuration (see /work/shared/NOTES.md and BuildGrid's
    /// `reference.yml`).
    fn config(&self) -> String {
        let options = &self.options;
        let mut yaml = format!(
            "server:\n  - !channel\n    address: \"127.0.0.1:{port}\"\n    insecure-mode: {insecure}\n",
            port = self.port,
            insecure = !options.tls,
        );
        if options.tls {
            let (key, cert) = (self.dir.path().join(SERVER_KEY), self.dir.path().join(SERVER_CERT));
            let _ = write!(
                yaml,
                "    credentials:\n      tls-server-key: {key:?}\n      tls-server-cert: {cert:?}\n"
            );
        }
        if let Some(workers) = options.workers {
            let _ = writeln!(yaml, "thread-pool-size: {workers}");
        }
        if options.require_token {
            let secret = self.dir.path().join("jwt.secret");
            let _ = write!(
                yaml,
                "authorization:\n  method: jwt\n  secret: {secret:?}\n  algorithm: hs256\n"
            );
        } else {
            yaml.push_str("authorization:\n  method: none\n");
        }
        let cas = self.dir.path().join("cas");
        let _ = write!(
            yaml,
            "storages:\n  - !disk-storage &cas\n    path: {cas:?}\n\
             caches:\n  - !lru-action-cache &writable\n    storage: *cas\n    max-cached-refs: 10000\n    \
             allow-updates: true\n    cache-failed-actions: true\n  \
             - !with-cache-action-cache &read-only\n    cache: *writable\n    fallback: *writable\n    \
             allow-updates: false\ninstances:\n"
        );
        let cache = if options.allow_updates { "writable" } else { "read-only" };
        yaml.push_str(&instance(&options.instance_name, cache));
        if let Some(writer) = &options.writer_instance {
            yaml.push_str(&instance(writer, "writable"));
        }
        yaml
    }
}

/// A TLS server's CA certificate (PEM), in its temp dir.
const CA_CERT: &str = "ca.pem";
/// A TLS server's certificate (PEM), in its temp dir.
const SERVER_CERT: &str = "server.pem";
/// A TLS server's private key (PKCS#8 PEM), in its temp dir.
const SERVER_KEY: &str = "server.key";

/// Writes a fresh CA and a server certificate for `127.0.0.1` and `localhost` signed by it
/// (ECDSA P-256, with the key) into `dir`.
fn write_certificates(dir: &Path) {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "cuenv test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a CA key"))
        .expect("a CA certificate");

    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("valid subject alternative names");
    server.distinguished_name.push(DnType::CommonName, "localhost");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("a server key");
    let cert = server.signed_by(&key, &ca).expect("a server certificate");

    fs::write(dir.join(CA_CERT), ca.pem()).expect("the CA certificate");
    fs::write(dir.join(SERVER_CERT), cert.pem()).expect("the server certificate");
    fs::write(dir.join(SERVER_KEY), key.serialize_pem()).expect("the server key");
}

fn instance(name: &str, cache: &str) -> String {
    format!(
        "  - name: {name:?}\n    services:\n      - !action-cache\n        cache: *{cache}\n      \
         - !cas\n        storage: *cas\n      - !bytestream\n        storage: *cas\n"
    )
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        self.kill();
    }
}
