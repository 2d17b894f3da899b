//! One manifest document -> one typed [`Object`], by apiVersion and kind. Errors name the
//! file, the document and the field.
use std::{
    fmt,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::documents::Document;
use crate::cluster::{
    crd::{v1beta1, v1beta2, NetworkAttachmentDefinition},
    Object,
};

/// The label the API server puts on every namespace, so selectors can name namespaces.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Namespaced objects without `metadata.namespace` are in this one, as with kubectl.
const DEFAULT_NAMESPACE: &str = "default";

/// A document that is not a valid object of a kind netwarden reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: document {document} (line {line}): {}{problem}", file.display(), Place(field))]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based position among the file's non-empty documents.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// The field at fault (`spec.containers[0].ports[0].containerPort`), if known.
    pub field: Option<String>,
    pub problem: String,
}

struct Place<'a>(&'a Option<String>);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(field) => write!(f, "field {field}: "),
            None => Ok(()),
        }
    }
}

impl ManifestError {
    fn new(file: &Path, document: &Document, field: Option<String>, problem: String) -> Self {
        Self {
            file: file.to_owned(),
            document: document.index,
            line: document.line,
            field,
            problem,
        }
    }
}

/// What one document holds.
#[derive(Debug)]
pub(super) enum Parsed {
    Object(Object),
    /// A kind (or version) netwarden does not read, as `apiVersion kind`.
    OtherKind(String),
}

/// Parses `document` of `file` into an object.
pub(super) fn parse(file: &Path, document: &Document) -> Result<Parsed, ManifestError> {
    let value = parse_value(file, document)?;
    let text_field = |name: &str| match value.get(name) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        _ => Err(ManifestError::new(
            file,
            document,
            Some(name.to_owned()),
            "missing or not a string".to_owned(),
        )),
    };
    let (api_version, kind) = (text_field("apiVersion")?, text_field("kind")?);
    let typed = Typed { file, document };
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => Object::Pod(typed.parse::<Pod>(value)?),
        ("v1", "Namespace") => Object::Namespace(typed.parse::<Namespace>(value)?),
        ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition") => {
            Object::NetworkAttachmentDefinition(typed.parse::<NetworkAttachmentDefinition>(value)?)
        }
        ("k8s.cni.cncf.io/v1beta2", "MultiNetworkPolicy") => {
            Object::MultiNetworkPolicy(typed.parse::<v1beta2::MultiNetworkPolicy>(value)?)
        }
        ("k8s.cni.cncf.io/v1beta1", "MultiNetworkPolicy") => {
            let policy = typed.parse::<v1beta1::MultiNetworkPolicy>(value)?;
            Object::MultiNetworkPolicy(Box::new(v1beta2::MultiNetworkPolicy {
                metadata: policy.metadata,
                spec: v1beta2::MultiNetworkPolicySpec {
                    policy: policy.spec.policy,
                },
            }))
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            Object::NetworkPolicy(typed.parse::<NetworkPolicy>(value)?)
        }
        _ => return Ok(Parsed::OtherKind(format!("{api_version} {kind}"))),
    };
    Ok(Parsed::Object(complete_metadata(object)))
}

/// The document as a JSON value (YAML and JSON alike).
pub(super) fn parse_value(file: &Path, document: &Document) -> Result<Value, ManifestError> {
    let value: Value = serde_saphyr::from_str(document.text).map_err(|error| {
        ManifestError::new(file, document, None, format!("not valid YAML: {error}"))
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ManifestError::new(
            file,
            document,
            None,
            "not a mapping (an object with apiVersion, kind, metadata)".to_owned(),
        ))
    }
}

struct Typed<'a> {
    file: &'a Path,
    document: &'a Document<'a>,
}

impl Typed<'_> {
    /// Deserializes keeping the path of the field at fault, then checks metadata.name.
    fn parse<T: DeserializeOwned + kube::Resource>(
        &self,
        value: Value,
    ) -> Result<Box<T>, ManifestError> {
        let object: T = serde_path_to_error::deserialize(value).map_err(|error| {
            let field = error.path().to_string();
            ManifestError::new(
                self.file,
                self.document,
                Some(field),
                error.into_inner().to_string(),
            )
        })?;
        match object.meta().name.as_deref() {
            Some(name) if !name.is_empty() => Ok(Box::new(object)),
            _ => Err(ManifestError::new(
                self.file,
                self.document,
                Some("metadata.name".to_owned()),
                "missing".to_owned(),
            )),
        }
    }
}

/// What the API server would have filled in: the default namespace, the namespace's
/// name label.
fn complete_metadata(mut object: Object) -> Object {
    fn default_namespace(meta: &mut ObjectMeta) {
        meta.namespace
            .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
    }
    match &mut object {
        Object::Namespace(namespace) => {
            let name = namespace.metadata.name.clone().unwrap_or_default();
            namespace
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(NAMESPACE_NAME_LABEL.to_owned(), name);
        }
        Object::Pod(pod) => default_namespace(&mut pod.metadata),
        Object::NetworkAttachmentDefinition(nad) => default_namespace(&mut nad.metadata),
        Object::MultiNetworkPolicy(policy) => default_namespace(&mut policy.metadata),
        Object::NetworkPolicy(policy) => default_namespace(&mut policy.metadata),
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::manifest_dir::documents::documents;

    fn parse_all(text: &str) -> Vec<Result<Parsed, ManifestError>> {
        documents(text)
            .iter()
            .map(|document| parse(Path::new("lab/x.yaml"), document))
            .collect()
    }

    #[test]
    fn reads_a_nad_into_the_default_namespace() {
        let parsed = parse_all(
            "apiVersion: \"k8s.cni.cncf.io/v1\"\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: macvlan-conf\nspec:\n  config: '{\n    \"cniVersion\": \"0.3.0\",\n    \"type\": \"macvlan\"\n  }'\n",
        );
        let Ok(Parsed::Object(Object::NetworkAttachmentDefinition(nad))) = &parsed[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(nad.metadata.namespace.as_deref(), Some("default"));
        assert!(nad.spec.config.as_deref().unwrap().contains("\"macvlan\""));
    }

    #[test]
    fn a_v1beta1_policy_becomes_v1beta2() {
        let parsed = parse_all(
            "apiVersion: k8s.cni.cncf.io/v1beta1\nkind: MultiNetworkPolicy\nmetadata:\n  name: p\n  namespace: shop\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
        );
        let Ok(Parsed::Object(Object::MultiNetworkPolicy(policy))) = &parsed[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(
            policy.spec.policy.policy_types.as_deref(),
            Some(&["Ingress".to_owned()][..])
        );
    }

    #[test]
    fn namespaces_get_their_name_label() {
        let parsed = parse_all("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n");
        let Ok(Parsed::Object(Object::Namespace(namespace))) = &parsed[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(
            namespace.metadata.labels.as_ref().unwrap()[NAMESPACE_NAME_LABEL],
            "shop"
        );
        assert_eq!(namespace.metadata.namespace, None);
    }

    #[test]
    fn other_kinds_are_named_not_errors() {
        let parsed = parse_all("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n");
        assert!(matches!(&parsed[0], Ok(Parsed::OtherKind(k)) if k == "apps/v1 Deployment"));
    }

    #[test]
    fn a_bad_field_is_named_with_file_document_and_line() {
        let parsed = parse_all(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: http\n",
        );
        assert!(matches!(parsed[0], Ok(Parsed::Object(_))));
        let error = parsed[1].as_ref().unwrap_err();
        assert_eq!(
            error.field.as_deref(),
            Some("spec.containers[0].ports[0].containerPort")
        );
        assert_eq!(
            error.to_string(),
            format!(
                "lab/x.yaml: document 2 (line 6): field spec.containers[0].ports[0].containerPort: {}",
                error.problem
            )
        );
    }

    #[test]
    fn missing_identity_fields_are_named() {
        for (text, field) in [
            ("kind: Pod\nmetadata:\n  name: p\n", "apiVersion"),
            ("apiVersion: v1\nmetadata:\n  name: p\n", "kind"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "metadata.name"),
        ] {
            let error = parse_all(text).remove(0).unwrap_err();
            assert_eq!(error.field.as_deref(), Some(field), "{text}");
        }
    }

    #[test]
    fn broken_yaml_is_an_error_of_its_document_only() {
        let parsed =
            parse_all("a: [\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n");
        assert!(parsed[0]
            .as_ref()
            .unwrap_err()
            .problem
            .starts_with("not valid YAML"));
        assert!(matches!(parsed[1], Ok(Parsed::Object(_))));
    }
}
