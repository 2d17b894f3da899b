//! The time from a policy change to the first packet that sees the new verdict: a client
//! starts a new connection every millisecond while the policy goes from denying it to
//! allowing it; the figure is from the start of the change to the start of the first
//! attempt that connected.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use netwarden_agent::netns::run_in;
use tokio::{net::TcpStream, sync::mpsc, time};

use crate::traffic::{netns_path, CRR_PORT};

const PROBE_EVERY: Duration = Duration::from_millis(1);
/// Longer than the path's round trip, shorter than the SYN retransmission (1 s), so a SYN
/// dropped before the change never connects later.
const ATTEMPT: Duration = Duration::from_millis(200);
/// Probes that ran before the change, all of which must fail.
const LEAD: Duration = Duration::from_millis(50);
const GIVE_UP: Duration = Duration::from_secs(60);

/// Runs `change` while `client` probes `server`; the time from the start of `change` to
/// the first connection the new verdict let through.
pub fn time_to_allow(client: &str, server: IpAddr, change: impl FnOnce()) -> Duration {
    let target: SocketAddr = (server, CRR_PORT).into();
    let path = netns_path(client);
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| run_in(&path, || probe(target)));
        std::thread::sleep(LEAD);
        let started = Instant::now();
        change();
        let first = prober
            .join()
            .expect("prober thread")
            .unwrap_or_else(|e| panic!("probing from {client}: {e}"))
            .unwrap_or_else(|| panic!("{client} -> {target}: no connection within {GIVE_UP:?}"));
        first.checked_duration_since(started).unwrap_or_else(|| {
            panic!(
                "{client} -> {target} connected before the change: the old policy did not deny it"
            )
        })
    })
}

/// Attempts a connection every [`PROBE_EVERY`]; the start of the earliest attempt that
/// connected (attempts still running when the first one connects are waited for).
fn probe(target: SocketAddr) -> Option<Instant> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let (connected, mut results) = mpsc::unbounded_channel();
        let mut tick = time::interval(PROBE_EVERY);
        let deadline = Instant::now() + GIVE_UP;
        let first = loop {
            tokio::select! {
                _ = tick.tick() => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    let connected = connected.clone();
                    tokio::spawn(async move {
                        let at = Instant::now();
                        if let Ok(Ok(_stream)) = time::timeout(ATTEMPT, TcpStream::connect(target)).await {
                            let _ = connected.send(at);
                        }
                    });
                }
                Some(at) = results.recv() => break at,
            }
        };
        // An attempt started earlier may finish a little later.
        time::sleep(ATTEMPT).await;
        let mut earliest = first;
        while let Ok(at) = results.try_recv() {
            earliest = earliest.min(at);
        }
        Some(earliest)
    })
}
