//! `lab probe`: every ordered pair of pods on one network tries to reach the other over
//! that network's address, from its own address, all at once; the result is a truth
//! table.
use std::{
    collections::BTreeMap,
    io::Read,
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd},
    path::Path,
    time::Duration,
};

use serde::Serialize;

use super::{parallel, spec::PodName, spec::Protocol};
use crate::netns::run_in;

/// How long one attempt may take (TCP connect plus greeting, or UDP request and reply).
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// A pod's end of a probe: its namespace and its address on the probed network.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub pod: PodName,
    pub netns: String,
    pub address: Ipv4Addr,
}

/// The result: rows are sources, columns destinations, `true` = connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matrix {
    pub network: String,
    pub port: u16,
    pub protocol: Protocol,
    pub matrix: BTreeMap<PodName, BTreeMap<PodName, bool>>,
}

/// Probes every ordered pair of `endpoints` (a pod is not probed against itself).
pub fn probe(network: String, endpoints: &[Endpoint], port: u16, protocol: Protocol) -> Matrix {
    let pairs: Vec<(&Endpoint, &Endpoint)> = endpoints
        .iter()
        .flat_map(|from| endpoints.iter().map(move |to| (from, to)))
        .filter(|(from, to)| from.pod != to.pod)
        .collect();
    let results = parallel::map(&pairs, 128, |(from, to)| {
        let target = SocketAddrV4::new(to.address, port);
        let reached = run_in(
            &Path::new("/run/netns").join(&from.netns),
            || match protocol {
                Protocol::Tcp => tcp(from.address, target),
                Protocol::Udp => udp(from.address, target),
            },
        );
        matches!(reached, Ok(true))
    });
    let mut matrix: BTreeMap<PodName, BTreeMap<PodName, bool>> = endpoints
        .iter()
        .map(|e| (e.pod.clone(), BTreeMap::new()))
        .collect();
    for ((from, to), reached) in pairs.iter().zip(results) {
        matrix
            .get_mut(&from.pod)
            .expect("every source has a row")
            .insert(to.pod.clone(), reached);
    }
    Matrix {
        network,
        port,
        protocol,
        matrix,
    }
}

/// Connected: the handshake from `source` completes and the server's greeting arrives.
fn tcp(source: Ipv4Addr, target: SocketAddrV4) -> bool {
    // std connects only from an unbound socket; bind first, through libc, so the probe
    // leaves from the probed network's address even when two networks share a subnet.
    // SAFETY: plain socket syscalls on a descriptor this function owns.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd is a fresh socket; the stream owns (and closes) it from here on.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let sockaddr = |address: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // Linux bounds a blocking connect by the send timeout.
    if stream.set_write_timeout(Some(TIMEOUT)).is_err()
        || stream.set_read_timeout(Some(TIMEOUT)).is_err()
    {
        return false;
    }
    let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sockaddr(SocketAddrV4::new(source, 0));
    let remote = sockaddr(target);
    // SAFETY: the addresses are valid sockaddr_in values of `length` bytes.
    let connected = unsafe {
        libc::bind(
            stream.as_raw_fd(),
            (&local as *const libc::sockaddr_in).cast(),
            length,
        ) == 0
            && libc::connect(
                stream.as_raw_fd(),
                (&remote as *const libc::sockaddr_in).cast(),
                length,
            ) == 0
    };
    let mut stream = stream;
    let mut greeting = [0u8; 1];
    connected && matches!(stream.read(&mut greeting), Ok(1..))
}

/// Connected: a datagram from `source` is answered.
fn udp(source: Ipv4Addr, target: SocketAddrV4) -> bool {
    let Ok(socket) = UdpSocket::bind((source, 0)) else {
        return false;
    };
    let mut reply = [0u8; 512];
    socket.set_read_timeout(Some(TIMEOUT)).is_ok()
        && socket.send_to(b"probe", target).is_ok()
        && matches!(socket.recv_from(&mut reply), Ok((1.., from)) if from == target.into())
}

impl Matrix {
    /// The truth table: a header of destinations, one row per source; `.` connected,
    /// `X` not, blank on the diagonal.
    pub fn table(&self) -> String {
        let names: Vec<String> = self.matrix.keys().map(ToString::to_string).collect();
        let first = names.iter().map(String::len).max().unwrap_or(0).max(4);
        let mut out = format!(
            "{} {}/{} (rows: from, columns: to)\n{:first$}",
            self.network, self.protocol, self.port, "from"
        );
        for name in &names {
            out.push_str(&format!(" {name}"));
        }
        out.push('\n');
        for (from, row) in &self.matrix {
            out.push_str(&format!("{:first$}", from.to_string()));
            for (to, name) in self.matrix.keys().zip(&names) {
                let cell = match row.get(to) {
                    Some(true) => ".",
                    Some(false) => "X",
                    None => "",
                };
                out.push_str(&format!(" {cell:^width$}", width = name.len()));
            }
            out.push('\n');
        }
        out
    }
}
