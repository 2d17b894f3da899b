//! From a pod's annotations to the attachments an ADD will run, in order: the cluster
//! network first (or the `v1.multus-cni.io/default-network` replacing it), then every
//! selected network. Everything that can be wrong with the request is found here, before
//! any delegate runs.
use std::{collections::BTreeMap, path::Path};

use crate::{
    cache::AttachmentRecord,
    delegate::{Delegate, DelegateError, DelegateRequest},
    ifnames::{self, DuplicateInterface},
    protocol::ConfList,
    resolve::{self, DeviceAllocations, Isolation, NadSpec, ResolveError},
    selection::{self, SelectionError, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION},
    InterfaceName, NetworkRef,
};

/// The cluster's primary network, from netwarden's configuration.
#[derive(Clone, Debug)]
pub struct ClusterNetwork {
    pub config: ConfList,
    /// The runtime's CNI_IFNAME, normally eth0.
    pub ifname: InterfaceName,
}

/// Where planning looks things up.
pub struct PlanContext<'a> {
    /// The NetworkAttachmentDefinitions known to the cluster state.
    pub nads: &'a dyn Fn(&NetworkRef) -> Option<NadSpec>,
    pub isolation: &'a Isolation,
    /// Serves config-less NADs.
    pub config_dir: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Selection(#[from] SelectionError),
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("network {0}: no such NetworkAttachmentDefinition")]
    NoSuchNad(NetworkRef),
    #[error("{0}")]
    Interfaces(#[from] DuplicateInterface),
    #[error("network {network}: {source}")]
    Delegate {
        network: String,
        source: Box<DelegateError>,
    },
}

/// The attachments (results empty) for a pod in `pod_namespace` with `annotations`.
pub fn plan(
    pod_namespace: &str,
    annotations: &BTreeMap<String, String>,
    cluster: &ClusterNetwork,
    context: &PlanContext<'_>,
    devices: &mut DeviceAllocations,
) -> Result<Vec<AttachmentRecord>, PlanError> {
    let lookup = |network: &NetworkRef| -> Result<resolve::ResolvedNetwork, PlanError> {
        let nad = (context.nads)(network).ok_or_else(|| PlanError::NoSuchNad(network.clone()))?;
        Ok(resolve::resolve(&nad, context.config_dir)?)
    };
    let cluster_config = match annotations.get(DEFAULT_NETWORK_ANNOTATION) {
        Some(value) => lookup(&selection::parse_default_network(value, pod_namespace)?)?.config,
        None => cluster.config.clone(),
    };
    let selections = match annotations.get(NETWORKS_ANNOTATION) {
        Some(value) => selection::parse_networks(value, pod_namespace)?,
        None => Vec::new(),
    };
    let names = ifnames::assign(&cluster.ifname, &selections)?;

    let mut attachments = Vec::with_capacity(selections.len() + 1);
    attachments.push(AttachmentRecord {
        network: cluster_config.name.clone(),
        ifname: cluster.ifname.clone(),
        is_default: true,
        default_route: Vec::new(),
        delegate: delegate(
            cluster_config.name.clone(),
            cluster_config,
            DelegateRequest::default(),
        )?,
        result: None,
    });
    for (selection, ifname) in selections.iter().zip(names) {
        context.isolation.check(pod_namespace, &selection.network)?;
        let resolved = lookup(&selection.network)?;
        let device_id = devices.take(&resolved, selection.device_id.as_deref())?;
        let request = DelegateRequest::from_selection(selection, device_id);
        let network = selection.network.to_string();
        attachments.push(AttachmentRecord {
            network: network.clone(),
            ifname,
            is_default: false,
            default_route: selection.default_route.clone(),
            delegate: delegate(network, resolved.config, request)?,
            result: None,
        });
    }
    Ok(attachments)
}

fn delegate(
    network: String,
    config: ConfList,
    request: DelegateRequest,
) -> Result<Delegate, PlanError> {
    Delegate::new(config, request).map_err(|source| PlanError::Delegate {
        network,
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACVLAN: &str = r#"{"cniVersion":"0.3.0","type":"macvlan","master":"eth0","ipam":{"type":"host-local","subnet":"192.168.1.0/24"}}"#;

    fn nads(network: &NetworkRef) -> Option<NadSpec> {
        let config = match network.name.as_str() {
            "macvlan-conf" => MACVLAN,
            "calico" => r#"{"cniVersion":"1.0.0","name":"calico","type":"calico"}"#,
            _ => return None,
        };
        Some(NadSpec {
            network: network.clone(),
            config: config.into(),
            annotations: BTreeMap::new(),
        })
    }

    fn run(
        namespace: &str,
        annotations: &[(&str, &str)],
    ) -> Result<Vec<AttachmentRecord>, PlanError> {
        let cluster = ClusterNetwork {
            config: ConfList::parse(r#"{"cniVersion":"1.0.0","name":"cbr0","type":"ptp"}"#, None)
                .unwrap(),
            ifname: "eth0".parse().unwrap(),
        };
        let isolation = Isolation::new(true, None);
        let context = PlanContext {
            nads: &nads,
            isolation: &isolation,
            config_dir: Path::new("/nonexistent"),
        };
        let annotations = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        plan(
            namespace,
            &annotations,
            &cluster,
            &context,
            &mut DeviceAllocations::default(),
        )
    }

    fn summary(attachments: &[AttachmentRecord]) -> Vec<String> {
        attachments
            .iter()
            .map(|a| format!("{}@{}:{}", a.network, a.ifname, a.delegate.config.name))
            .collect()
    }

    #[test]
    fn cluster_network_first_then_selections() {
        let plan = run(
            "development",
            &[(NETWORKS_ANNOTATION, "macvlan-conf,default/macvlan-conf")],
        )
        .unwrap();
        assert_eq!(
            summary(&plan),
            [
                "cbr0@eth0:cbr0",
                "development/macvlan-conf@net1:macvlan-conf",
                "default/macvlan-conf@net2:macvlan-conf"
            ]
        );
        assert!(plan[0].is_default && !plan[1].is_default);
        assert_eq!(summary(&run("x", &[]).unwrap()), ["cbr0@eth0:cbr0"]);
    }

    #[test]
    fn default_network_replaces_the_cluster_network_without_isolation() {
        let plan = run(
            "development",
            &[(DEFAULT_NETWORK_ANNOTATION, "kube-system/calico")],
        )
        .unwrap();
        assert_eq!(summary(&plan), ["calico@eth0:calico"]);
    }

    #[test]
    fn every_problem_fails_before_anything_runs() {
        let cases = [
            ("privileged/macvlan-conf", "namespace isolation"),
            ("missing", "development/missing: no such"),
            ("macvlan-conf@x,macvlan-conf@x", "interface x is used twice"),
            ("Bad", "item 1"),
            (r#"[{"name":"macvlan-conf","ips":["10.0.0.1"]}]"#, "\"ips\""),
        ];
        for (annotation, expected) in cases {
            let err = run("development", &[(NETWORKS_ANNOTATION, annotation)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{annotation}: {err}");
        }
    }
}
