//! systemd's notification protocol, with this test standing in for systemd: a
//! datagram socket named in `NOTIFY_SOCKET`, the daemon as a child process.

mod common;

use common::{process, signal};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(dir: &Path, notify_socket: &str, watchdog: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(dir.join("watch")).unwrap();
        let mut cmd = process();
        cmd.current_dir(dir)
            .env_remove("USERDROP_CONFIG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("NOTIFY_SOCKET", notify_socket)
            .args(["run", "--settle", "400"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in watchdog {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().expect("start the daemon"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next datagram, as its `KEY=VALUE` lines; None after `limit`.
fn receive(socket: &UnixDatagram, limit: Duration) -> Option<Vec<String>> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some(text.lines().map(str::to_owned).collect())
}

/// Receives until a datagram holds `line`; returns how many datagrams came before it.
fn wait_for(socket: &UnixDatagram, line: &str, limit: Duration) -> Vec<Vec<String>> {
    let started = Instant::now();
    let mut before = Vec::new();
    while started.elapsed() < limit {
        let Some(lines) = receive(socket, limit - started.elapsed()) else {
            break;
        };
        if lines.iter().any(|l| l == line) {
            return before;
        }
        before.push(lines);
    }
    panic!("no {line} within {limit:?}; got {before:?}");
}

#[test]
fn ready_then_watchdog_then_stopping_and_exit_0() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    // 300 ms: the daemon must ping every 150 ms.
    let daemon = Daemon::start(
        dir.path(),
        path.to_str().unwrap(),
        &[("WATCHDOG_USEC", "300000")],
    );

    let before = wait_for(&socket, "READY=1", Duration::from_secs(10));
    assert!(before.is_empty(), "sent before READY=1: {before:?}");
    let started = Instant::now();
    for _ in 0..3 {
        let other = wait_for(&socket, "WATCHDOG=1", Duration::from_secs(2));
        assert!(other.is_empty(), "{other:?}");
    }
    // Three pings at 150 ms intervals (the first at once): about 300 ms, well within
    // the 300 ms systemd would wait between two of them.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "{took:?}");

    signal(&daemon.child, "-TERM");
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10));
    let mut daemon = daemon;
    assert_eq!(daemon.child.wait().unwrap().code(), Some(0));
}

#[test]
fn an_abstract_socket_name_is_supported_and_no_watchdog_unless_asked() {
    use std::os::linux::net::SocketAddrExt;
    let dir = TempDir::new().unwrap();
    let name = format!("userdrop-test-{}-{:?}", std::process::id(), Instant::now());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let daemon = Daemon::start(dir.path(), &format!("@{name}"), &[]);

    let lines = {
        wait_for(&socket, "READY=1", Duration::from_secs(10));
        receive(&socket, Duration::from_millis(600))
    };
    assert_eq!(lines, None, "without WATCHDOG_USEC nothing follows READY=1");
    drop(daemon);
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_answered() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let daemon = Daemon::start(
        dir.path(),
        path.to_str().unwrap(),
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    wait_for(&socket, "READY=1", Duration::from_secs(10));
    assert_eq!(receive(&socket, Duration::from_millis(600)), None);
    signal(&daemon.child, "-TERM");
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10));
}
