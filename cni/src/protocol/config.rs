//! Network configurations: a single plugin config or a conflist, normalised to a list.
//! Every plugin's JSON is kept whole (unknown keys included) so a delegate receives
//! exactly what its author wrote.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Version, VersionError};

/// One plugin's configuration: its full JSON object, with `type` and `capabilities` read out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct PluginConf {
    plugin_type: String,
    body: Map<String, Value>,
}

/// A network: a name, a version and the plugins that run in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfList {
    #[serde(rename = "cniVersion")]
    pub cni_version: Version,
    pub name: String,
    #[serde(rename = "disableCheck", default)]
    pub disable_check: bool,
    pub plugins: Vec<PluginConf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("field {0:?} is missing")]
    Missing(&'static str),
    #[error("field {field:?}: {problem}")]
    Field { field: String, problem: String },
    #[error("field \"cniVersion\": {0}")]
    Version(#[from] VersionError),
}

impl PluginConf {
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    /// Whether the plugin declares `capabilities.<name>: true`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.body
            .get("capabilities")
            .and_then(|caps| caps.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub fn capabilities(&self) -> BTreeMap<String, bool> {
        self.body
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|caps| {
                caps.iter()
                    .map(|(k, v)| (k.clone(), v.as_bool().unwrap_or(false)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }
}

impl TryFrom<Map<String, Value>> for PluginConf {
    type Error = ConfigError;

    fn try_from(body: Map<String, Value>) -> Result<Self, Self::Error> {
        let plugin_type = match body.get("type") {
            None => return Err(ConfigError::Missing("type")),
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                return Err(ConfigError::Field {
                    field: "type".into(),
                    problem: "not a string".into(),
                })
            }
        };
        // The type names an executable in the plugin directories: a plain file name only.
        if plugin_type.is_empty()
            || plugin_type.contains(['/', '\0'])
            || plugin_type == "."
            || plugin_type == ".."
        {
            return Err(ConfigError::Field {
                field: "type".into(),
                problem: format!("{plugin_type:?} is not a plugin file name"),
            });
        }
        if let Some(caps) = body.get("capabilities") {
            if !caps.is_object() {
                return Err(ConfigError::Field {
                    field: "capabilities".into(),
                    problem: "not an object".into(),
                });
            }
        }
        Ok(Self { plugin_type, body })
    }
}

impl From<PluginConf> for Map<String, Value> {
    fn from(conf: PluginConf) -> Self {
        conf.body
    }
}

impl ConfList {
    /// Parses a config or conflist; `fallback_name` is used when it has no `name` (a NAD's
    /// name is injected this way).
    pub fn parse(text: &str, fallback_name: Option<&str>) -> Result<Self, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ConfigError::NotJson(e.to_string()))?;
        let Value::Object(mut top) = value else {
            return Err(ConfigError::NotAnObject);
        };
        let cni_version: Version = match top.get("cniVersion") {
            None => return Err(ConfigError::Missing("cniVersion")),
            Some(Value::String(v)) => v.parse()?,
            Some(_) => return Err(string_field("cniVersion")),
        };
        let name = match top.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            Some(Value::String(_)) | None => fallback_name
                .map(str::to_owned)
                .ok_or(ConfigError::Missing("name"))?,
            Some(_) => return Err(string_field("name")),
        };
        let disable_check = top
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let plugins = match top.remove("plugins") {
            Some(Value::Array(list)) if list.is_empty() => {
                return Err(ConfigError::Field {
                    field: "plugins".into(),
                    problem: "the list is empty".into(),
                })
            }
            Some(Value::Array(list)) => list
                .into_iter()
                .enumerate()
                .map(|(i, plugin)| match plugin {
                    Value::Object(body) => {
                        PluginConf::try_from(body).map_err(|e| ConfigError::Field {
                            field: format!("plugins[{i}]"),
                            problem: e.to_string(),
                        })
                    }
                    _ => Err(ConfigError::Field {
                        field: format!("plugins[{i}]"),
                        problem: "not an object".into(),
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ConfigError::Field {
                    field: "plugins".into(),
                    problem: "not a list".into(),
                })
            }
            None => vec![PluginConf::try_from(top)?],
        };
        Ok(Self {
            cni_version,
            name,
            disable_check,
            plugins,
        })
    }
}

fn string_field(field: &str) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: "not a string".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACVLAN: &str = r#"{"cniVersion":"0.3.0","type":"macvlan","master":"ens3","mode":"bridge",
        "ipam":{"type":"host-local","subnet":"192.168.1.0/24"}}"#;

    #[test]
    fn a_single_config_becomes_a_one_plugin_list_with_every_key_kept() {
        let list = ConfList::parse(MACVLAN, Some("macvlan-conf")).unwrap();
        assert_eq!(list.name, "macvlan-conf");
        assert_eq!(list.cni_version, Version::V0_3_0);
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type(), "macvlan");
        assert_eq!(list.plugins[0].body()["master"], "ens3");
        assert_eq!(list.plugins[0].body()["ipam"]["subnet"], "192.168.1.0/24");
    }

    #[test]
    fn a_conflist_keeps_its_own_name_and_order() {
        let text = r#"{"cniVersion":"1.0.0","name":"chain","plugins":[
            {"type":"bridge","bridge":"br0"},
            {"type":"tuning","capabilities":{"mac":true}}]}"#;
        let list = ConfList::parse(text, Some("ignored")).unwrap();
        assert_eq!(list.name, "chain");
        let types: Vec<_> = list.plugins.iter().map(PluginConf::plugin_type).collect();
        assert_eq!(types, ["bridge", "tuning"]);
        assert!(list.plugins[1].has_capability("mac"));
        assert!(!list.plugins[0].has_capability("mac"));
        let back: ConfList = serde_json::from_str(&serde_json::to_string(&list).unwrap()).unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            ("[]", "not a JSON object"),
            ("{", "not valid JSON"),
            (r#"{"type":"x","name":"n"}"#, "\"cniVersion\" is missing"),
            (r#"{"cniVersion":"9.9.9","type":"x"}"#, "9.9.9"),
            (
                r#"{"cniVersion":"1.0.0","type":"x"}"#,
                "\"name\" is missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                "\"type\" is missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"../sh"}"#,
                "plugin file name",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, "empty"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"},3]}"#,
                "plugins[1]",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"a","capabilities":[]}"#,
                "capabilities",
            ),
        ];
        for (text, expected) in cases {
            let err = ConfList::parse(text, None).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
