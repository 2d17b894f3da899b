//! One network's delegate: its configuration plus what the pod asked for, turned into each
//! plugin's stdin, and run as a chain (ADD in order with prevResult, DEL in reverse, CHECK
//! with the cached result), as libcni runs a conflist.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    exec::{ExecError, PluginRunner},
    protocol::{CniResult, Command, ConfList, Request, ResultError},
    selection::NetworkSelection,
};

/// runtimeConfig keys a pod may request; each reaches only plugins declaring the capability,
/// and a request no plugin declares fails the attachment (SPEC-NOTES section 1).
const REQUIRED_CAPABILITIES: [&str; 5] =
    ["ips", "mac", "infinibandGUID", "portMappings", "bandwidth"];
const DEVICE_ID: &str = "deviceID";

/// What the pod asked of this attachment, in the delegate's vocabulary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DelegateRequest {
    /// runtimeConfig values by capability name.
    pub runtime_config: Map<String, Value>,
    /// Merged into every plugin's `args.cni`; these win over the config's.
    pub cni_args: Map<String, Value>,
    pub device_id: Option<String>,
}

impl DelegateRequest {
    pub fn from_selection(selection: &NetworkSelection, device_id: Option<String>) -> Self {
        let mut runtime_config = Map::new();
        if !selection.ips.is_empty() {
            runtime_config.insert(
                "ips".into(),
                selection
                    .ips
                    .iter()
                    .map(|ip| Value::String(ip.to_string()))
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        if let Some(mac) = &selection.mac {
            runtime_config.insert("mac".into(), mac.as_str().into());
        }
        if let Some(guid) = &selection.infiniband_guid {
            runtime_config.insert("infinibandGUID".into(), guid.as_str().into());
        }
        if !selection.port_mappings.is_empty() {
            runtime_config.insert(
                "portMappings".into(),
                selection.port_mappings.clone().into(),
            );
        }
        if let Some(bandwidth) = &selection.bandwidth {
            runtime_config.insert("bandwidth".into(), bandwidth.clone());
        }
        Self {
            runtime_config,
            cni_args: selection.cni_args.clone(),
            device_id,
        }
    }
}

/// A network ready to run: everything needed to rebuild every plugin's stdin, so it is also
/// what the cache stores for DEL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delegate {
    pub config: ConfList,
    pub request: DelegateRequest,
}

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("the pod requests {key:?} but no plugin of {network:?} declares that capability")]
    UndeclaredCapability { network: String, key: String },
    #[error("{0}")]
    Exec(#[from] ExecError),
    #[error("plugin {plugin:?} {command}: {source}")]
    BadResult {
        plugin: String,
        command: Command,
        source: ResultError,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<DelegateError>),
}

impl Delegate {
    /// Checks the request against the plugins' capabilities.
    pub fn new(config: ConfList, request: DelegateRequest) -> Result<Self, DelegateError> {
        for key in REQUIRED_CAPABILITIES {
            if request.runtime_config.contains_key(key)
                && !config.plugins.iter().any(|p| p.has_capability(key))
            {
                return Err(DelegateError::UndeclaredCapability {
                    network: config.name.clone(),
                    key: key.into(),
                });
            }
        }
        Ok(Self { config, request })
    }

    /// The stdin of plugin `index`: its own JSON plus cniVersion, name, the runtimeConfig
    /// keys it declares, the merged `args.cni`, the device ID and the previous result.
    pub fn plugin_stdin(&self, index: usize, prev_result: Option<&Value>) -> Value {
        let plugin = &self.config.plugins[index];
        let mut body = plugin.body().clone();
        body.insert("cniVersion".into(), self.config.cni_version.as_str().into());
        body.insert("name".into(), self.config.name.clone().into());

        let mut runtime: Map<String, Value> = self
            .request
            .runtime_config
            .iter()
            .filter(|(key, _)| plugin.has_capability(key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(device) = &self.request.device_id {
            // Plugins that declare deviceID get it as runtimeConfig; otherwise the
            // interface-creating (first) plugin gets the top-level key sriov-cni reads.
            if plugin.has_capability(DEVICE_ID) {
                runtime.insert(DEVICE_ID.into(), device.clone().into());
            } else if index == 0 {
                body.insert(DEVICE_ID.into(), device.clone().into());
            }
        }
        if !runtime.is_empty() {
            body.insert("runtimeConfig".into(), runtime.into());
        }
        if !self.request.cni_args.is_empty() {
            let args = body
                .entry("args")
                .or_insert_with(|| Value::Object(Map::new()));
            if !args.is_object() {
                *args = Value::Object(Map::new());
            }
            let cni = args
                .as_object_mut()
                .expect("args is an object")
                .entry("cni")
                .or_insert_with(|| Value::Object(Map::new()));
            if !cni.is_object() {
                *cni = Value::Object(Map::new());
            }
            let cni = cni.as_object_mut().expect("args.cni is an object");
            for (key, value) in &self.request.cni_args {
                cni.insert(key.clone(), value.clone());
            }
        }
        if let Some(prev) = prev_result {
            body.insert("prevResult".into(), prev.clone());
        }
        Value::Object(body)
    }

    /// ADD: every plugin in order, each seeing the previous one's result.
    pub fn add(
        &self,
        runner: &PluginRunner,
        request: &Request,
    ) -> Result<CniResult, DelegateError> {
        let request = with_command(request, Command::Add);
        let mut prev: Option<Value> = None;
        for (index, plugin) in self.config.plugins.iter().enumerate() {
            let stdin = self.plugin_stdin(index, prev.as_ref());
            let out = runner.run(plugin.plugin_type(), &request, &to_bytes(&stdin))?;
            let value: Value =
                serde_json::from_slice(&out).map_err(|e| DelegateError::BadResult {
                    plugin: plugin.plugin_type().into(),
                    command: Command::Add,
                    source: ResultError::NotJson(e.to_string()),
                })?;
            CniResult::from_value(value.clone()).map_err(|source| DelegateError::BadResult {
                plugin: plugin.plugin_type().into(),
                command: Command::Add,
                source,
            })?;
            prev = Some(value);
        }
        let last = prev.expect("a configuration has at least one plugin");
        Ok(CniResult::from_value(last)
            .expect("the last result was parsed above")
            .0)
    }

    /// DEL: every plugin in reverse order, past failures; all failures are reported.
    pub fn del(
        &self,
        runner: &PluginRunner,
        request: &Request,
        cached: Option<&CniResult>,
    ) -> Result<(), DelegateError> {
        let request = with_command(request, Command::Del);
        let prev = cached
            .filter(|_| self.config.cni_version.has_check())
            .map(|r| r.to_value(self.config.cni_version));
        let failures: Vec<DelegateError> = (0..self.config.plugins.len())
            .rev()
            .filter_map(|index| {
                let stdin = self.plugin_stdin(index, prev.as_ref());
                runner
                    .run(
                        self.config.plugins[index].plugin_type(),
                        &request,
                        &to_bytes(&stdin),
                    )
                    .err()
                    .map(DelegateError::from)
            })
            .collect();
        several(failures)
    }

    /// CHECK: every plugin in order with the cached result. Configurations older than 0.4.0
    /// (which has no CHECK) and those with `disableCheck` pass without running anything.
    pub fn check(
        &self,
        runner: &PluginRunner,
        request: &Request,
        cached: &CniResult,
    ) -> Result<(), DelegateError> {
        if self.config.disable_check || !self.config.cni_version.has_check() {
            return Ok(());
        }
        let request = with_command(request, Command::Check);
        let prev = cached.to_value(self.config.cni_version);
        for (index, plugin) in self.config.plugins.iter().enumerate() {
            let stdin = self.plugin_stdin(index, Some(&prev));
            runner.run(plugin.plugin_type(), &request, &to_bytes(&stdin))?;
        }
        Ok(())
    }
}

fn several(mut failures: Vec<DelegateError>) -> Result<(), DelegateError> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(DelegateError::Several(failures)),
    }
}

fn with_command(request: &Request, command: Command) -> Request {
    let mut request = request.clone();
    request.command = command;
    request
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::parse_networks;

    fn selection(annotation: &str) -> NetworkSelection {
        parse_networks(annotation, "dev").unwrap().remove(0)
    }

    fn conf(text: &str) -> ConfList {
        ConfList::parse(text, Some("net")).unwrap()
    }

    const CHAIN: &str = r#"{"cniVersion":"1.0.0","name":"chain","plugins":[
        {"type":"macvlan","master":"eth0","ipam":{"type":"static","capabilities":{"ips":true}},"capabilities":{"ips":true}},
        {"type":"tuning","capabilities":{"mac":true},"args":{"cni":{"keep":"me","foo":"config"}}}]}"#;

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let sel =
            selection(r#"[{"name":"chain","ips":["10.1.1.5/24"],"mac":"c2:00:00:00:00:01"}]"#);
        let delegate =
            Delegate::new(conf(CHAIN), DelegateRequest::from_selection(&sel, None)).unwrap();
        let first = delegate.plugin_stdin(0, None);
        assert_eq!(
            first["runtimeConfig"],
            serde_json::json!({"ips":["10.1.1.5/24"]})
        );
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["name"], "chain");
        assert_eq!(first["master"], "eth0");
        let second = delegate.plugin_stdin(1, Some(&serde_json::json!({"cniVersion":"1.0.0"})));
        assert_eq!(
            second["runtimeConfig"],
            serde_json::json!({"mac":"c2:00:00:00:00:01"})
        );
        assert_eq!(second["prevResult"]["cniVersion"], "1.0.0");
    }

    #[test]
    fn no_runtime_config_without_a_request() {
        let delegate = Delegate::new(conf(CHAIN), DelegateRequest::default()).unwrap();
        assert!(delegate
            .plugin_stdin(0, None)
            .get("runtimeConfig")
            .is_none());
        assert!(delegate.plugin_stdin(0, None).get("prevResult").is_none());
    }

    #[test]
    fn undeclared_requests_fail_naming_key_and_network() {
        let plain = conf(r#"{"cniVersion":"1.0.0","name":"plain","type":"bridge"}"#);
        for annotation in [
            r#"[{"name":"plain","ips":["10.1.1.5"]}]"#,
            r#"[{"name":"plain","mac":"c2:00:00:00:00:01"}]"#,
            r#"[{"name":"plain","bandwidth":{"ingressRate":1}}]"#,
            r#"[{"name":"plain","portMappings":[{"hostPort":1}]}]"#,
            r#"[{"name":"plain","infiniband-guid":"x"}]"#,
        ] {
            let request = DelegateRequest::from_selection(&selection(annotation), None);
            let err = Delegate::new(plain.clone(), request)
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"plain\""), "{annotation}: {err}");
        }
    }

    #[test]
    fn cni_args_merge_into_args_cni_and_the_annotation_wins() {
        let sel = selection(r#"[{"name":"chain","cni-args":{"foo":"annotation","new":1}}]"#);
        let delegate =
            Delegate::new(conf(CHAIN), DelegateRequest::from_selection(&sel, None)).unwrap();
        let tuning = delegate.plugin_stdin(1, None);
        assert_eq!(
            tuning["args"]["cni"],
            serde_json::json!({"keep":"me","foo":"annotation","new":1})
        );
        assert_eq!(delegate.plugin_stdin(0, None)["args"]["cni"]["new"], 1);
    }

    #[test]
    fn device_id_goes_where_the_plugin_reads_it() {
        let request = DelegateRequest {
            device_id: Some("0000:03:00.1".into()),
            ..Default::default()
        };
        let sriov = conf(
            r#"{"cniVersion":"1.0.0","name":"s","plugins":[{"type":"sriov"},{"type":"tuning"}]}"#,
        );
        let delegate = Delegate::new(sriov, request.clone()).unwrap();
        assert_eq!(delegate.plugin_stdin(0, None)["deviceID"], "0000:03:00.1");
        assert!(delegate.plugin_stdin(1, None).get("deviceID").is_none());
        let declared = conf(
            r#"{"cniVersion":"1.0.0","name":"h","type":"host-device","capabilities":{"deviceID":true}}"#,
        );
        let stdin = Delegate::new(declared, request)
            .unwrap()
            .plugin_stdin(0, None);
        assert_eq!(stdin["runtimeConfig"]["deviceID"], "0000:03:00.1");
        assert!(stdin.get("deviceID").is_none());
    }
}
