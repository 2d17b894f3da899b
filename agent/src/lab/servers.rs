//! The server in every lab pod (`netwarden lab serve`, run inside the pod's namespace):
//! on each TCP port it greets every connection with the pod's name, on each UDP port it
//! answers every datagram with the pod's name. A reply is how the prober knows it reached
//! the pod.
use std::{
    io::Write,
    net::{Ipv4Addr, TcpListener, UdpSocket},
    path::Path,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {protocol} port {port}: {source}")]
    Listen {
        protocol: &'static str,
        port: u16,
        source: std::io::Error,
    },
    #[error("cannot create {}: {source}", path.display())]
    Ready {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Serves until killed. Binds every port before serving any, so a bad port fails at once,
/// then creates `ready` so whoever started it knows every port answers.
pub fn serve(greeting: &str, tcp: &[u16], udp: &[u16], ready: &Path) -> Result<(), ServeError> {
    let any = Ipv4Addr::UNSPECIFIED;
    let listeners = tcp
        .iter()
        .map(|&port| {
            TcpListener::bind((any, port)).map_err(|source| ServeError::Listen {
                protocol: "TCP",
                port,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sockets = udp
        .iter()
        .map(|&port| {
            UdpSocket::bind((any, port)).map_err(|source| ServeError::Listen {
                protocol: "UDP",
                port,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::write(ready, b"").map_err(|source| ServeError::Ready {
        path: ready.to_owned(),
        source,
    })?;
    std::thread::scope(|scope| {
        for listener in &listeners {
            scope.spawn(move || {
                for mut stream in listener.incoming().flatten() {
                    let _ = stream.write_all(greeting.as_bytes());
                }
            });
        }
        for socket in &sockets {
            scope.spawn(move || {
                let mut buffer = [0u8; 512];
                while let Ok((_, peer)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(greeting.as_bytes(), peer);
                }
            });
        }
    });
    Ok(())
}
