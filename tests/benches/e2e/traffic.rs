//! Traffic between a client and a server namespace: TCP request/response over one
//! connection, new connections (connect, one byte each way, close), throughput (iperf3),
//! and single connection attempts to tell allowed from denied.
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use netwarden_agent::netns::run_in;
use nix::sys::socket::{setsockopt, sockopt::Linger};

/// Request/response: one connection, 64-byte messages echoed back.
pub const RR_PORT: u16 = 7001;
/// New connections: one byte each way per connection.
pub const CRR_PORT: u16 = 7002;
pub const IPERF_PORT: u16 = 7003;
/// What the policies allow.
pub const PORTS: [u16; 3] = [RR_PORT, CRR_PORT, IPERF_PORT];

const MESSAGE: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Attempts in a row that must agree before a verdict counts as in force.
const STEADY: u32 = 3;
/// How long either end waits for the other. A policy change may drop a connection's
/// packets mid-way (netwarden re-checks established flows): a read that will never be
/// answered must fail instead of stopping the bench.
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// The servers of one namespace: echo threads for the life of the process (their
/// sockets go with the namespace) and an iperf3 server, killed on drop.
pub struct Servers {
    iperf: Child,
}

impl Servers {
    /// Starts both servers in `netns` (a name under /run/netns), listening on every
    /// address of both families.
    pub fn start(netns: &str) -> Self {
        let path = netns_path(netns);
        let (ready, bound) = mpsc::channel();
        std::thread::spawn(move || {
            let served = run_in(&path, || {
                let any = Ipv6Addr::UNSPECIFIED;
                let listeners = TcpListener::bind((any, RR_PORT))
                    .and_then(|rr| Ok((rr, TcpListener::bind((any, CRR_PORT))?)));
                let (rr, crr) = match listeners {
                    Ok(pair) => pair,
                    Err(e) => return ready.send(Err(e.to_string())).unwrap_or(()),
                };
                let _ = ready.send(Ok(()));
                std::thread::scope(|scope| {
                    scope.spawn(|| {
                        for stream in rr.incoming().flatten() {
                            std::thread::spawn(move || echo(stream));
                        }
                    });
                    for stream in crr.incoming().flatten() {
                        answer_once(stream);
                    }
                });
            });
            if let Err(e) = served {
                eprintln!("echo servers: {e}");
            }
        });
        match bound.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("echo servers in {netns}: {e}"),
            Err(_) => panic!("echo servers in {netns}: could not enter the namespace"),
        }
        let iperf = Command::new("ip")
            .args(["netns", "exec", netns, "iperf3", "--server", "--port"])
            .arg(IPERF_PORT.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("iperf3 server in {netns}: {e} (`cargo xtask setup` installs iperf3)")
            });
        Self { iperf }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.iperf.kill();
        let _ = self.iperf.wait();
    }
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    let mut message = [0u8; MESSAGE];
    while stream.read_exact(&mut message).is_ok() {
        if stream.write_all(&message).is_err() {
            return;
        }
    }
}

/// One byte back, then wait for the client to close (it resets, so neither side keeps
/// the connection in TIME_WAIT).
fn answer_once(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    let mut byte = [0u8; 1];
    if stream.read_exact(&mut byte).is_ok() && stream.write_all(&byte).is_ok() {
        let _ = stream.read(&mut byte);
    }
}

pub fn netns_path(netns: &str) -> PathBuf {
    Path::new("/run/netns").join(netns)
}

/// Requests answered per second over one connection from `client` to `server`.
pub fn request_rate(client: &str, server: IpAddr, length: Duration) -> f64 {
    in_netns(client, || {
        let mut stream = TcpStream::connect_timeout(&(server, RR_PORT).into(), CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut message = [7u8; MESSAGE];
        let started = Instant::now();
        let mut done = 0u64;
        while started.elapsed() < length {
            stream.write_all(&message)?;
            stream.read_exact(&mut message)?;
            done += 1;
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    })
    .unwrap_or_else(|e| panic!("request/response from {client} to {server}: {e}"))
}

/// New connections per second from `client` to `server`, one at a time.
pub fn connection_rate(client: &str, server: IpAddr, length: Duration) -> f64 {
    let target: SocketAddr = (server, CRR_PORT).into();
    in_netns(client, || {
        let started = Instant::now();
        let mut done = 0u64;
        while started.elapsed() < length {
            one_connection(target)?;
            done += 1;
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    })
    .unwrap_or_else(|e| panic!("new connections from {client} to {server}: {e}"))
}

/// Connect, one byte each way, close with a reset.
fn one_connection(target: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.write_all(&[1])?;
    stream.read_exact(&mut [0])?;
    let reset = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(&stream, Linger, &reset).map_err(std::io::Error::from)
}

/// Whether one connection from `client` to `server` completes.
pub fn reaches(client: &str, server: IpAddr) -> bool {
    in_netns(client, || one_connection((server, CRR_PORT).into())).is_ok()
}

/// Waits (up to `within`) until `client` reaching `server` is `expected` in [`STEADY`]
/// attempts in a row (one attempt can time out on a busy machine, and a policy may take
/// a moment to be in force); panics with `what` when it never is.
pub fn wait_until(client: &str, server: IpAddr, expected: bool, within: Duration, what: &str) {
    let started = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < STEADY {
        if reaches(client, server) == expected {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        assert!(
            started.elapsed() < within,
            "{what}: {client} -> {server} still {} after {within:?}",
            if expected { "denied" } else { "allowed" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bits per second iperf3 moves from `client` to `server` in `length`.
pub fn throughput(client: &str, server: IpAddr, length: Duration) -> f64 {
    let out = Command::new("ip")
        .args(["netns", "exec", client, "iperf3", "--json", "--client"])
        .arg(server.to_string())
        .args(["--port", &IPERF_PORT.to_string(), "--time"])
        .arg(length.as_secs().max(1).to_string())
        .output()
        .unwrap_or_else(|e| panic!("iperf3 in {client}: {e}"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 {client} -> {server}: no JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("iperf3 {client} -> {server}: {}", report["error"]))
}

fn in_netns<T: Send>(
    netns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    run_in(&netns_path(netns), f).map_err(std::io::Error::other)?
}
