//! Warehouses by URL, end to end as root: an S3-compatible server (moto,
//! started by each test on 127.0.0.1) and `python3 -m http.server`. Pack
//! to S3, formula runs with inputs from it and outputs saved to it, one
//! download for ten concurrent runs, tampered and missing objects, bad
//! URLs, an unreachable store, a cut-off download, and signatures checked
//! by a server that enforces IAM (right and wrong credentials). No traffic leaves
//! 127.0.0.1: every AWS_* variable of the host is removed.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BUCKET: &str = "wares";

/// A server process of the test's own, killed (by its pid) on drop.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether `cmd` can be run; in CI its absence is a failure, never a skip.
fn have(cmd: &str) -> bool {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).stdout(Stdio::null()).status().unwrap();
    if found.success() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{cmd} is missing (CI=true): scripts/test.sh installs it (pip install 'moto[server]')"
    );
    eprintln!("skipped: {cmd} missing");
    false
}

impl Server {
    /// `moto_server` on a free port; `env` for its settings.
    fn moto(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::Builder::new().prefix("rpt-moto-").tempdir().unwrap();
        let log = dir.path().join("requests.log");
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server { child, port, log, _dir: dir };
        server.wait_up();
        server
    }

    /// `python3 -m http.server` serving `root`.
    fn http(root: &Path) -> Server {
        let dir = tempfile::Builder::new().prefix("rpt-http-").tempdir().unwrap();
        let log = dir.path().join("requests.log");
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server { child, port, log, _dir: dir };
        server.wait_up();
        server
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "server on port {} never came up", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A request to the server, as user `test` (moto refuses anonymous
    /// requests to a private bucket but checks no signature); its status.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=00\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// How many GETs of `path` the server logged.
    fn gets(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap();
        log.lines().filter(|l| l.contains(&format!("\"GET {path} "))).count()
    }
}

/// A runner with its own state dir and config, whose download area and
/// S3 settings are the test's own.
struct Remote {
    repeatr: Repeatr,
    download: PathBuf,
}

impl Remote {
    fn new(endpoint: &str) -> Remote {
        let repeatr = Repeatr::new();
        let download = repeatr.state.path().join("downloads");
        let config = repeatr.state.path().join("default.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text += &format!(
            "[warehouse]\ndownload_dir = {:?}\n[warehouse.s3]\nendpoint = {endpoint:?}\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            download.to_str().unwrap()
        );
        std::fs::write(&config, text).unwrap();
        Remote { repeatr, download }
    }

    fn cmd(&self) -> Command {
        let mut c = self.repeatr.cmd();
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.env_remove("REPEATR_WAREHOUSE").stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn formula(&self, root: &str) -> PathBuf {
        let p = self.repeatr.state.path().join("f.json");
        let json = format!(
            r#"{{"inputs": {{"/": "{root}"}},
  "action": {{"exec": ["/bin/sh", "-c", "echo built > /out/a; mkdir /out/d; echo x > /out/d/b"]}},
  "outputs": {{"/out": {{}}}}}}"#
        );
        std::fs::write(&p, json).unwrap();
        p
    }

    /// What the download area holds: names under tar/ and locks/.
    fn area(&self) -> Vec<String> {
        let mut names = Vec::new();
        for sub in ["tar", "locks"] {
            if let Ok(rd) = std::fs::read_dir(self.download.join(sub)) {
                names.extend(rd.map(|e| format!("{sub}/{}", e.unwrap().file_name().to_string_lossy())));
            }
        }
        names.sort();
        names
    }
}

fn record(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no record ({e}): {}", stderr(out)))
}

fn hash(id: &str) -> &str {
    id.strip_prefix("tar:").unwrap()
}

/// moto with a bucket, a runner set up for it, and the busybox rootfs
/// packed straight to `s3://wares/team`.
fn s3_bench() -> Option<(Server, Remote, String)> {
    if !require_root() || !have("moto_server") {
        return None;
    }
    let moto = Server::moto(&[]);
    assert_eq!(moto.request("PUT", &format!("/{BUCKET}"), b""), 200);
    let r = Remote::new(&moto.url());
    let rootfs = Rootfs::busybox();
    let out = r.run(&["pack", rootfs.path().to_str().unwrap(), "--warehouse", "s3://wares/team"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let root = stdout(&out).trim().to_string();
    Some((moto, r, root))
}

#[test]
fn a_formula_runs_from_s3_saves_there_and_a_second_run_gives_the_same_ids() {
    let Some((moto, r, root)) = s3_bench() else { return };
    let key = format!("/{BUCKET}/team/tar/{}.tar", hash(&root));
    assert_eq!(moto.request("HEAD", &key, b""), 200, "pack did not upload");
    // The packing host keeps its copy: empty the area so the run downloads.
    std::fs::remove_dir_all(&r.download).unwrap();
    let f = r.formula(&root);
    let first = r.run(&["run", f.to_str().unwrap(), "--warehouse", "s3://wares/team"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let out_id = record(&first)["results"]["/out"].as_str().unwrap().to_string();
    assert_eq!(moto.request("HEAD", &format!("/{BUCKET}/team/tar/{}.tar", hash(&out_id)), b""), 200);
    assert_eq!(moto.gets(&key), 1);

    let second = r.run(&["run", f.to_str().unwrap(), "--warehouse", "s3://wares/team"]);
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(record(&second)["results"], record(&first)["results"]);
    assert_eq!(moto.gets(&key), 1, "the second run downloaded the root again");

    // By hand: fetch the output on another "host" (a fresh area) into a
    // local warehouse, and run from that with S3 second in the list.
    std::fs::remove_dir_all(&r.download).unwrap();
    let local = r.repeatr.state.path().join("local");
    let out = r.run(&["fetch", &out_id, "--warehouse", "s3://wares/team", "--save-to", local.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).trim().ends_with(&format!("downloads/tar/{}.tar", hash(&out_id))), "{}", stdout(&out));
    assert!(local.join(format!("tar/{}.tar", hash(&out_id))).exists());
    let local_str = local.to_str().unwrap();
    let third = r.run(&["run", f.to_str().unwrap(), "--warehouse", local_str, "--warehouse", "s3://wares/team"]);
    assert_eq!(code(&third), 0, "{}", stderr(&third));
    assert_eq!(record(&third)["results"], record(&first)["results"]);
    assert_eq!(moto.gets(&key), 2, "the root came from S3 once more (not in the local warehouse)");
}

#[test]
fn ten_concurrent_runs_download_one_remote_ware_once() {
    let Some((moto, r, root)) = s3_bench() else { return };
    std::fs::remove_dir_all(&r.download).unwrap();
    let f = r.formula(&root);
    let runs: Vec<Runner> = (0..10)
        .map(|_| {
            Runner::new(
                r.cmd()
                    .args(["run", f.to_str().unwrap(), "--warehouse", "s3://wares/team"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let mut results = Vec::new();
    for run in runs {
        let out = run.into_inner().wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        results.push(record(&out)["results"].clone());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    assert_eq!(moto.gets(&format!("/{BUCKET}/team/tar/{}.tar", hash(&root))), 1, "one download for ten runs");
    assert!(r.area().iter().all(|n| n.starts_with("tar/") && n.ends_with(".tar")), "{:?}", r.area());
}

#[test]
fn a_tampered_object_is_refused_naming_its_url_and_a_missing_one_is_122() {
    let Some((moto, r, root)) = s3_bench() else { return };
    std::fs::remove_dir_all(&r.download).unwrap();
    let key = format!("/{BUCKET}/team/tar/{}.tar", hash(&root));
    let f = r.formula(&root);
    let args = ["run", f.to_str().unwrap(), "--warehouse", "s3://wares/team"];

    // Another ware's bytes under the root's name: a well-formed ware that
    // hashes to something else.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("x"), "not the root").unwrap();
    let wares = r.repeatr.state.path().join("other-wares");
    let out = r.run(&["pack", other.path().to_str().unwrap(), "--warehouse", wares.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let other_bytes = std::fs::read(wares.join(format!("tar/{}.tar", hash(stdout(&out).trim())))).unwrap();
    for (bytes, says) in [(&other_bytes[..], "hashes to"), (&b"not a tar at all"[..], "not a ware")] {
        assert_eq!(moto.request("PUT", &key, bytes), 200);
        let out = r.run(&args);
        let err = stderr(&out);
        assert_eq!(code(&out), 123, "{err}");
        assert!(err.contains(&format!("s3://wares/team/tar/{}.tar", hash(&root))) && err.contains(says), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(r.area().is_empty(), "left in the download area: {:?}", r.area());
    }

    assert_eq!(moto.request("DELETE", &key, b""), 204);
    let out = r.run(&args);
    let err = stderr(&out);
    assert_eq!(code(&out), 122, "{err}");
    assert!(err.contains("s3://wares/team/tar/") && err.lines().count() == 1, "{err}");
    assert!(r.area().is_empty(), "{:?}", r.area());
}

#[test]
fn an_http_warehouse_serves_wares_and_is_read_only() {
    if !require_root() {
        return;
    }
    let r = Remote::new("http://127.0.0.1:1");
    let wares = r.repeatr.state.path().join("served");
    let rootfs = Rootfs::busybox();
    let out = r.run(&["pack", rootfs.path().to_str().unwrap(), "--warehouse", wares.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let root = stdout(&out).trim().to_string();
    let http = Server::http(&wares);
    let f = r.formula(&root);
    let saved = r.repeatr.state.path().join("saved");
    let url = format!("{}/", http.url());
    let out = r.run(&["run", f.to_str().unwrap(), "--warehouse", &url, "--save-to", saved.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out_id = record(&out)["results"]["/out"].as_str().unwrap().to_string();
    assert!(saved.join(format!("tar/{}.tar", hash(&out_id))).exists());
    assert_eq!(http.gets(&format!("/tar/{}.tar", hash(&root))), 1);

    // Outputs cannot go to it: refused before anything runs.
    let out = r.run(&["run", f.to_str().unwrap(), "--warehouse", &url]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("read-only") && stderr(&out).contains(&http.url()), "{}", stderr(&out));
    // A ware it does not have: 404, so 122.
    let missing = format!("tar:{}", "1".repeat(64));
    let out = r.run(&["fetch", &missing, "--warehouse", &url]);
    assert_eq!(code(&out), 122, "{}", stderr(&out));
}

#[test]
fn bad_urls_and_unreachable_stores_say_which_url() {
    if !require_root() {
        return;
    }
    let missing = format!("tar:{}", "2".repeat(64));
    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = Remote::new(&dead);
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (vec!["--warehouse".into(), "gs://b/p".into()], 125, "\"gs://b/p\"".into()),
        (vec!["--warehouse".into(), "s3://Bad_Bucket".into()], 125, "s3://Bad_Bucket".into()),
        (vec!["--warehouse".into(), "s3://wares/p".into()], 125, dead.clone()),
        (vec!["--warehouse".into(), format!("{dead}/w")], 125, dead.clone()),
    ];
    for (flags, want, names) in cases {
        let mut args = vec!["fetch".to_string(), missing.clone()];
        args.extend(flags);
        let out = r.cmd().args(&args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), want, "{args:?}: {err}");
        assert!(err.contains(&names) && err.lines().count() == 1, "{args:?}: {err}");
        assert!(r.area().is_empty(), "{:?}", r.area());
    }
}

/// Makes an IAM user with a key and a bucket `wares` in a moto that
/// enforces IAM (its first 4 requests are let through unauthenticated);
/// prints the key id and secret.
const IAM_SETUP: &str = r#"
import boto3, json, sys
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="u")
iam.put_user_policy(UserName="u", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="u")["AccessKey"]
kw.update(aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"])
boto3.client("s3", **kw).create_bucket(Bucket="wares")
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;

/// A Python with boto3 (a dependency of moto): `python3`, or the one
/// moto_server's script runs with (scripts/test.sh's venv).
fn motos_python() -> String {
    let which = Command::new("sh").args(["-c", "command -v moto_server"]).output().unwrap();
    let script = std::fs::read_to_string(stdout(&which).trim()).unwrap_or_default();
    let shebang = script.lines().next().unwrap_or("").trim_start_matches("#!").trim().to_string();
    for python in ["python3".to_string(), shebang] {
        let ok = Command::new(&python).args(["-c", "import boto3"]).stderr(Stdio::null()).status();
        if ok.is_ok_and(|s| s.success()) {
            return python;
        }
    }
    panic!("no Python with boto3 found beside moto_server")
}

#[test]
fn a_store_that_checks_signatures_takes_ours_and_refuses_wrong_credentials() {
    if !require_root() || !have("moto_server") {
        return;
    }
    let strict = Server::moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let keys = Command::new(motos_python()).args(["-c", IAM_SETUP, &strict.url()]).output().unwrap();
    assert!(keys.status.success(), "{}", stderr(&keys));
    let keys = stdout(&keys);
    let (id, secret) = keys.trim().split_once(' ').unwrap();
    let r = Remote::new(&strict.url());
    let rootfs = Rootfs::busybox();
    let as_user = |secret: &str, key_id: &str, args: &[&str]| {
        r.cmd().env("AWS_ACCESS_KEY_ID", key_id).env("AWS_SECRET_ACCESS_KEY", secret).args(args).output().unwrap()
    };
    // Signed HEAD, PUT and GET, each checked by the server.
    let out = as_user(secret, id, &["pack", rootfs.path().to_str().unwrap(), "--warehouse", "s3://wares/p"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ware = stdout(&out).trim().to_string();
    std::fs::remove_dir_all(&r.download).unwrap();
    let out = as_user(secret, id, &["fetch", &ware, "--warehouse", "s3://wares/p"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::remove_dir_all(&r.download).unwrap();

    for (secret, key_id, says) in
        [("wrong", id, "SignatureDoesNotMatch"), (secret, "AKIANOSUCHKEY0000000", "InvalidAccessKeyId")]
    {
        let out = as_user(secret, key_id, &["fetch", &ware, "--warehouse", "s3://wares/p"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{err}");
        assert!(err.contains("s3://wares/p/tar/") && err.contains(says) && err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(r.area().is_empty(), "{:?}", r.area());
    }
}

/// A server that promises a whole ware and hangs up after a few bytes.
const CUT_OFF_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1048576")
        self.end_headers()
        self.wfile.write(b"\0" * 1000)
        self.wfile.flush()
        self.connection.close()
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn a_download_cut_off_midway_leaves_nothing_and_says_which_url() {
    if !require_root() {
        return;
    }
    let r = Remote::new("http://127.0.0.1:1");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let port = free_port();
    let child = Command::new("python3")
        .args(["-c", CUT_OFF_SERVER, &port.to_string()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server { child, port, log, _dir: dir };
    server.wait_up();
    let id = format!("tar:{}", "3".repeat(64));
    let out = r.run(&["fetch", &id, "--warehouse", &server.url()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert!(err.contains(&format!("{}/tar/{}.tar", server.url(), "3".repeat(64))) && err.lines().count() == 1, "{err}");
    assert!(r.area().is_empty(), "{:?}", r.area());
}
