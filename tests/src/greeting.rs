//! Reachability over real TCP: a server in a pod that greets every connection, and a
//! client that counts only a greeting received (a SYN let through with its reply dropped
//! is not a connection).
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use netwarden_agent::netns;

use crate::node::Pod;

/// The port every [`Server`] listens on.
pub const PORT: u16 = 8080;

/// Whether `from` completes a TCP exchange with `to`:PORT (connect, then read the
/// server's greeting) within 300 ms.
pub fn connects(from: &Pod, to: Ipv4Addr) -> bool {
    connects_from(&from.netns.path(), to)
}

/// [`connects`] from the network namespace at `netns`.
pub fn connects_from(netns: &Path, to: Ipv4Addr) -> bool {
    netns::run_in(netns, move || {
        let address = SocketAddr::from((to, PORT));
        let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(300))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        let mut greeting = [0; 2];
        stream.read_exact(&mut greeting).is_ok() && &greeting == b"hi"
    })
    .expect("client namespace")
}

/// A TCP server on PORT in a pod that greets every connection; stopped on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(pod: &Pod) -> Self {
        let listener = netns::run_in(&pod.netns.path(), || {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT))
        })
        .expect("pod namespace")
        .expect("listening");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(b"hi");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
