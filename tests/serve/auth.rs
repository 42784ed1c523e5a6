//! Authentication: off loopback augur needs a token or refuses to start; with one, every route but
//! the probes answers 401 without it.
use super::daemon::*;
use super::http::{Conn, get};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-token-for-the-tests-0123";

fn get_with(port: u16, path: &str, auth: Option<&str>) -> super::http::Response {
    let mut c = Conn::open(port).unwrap();
    let extra: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    c.write_head("GET", path, None, 0, &extra).unwrap();
    c.read_response().unwrap()
}

#[test]
fn off_loopback_without_a_token_augur_refuses_to_start() {
    let dir = scratch("auth-refuse");
    config(&dir, "", "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(dir.join("augur.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("augur serve --listen 0.0.0.0:0 without a token is still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("token") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "it never listened");
}

#[test]
fn with_a_token_every_route_but_the_probes_needs_it() {
    let (d, _token) = with_token("auth-token", TOKEN);
    let dir = d.dir.clone();
    let port = d.port;
    assert_eq!(get(port, "/live").unwrap().status, 200);
    assert_eq!(get(port, "/ready").unwrap().status, 200);
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/v1/state",
        "/metrics",
        "/v1/openapi.yaml",
        "/v1/models/nope",
        "/nowhere",
    ] {
        let r = get_with(port, path, None);
        assert_error(&r, 401, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        assert_error(
            &get_with(port, path, Some("Bearer not-the-token-at-all-000")),
            401,
            "unauthorized",
        );
        assert_ne!(get_with(port, path, Some(&bearer)).status, 401, "{path}");
    }
    assert_eq!(get_with(port, "/v1/state", Some(&bearer)).status, 200);
    drop(d);

    // The operator may open /metrics to a Prometheus that cannot send a token.
    let d = Daemon::start(&dir, &[("AUGUR_AUTH_METRICS_PUBLIC", "true")]);
    d.wait_ready();
    assert_eq!(get(d.port, "/metrics").unwrap().status, 200);
    assert_error(&get(d.port, "/v1/state").unwrap(), 401, "unauthorized");
}
