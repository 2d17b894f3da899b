//! The `default-route` request, done the way Multus does it: the attachment that asks for
//! gateways gets a default route through each of them, and every other attachment loses
//! its default route of that address family, both in the results (so network-status and
//! the runtime see the truth) and in the sandbox's routing table.
use std::{collections::BTreeSet, fs::File, net::IpAddr, path::Path, process::Command};

use ipnet::IpNet;
use serde_json::Map;

use crate::{cache::AttachmentRecord, protocol::result::Route, InterfaceName};

/// One change to make in the sandbox's routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// `ip -<family> route del default dev <ifname>` (absent routes are fine).
    DeleteDefault { ifname: InterfaceName, ipv6: bool },
    /// `ip route replace default via <gateway> dev <ifname>`.
    AddDefault {
        ifname: InterfaceName,
        gateway: IpAddr,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("default-route: cannot enter network namespace {netns}: {source}")]
    Enter {
        netns: String,
        source: std::io::Error,
    },
    #[error("default-route: `{command}` in {netns} failed: {stderr}")]
    Failed {
        netns: String,
        command: String,
        stderr: String,
    },
}

fn default_route_of(ipv6: bool) -> IpNet {
    if ipv6 {
        "::/0".parse().expect("valid")
    } else {
        "0.0.0.0/0".parse().expect("valid")
    }
}

/// Rewrites the results of `attachments` for their default-route requests and returns the
/// changes the sandbox needs. Nothing changes when no attachment asks.
pub fn plan(attachments: &mut [AttachmentRecord]) -> Vec<RouteChange> {
    let families: BTreeSet<bool> = attachments
        .iter()
        .flat_map(|a| a.default_route.iter().map(IpAddr::is_ipv6))
        .collect();
    let mut changes = Vec::new();
    for attachment in attachments.iter_mut() {
        let Some(result) = attachment.result.as_mut() else {
            continue;
        };
        result
            .routes
            .retain(|r| !(r.dst.prefix_len() == 0 && families.contains(&r.dst.addr().is_ipv6())));
        if attachment.default_route.is_empty() {
            changes.extend(families.iter().map(|&ipv6| RouteChange::DeleteDefault {
                ifname: attachment.ifname.clone(),
                ipv6,
            }));
        } else {
            for &ipv6 in &families {
                changes.push(RouteChange::DeleteDefault {
                    ifname: attachment.ifname.clone(),
                    ipv6,
                });
            }
            for gateway in &attachment.default_route {
                result.routes.push(Route {
                    dst: default_route_of(gateway.is_ipv6()),
                    gw: Some(*gateway),
                    extra: Map::new(),
                });
                changes.push(RouteChange::AddDefault {
                    ifname: attachment.ifname.clone(),
                    gateway: *gateway,
                });
            }
        }
    }
    changes
}

/// Makes `changes` in the network namespace at `netns`, with iproute2 run from a thread
/// that joined it (the rest of the process stays where it is).
pub fn apply(netns: &Path, changes: &[RouteChange]) -> Result<(), RouteError> {
    if changes.is_empty() {
        return Ok(());
    }
    let name = netns.display().to_string();
    let file = File::open(netns).map_err(|source| RouteError::Enter {
        netns: name.clone(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    RouteError::Enter {
                        netns: name.clone(),
                        source: e.into(),
                    }
                })?;
                for change in changes {
                    let (args, tolerate_missing) = match change {
                        RouteChange::DeleteDefault { ifname, ipv6 } => (
                            vec![
                                if *ipv6 { "-6" } else { "-4" }.to_owned(),
                                "route".into(),
                                "del".into(),
                                "default".into(),
                                "dev".into(),
                                ifname.to_string(),
                            ],
                            true,
                        ),
                        RouteChange::AddDefault { ifname, gateway } => (
                            vec![
                                "route".into(),
                                "replace".into(),
                                "default".into(),
                                "via".into(),
                                gateway.to_string(),
                                "dev".into(),
                                ifname.to_string(),
                            ],
                            false,
                        ),
                    };
                    let command = format!("ip {}", args.join(" "));
                    let output = Command::new("ip").args(&args).output().map_err(|source| {
                        RouteError::Enter {
                            netns: name.clone(),
                            source,
                        }
                    })?;
                    if !output.status.success() && !tolerate_missing {
                        return Err(RouteError::Failed {
                            netns: name.clone(),
                            command,
                            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                        });
                    }
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(RouteError::Failed {
                    netns: name.clone(),
                    command: "ip route".into(),
                    stderr: "the thread running it panicked".into(),
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        delegate::{Delegate, DelegateRequest},
        protocol::{CniResult, ConfList},
    };

    fn attachment(ifname: &str, gateways: &[&str], result: &str) -> AttachmentRecord {
        let config = ConfList::parse(r#"{"cniVersion":"1.0.0","type":"x"}"#, Some("n")).unwrap();
        AttachmentRecord {
            network: ifname.into(),
            ifname: ifname.parse().unwrap(),
            is_default: ifname == "eth0",
            default_route: gateways.iter().map(|g| g.parse().unwrap()).collect(),
            delegate: Delegate::new(config, DelegateRequest::default()).unwrap(),
            result: Some(CniResult::parse(result.as_bytes()).unwrap().0),
        }
    }

    fn dsts(a: &AttachmentRecord) -> Vec<String> {
        a.result
            .as_ref()
            .unwrap()
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{}>{}",
                    r.dst,
                    r.gw.map(|g| g.to_string()).unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn the_requested_gateway_takes_the_default_route() {
        let mut attachments = vec![
            attachment(
                "eth0",
                &[],
                r#"{"cniVersion":"1.0.0","routes":[{"dst":"0.0.0.0/0","gw":"10.244.0.1"},{"dst":"::/0"},{"dst":"10.96.0.0/12"}]}"#,
            ),
            attachment(
                "net1",
                &["192.168.1.1"],
                r#"{"cniVersion":"1.0.0","routes":[{"dst":"0.0.0.0/0","gw":"192.168.1.254"}]}"#,
            ),
        ];
        let changes = plan(&mut attachments);
        assert_eq!(dsts(&attachments[0]), ["::/0>", "10.96.0.0/12>"]);
        assert_eq!(dsts(&attachments[1]), ["0.0.0.0/0>192.168.1.1"]);
        let eth0: InterfaceName = "eth0".parse().unwrap();
        let net1: InterfaceName = "net1".parse().unwrap();
        assert_eq!(
            changes,
            [
                RouteChange::DeleteDefault {
                    ifname: eth0,
                    ipv6: false
                },
                RouteChange::DeleteDefault {
                    ifname: net1.clone(),
                    ipv6: false
                },
                RouteChange::AddDefault {
                    ifname: net1,
                    gateway: "192.168.1.1".parse().unwrap()
                },
            ]
        );
    }

    #[test]
    fn nothing_changes_without_a_request() {
        let mut attachments = vec![attachment(
            "eth0",
            &[],
            r#"{"cniVersion":"1.0.0","routes":[{"dst":"0.0.0.0/0"}]}"#,
        )];
        assert!(plan(&mut attachments).is_empty());
        assert_eq!(dsts(&attachments[0]), ["0.0.0.0/0>"]);
    }
}
