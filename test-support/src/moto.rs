//! A real `moto_server` (the moto AWS emulator) on a free loopback port, for
//! tests and benchmarks that exercise the AWS source through the real SDK.
//! Also isolates the process's AWS environment so the standard credential
//! chain sees only profiles this helper writes, never the host's.
//!
//! Install moto with `pip install 'moto[server]'`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_iam::config::{BehaviorVersion, Credentials, Region};
use permdrift::source::aws::AwsSourceOptions;

/// moto's fixed account.
pub const ACCOUNT_ID: &str = "123456789012";
/// Profile with static keys moto accepts (moto does not check them by default).
pub const PROFILE: &str = "permdrift-moto";
/// Profile whose keys come from `set_process_credentials` (a `credential_process`).
pub const PROCESS_PROFILE: &str = "permdrift-process";

pub struct Moto {
    child: Child,
    watchdog: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Moto {
    /// One server per test binary, started on first use; tests share it and
    /// keep apart by entity names. A watchdog ends it when the binary exits.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(|| Moto::start(&[]))
    }

    /// A private server, with extra environment for moto (for example
    /// `INITIAL_NO_AUTH_ACTION_COUNT` to enforce IAM auth). Killed on drop.
    pub fn start(env: &[(&str, &str)]) -> Moto {
        let aws = aws_env();
        let mut last_error = String::new();
        // A port found free can be taken before moto binds it; try a few.
        for attempt in 0..3 {
            let port = free_port();
            let log = aws.dir.join(format!("moto-{port}-{attempt}.log"));
            let child = spawn_moto(port, env, &log);
            let mut moto = Moto {
                watchdog: spawn_watchdog(child.id(), &log),
                child,
                port,
                log,
            };
            match moto.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return moto,
                Err(e) => last_error = e,
            }
        }
        panic!("moto_server did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An IAM client with dummy static credentials, for populating moto.
    pub fn iam(&self) -> aws_sdk_iam::Client {
        self.iam_with_keys("testing", "testing")
    }

    pub fn iam_with_keys(&self, key: &str, secret: &str) -> aws_sdk_iam::Client {
        let conf = aws_sdk_iam::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::from_static("us-east-1"))
            .credentials_provider(Credentials::new(key, secret, None, None, "moto-test"))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_iam::Client::from_conf(conf)
    }

    /// Options for `fetch_account` that go through the standard credential
    /// chain (a profile in the isolated config files) to this server.
    pub fn source_options(&self) -> AwsSourceOptions {
        aws_env();
        AwsSourceOptions {
            profile: Some(PROFILE.into()),
            endpoint_url: Some(self.endpoint()),
            max_attempts: 3,
            ..AwsSourceOptions::default()
        }
    }

    /// Requests moto has served so far, counted from its request log (an
    /// independent check on clients' own counts).
    pub fn served_requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|log| log.lines().filter(|l| l.contains("\"POST ")).count())
            .unwrap_or(0)
    }

    /// Raw POST of a query-protocol action; returns moto's XML body. moto
    /// routes by the credential scope in the Authorization header and ignores
    /// the signature.
    pub fn raw_query(&self, service: &str, form: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        let request = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {len}\r\n\r\n{form}",
            port = self.port,
            len = form.len(),
        );
        stream.write_all(request.as_bytes()).expect("send to moto");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read from moto");
        let (head, body) = response
            .split_once("\r\n\r\n")
            .expect("moto answered with an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "moto said {head}\n{body}");
        body.to_owned()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                if log.contains("No module named") {
                    panic!(
                        "moto is not installed: run `pip install 'moto[server]'` \
                         (moto_server must be on PATH)\n{log}"
                    );
                }
                return Err(format!("moto_server exited with {status}:\n{log}"));
            }
            if http_answers(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("moto_server did not answer within {timeout:?}"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(watchdog) = &mut self.watchdog {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn spawn_moto(port: u16, env: &[(&str, &str)], log: &Path) -> Child {
    let port_arg = port.to_string();
    let args = ["-H", "127.0.0.1", "-p", port_arg.as_str()];
    let command = |program: &str, prefix: &[&str]| {
        let log_file = std::fs::File::create(log).expect("create moto log");
        let err_file = log_file.try_clone().expect("clone moto log");
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file);
        cmd.spawn()
    };
    match command("moto_server", &[]) {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            command("python3", &["-m", "moto.server"]).unwrap_or_else(|e| {
                panic!(
                    "neither moto_server nor python3 could be started ({e}): \
                     install moto with `pip install 'moto[server]'`"
                )
            })
        }
        Err(e) => panic!("moto_server could not be started: {e}"),
    }
}

/// Ends moto when this process goes away without dropping it (statics are
/// never dropped): polls the test process's PID, then kills moto's PID and
/// removes its log.
fn spawn_watchdog(moto_pid: u32, log: &Path) -> Option<Child> {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill {moto_pid} 2>/dev/null; rm -f '{log}'",
        parent = std::process::id(),
        log = log.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

fn http_answers(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// The isolated AWS configuration this process runs with.
pub struct AwsEnv {
    pub dir: PathBuf,
}

/// Points the standard credential chain at config files in a temporary
/// directory and clears every host AWS variable, once per process.
pub fn aws_env() -> &'static AwsEnv {
    static ENV: OnceLock<AwsEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        remove_stale_env_dirs();
        let dir = std::env::temp_dir().join(format!("{ENV_DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create aws config dir");
        let config = dir.join("config");
        let credentials = dir.join("credentials");
        let process_creds = dir.join("process-credentials.json");
        // No region in the profile: the source must fall back to us-east-1.
        std::fs::write(
            &config,
            format!(
                "[profile {PROFILE}]\noutput = json\n\n[profile {PROCESS_PROFILE}]\n\
                 credential_process = cat {}\n",
                process_creds.display()
            ),
        )
        .expect("write aws config");
        std::fs::write(
            &credentials,
            format!("[{PROFILE}]\naws_access_key_id = testing\naws_secret_access_key = testing\n"),
        )
        .expect("write aws credentials");
        const CLEARED: &[&str] = &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_IAM",
            "AWS_ENDPOINT_URL_STS",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_MAX_ATTEMPTS",
            "AWS_RETRY_MODE",
        ];
        // SAFETY: runs once, before any test in this binary reads the AWS
        // environment (every test that touches AWS calls this first, and the
        // OnceLock makes concurrent callers wait until it is done).
        #[allow(unsafe_code)] // edition 2024 makes set_var unsafe; see SAFETY
        unsafe {
            for name in CLEARED {
                std::env::remove_var(name);
            }
            std::env::set_var("AWS_CONFIG_FILE", &config);
            std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &credentials);
            // Never probe the instance metadata address from a test.
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
        AwsEnv { dir }
    })
}

const ENV_DIR_PREFIX: &str = "permdrift-aws-";

/// Removes config directories left by earlier test processes that are gone
/// (a static's directory is never cleaned up by its own process).
fn remove_stale_env_dirs() {
    if !Path::new("/proc/self").exists() {
        return; // cannot tell live processes from dead ones here
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(ENV_DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Sets the keys `PROCESS_PROFILE` hands out (written atomically, since the
/// chain may read the file at any time).
pub fn set_process_credentials(key: &str, secret: &str) {
    let env = aws_env();
    let tmp = env.dir.join("process-credentials.json.tmp");
    std::fs::write(
        &tmp,
        format!(r#"{{"Version": 1, "AccessKeyId": "{key}", "SecretAccessKey": "{secret}"}}"#),
    )
    .expect("write process credentials");
    std::fs::rename(&tmp, env.dir.join("process-credentials.json"))
        .expect("publish process credentials");
}
