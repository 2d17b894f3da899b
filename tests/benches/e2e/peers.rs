//! The allowed peer lists: `count` addresses of one family, the client's last, so a system
//! that scans its rules in order pays for every one of them before it finds the client.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 or IPv6: which of the pods' addresses a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    /// The host prefix length: one peer is one address.
    pub fn host_prefix(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    /// The `n`th address no lab pod has (10.200.0.0/16, fd00:ffff::/64).
    fn filler(self, n: u32) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 1)) + n)),
            Self::V6 => IpAddr::V6(Ipv6Addr::from(
                u128::from(Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, 1)) + u128::from(n),
            )),
        }
    }
}

/// `count` peers of `client`'s family: `count - 1` addresses of nobody, then the client.
pub fn allowing(client: IpAddr, count: u32) -> Vec<IpAddr> {
    let family = Family::of(client);
    let mut peers: Vec<IpAddr> = (0..count - 1).map(|n| family.filler(n)).collect();
    peers.push(client);
    peers
}

/// `count` peers of `client`'s family, none of them the client: the same list with the
/// client's place taken by one more address of nobody.
pub fn denying(client: IpAddr, count: u32) -> Vec<IpAddr> {
    let family = Family::of(client);
    (0..count).map(|n| family.filler(n)).collect()
}
