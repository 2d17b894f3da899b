//! Interface names inside the sandbox: what the pod asked for, else `net<N>` with N the
//! position in the full list (the cluster network is 0). Duplicates are refused up front,
//! before any delegate runs.
use crate::{selection::NetworkSelection, InterfaceName};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interface {ifname} is used twice: by {first} and by {second}")]
pub struct DuplicateInterface {
    pub ifname: InterfaceName,
    pub first: String,
    pub second: String,
}

/// Names for `selections`, in order, given the cluster network's interface (CNI_IFNAME).
pub fn assign(
    cluster_ifname: &InterfaceName,
    selections: &[NetworkSelection],
) -> Result<Vec<InterfaceName>, DuplicateInterface> {
    let mut taken: Vec<(InterfaceName, String)> =
        vec![(cluster_ifname.clone(), "the cluster network".to_owned())];
    let mut names = Vec::with_capacity(selections.len());
    for (i, selection) in selections.iter().enumerate() {
        let position = i + 1;
        let ifname = match &selection.interface {
            Some(name) => name.clone(),
            None => format!("net{position}")
                .parse()
                .expect("net<N> is a valid interface name"),
        };
        let owner = format!("item {position} ({})", selection.network);
        if let Some((_, first)) = taken.iter().find(|(name, _)| *name == ifname) {
            return Err(DuplicateInterface {
                ifname,
                first: first.clone(),
                second: owner,
            });
        }
        taken.push((ifname.clone(), owner));
        names.push(ifname);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::parse_networks;

    fn eth0() -> InterfaceName {
        "eth0".parse().unwrap()
    }

    fn names(annotation: &str) -> Result<Vec<String>, DuplicateInterface> {
        let selections = parse_networks(annotation, "dev").unwrap();
        Ok(assign(&eth0(), &selections)?
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    #[test]
    fn positions_and_requests() {
        assert_eq!(names("a,a").unwrap(), ["net1", "net2"]);
        assert_eq!(names("a@data0,b").unwrap(), ["data0", "net2"]);
        assert!(names("").unwrap().is_empty());
    }

    #[test]
    fn duplicates_are_named() {
        let err = names("a@x1,b@x1").unwrap_err();
        assert_eq!(err.ifname.as_str(), "x1");
        assert!(err.to_string().contains("item 1 (dev/a)"), "{err}");
        assert!(err.to_string().contains("item 2 (dev/b)"), "{err}");
        let err = names("a@eth0").unwrap_err().to_string();
        assert!(err.contains("cluster network"), "{err}");
        let err = names("a@net2,b").unwrap_err().to_string();
        assert!(err.contains("net2"), "{err}");
    }
}
