//! The bundle's `config.json`, translated for the guest (and an exec's
//! process, checked before the agent reads it).
//!
//! The guest cannot use host paths: the rootfs and every bind source are
//! exposed under the sandbox's share and named relative to it, which the
//! agent resolves inside the share. Host-only parts go: hooks (they would
//! run on the host, which runc does but a VM runtime cannot), namespace
//! paths (host namespaces), and the host cgroup path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why a bundle's spec (or an exec's process) cannot go to the guest.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading the bundle's config.json in {bundle}")]
    ReadSpec {
        bundle: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the bundle's config.json in {bundle}")]
    ParseSpec {
        bundle: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid OCI spec: {0}")]
    InvalidSpec(String),
    #[error("encoding the guest's OCI spec")]
    EncodeSpec(#[source] serde_json::Error),
    #[error("invalid process spec for exec {exec_id}")]
    ParseProcess {
        exec_id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// CRI annotation: `sandbox` or `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI annotation: the pod's sandbox id.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// A host path the guest needs, and where under the share it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    /// Relative to the share.
    pub shared: PathBuf,
    pub readonly: bool,
}

/// A spec ready for the guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub json: Value,
    /// The rootfs, relative to the share.
    pub rootfs: PathBuf,
    pub volumes: Vec<Volume>,
}

impl GuestSpec {
    /// The spec as the agent's CreateContainer takes it: JSON bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SpecError> {
        serde_json::to_vec(&self.json).map_err(SpecError::EncodeSpec)
    }
}

/// Reads `<bundle>/config.json`.
pub fn read_bundle_spec(bundle: &Path) -> Result<Value, SpecError> {
    let text = std::fs::read(bundle.join("config.json")).map_err(|source| SpecError::ReadSpec {
        bundle: bundle.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| SpecError::ParseSpec {
        bundle: bundle.to_owned(),
        source,
    })
}

/// Checks that an exec's process spec is JSON; the agent reads the rest.
pub fn check_process(exec_id: &str, process: &[u8]) -> Result<(), SpecError> {
    serde_json::from_slice::<Value>(process).map_err(|source| SpecError::ParseProcess {
        exec_id: exec_id.to_owned(),
        source,
    })?;
    Ok(())
}

/// The spec's `linux.cgroupsPath`, if it names one.
pub fn cgroups_path(spec: &Value) -> Option<String> {
    spec.pointer("/linux/cgroupsPath")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

/// The spec's annotations.
pub fn annotations(spec: &Value) -> HashMap<String, String> {
    spec.get("annotations")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The sandbox (VM) a container belongs to: its CRI sandbox id, else itself.
pub fn sandbox_of(id: &str, annotations: &HashMap<String, String>) -> String {
    match annotations.get(CONTAINER_TYPE).map(String::as_str) {
        Some("container") => annotations
            .get(SANDBOX_ID)
            .cloned()
            .unwrap_or_else(|| id.to_owned()),
        _ => id.to_owned(),
    }
}

fn is_bind(mount: &Value) -> bool {
    mount.get("type").and_then(Value::as_str) == Some("bind")
        || mount
            .get("options")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// Translates `spec` of container `id` for the guest.
pub fn for_guest(id: &str, mut spec: Value) -> Result<GuestSpec, SpecError> {
    let object = spec
        .as_object_mut()
        .ok_or_else(|| SpecError::InvalidSpec("config.json is not an object".into()))?;
    if !object.get("process").is_some_and(Value::is_object) {
        return Err(SpecError::InvalidSpec("process is missing".into()));
    }
    object.remove("hooks");
    let base = PathBuf::from(id);
    let rootfs = base.join("rootfs");
    let readonly_root = object
        .get("root")
        .and_then(|r| r.get("readonly"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    object.insert(
        "root".into(),
        serde_json::json!({"path": rootfs, "readonly": readonly_root}),
    );
    if let Some(linux) = object.get_mut("linux").and_then(Value::as_object_mut) {
        linux.remove("cgroupsPath");
        if let Some(namespaces) = linux.get_mut("namespaces").and_then(Value::as_array_mut) {
            for ns in namespaces.iter_mut().filter_map(Value::as_object_mut) {
                ns.remove("path");
            }
        }
    }
    let mut volumes = Vec::new();
    if let Some(mounts) = object.get_mut("mounts").and_then(Value::as_array_mut) {
        for mount in mounts.iter_mut() {
            if !is_bind(mount) {
                continue;
            }
            let Some(source) = mount.get("source").and_then(Value::as_str) else {
                return Err(SpecError::InvalidSpec("a bind mount has no source".into()));
            };
            if !source.starts_with('/') {
                return Err(SpecError::InvalidSpec(format!(
                    "bind source {source:?} is not an absolute path"
                )));
            }
            let readonly = mount
                .get("options")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|x| x == "ro"));
            let shared = base.join("volumes").join(volumes.len().to_string());
            volumes.push(Volume {
                host: PathBuf::from(source),
                shared: shared.clone(),
                readonly,
            });
            mount["source"] = Value::String(shared.to_string_lossy().into_owned());
        }
    }
    Ok(GuestSpec {
        json: spec,
        rootfs,
        volumes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/"},
            "root": {"path": "rootfs", "readonly": true},
            "hooks": {"prestart": [{"path": "/usr/bin/hook"}]},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/x/hosts", "options": ["rbind", "ro"]},
                {"destination": "/data", "source": "/srv/data", "options": ["rbind", "rw"]}
            ],
            "linux": {
                "cgroupsPath": "/k8s/pod",
                "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]
            },
            "annotations": {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod1"}
        })
    }

    #[test]
    fn host_paths_become_share_paths() {
        let out = for_guest("c1", spec()).unwrap();
        assert_eq!(out.rootfs, PathBuf::from("c1/rootfs"));
        assert_eq!(
            out.json["root"],
            json!({"path": "c1/rootfs", "readonly": true})
        );
        assert!(out.json.get("hooks").is_none());
        assert!(out.json["linux"].get("cgroupsPath").is_none());
        assert_eq!(
            out.json["linux"]["namespaces"][1],
            json!({"type": "network"})
        );
        assert_eq!(out.json["mounts"][0]["source"], "proc");
        assert_eq!(out.json["mounts"][1]["source"], "c1/volumes/0");
        assert_eq!(out.json["mounts"][2]["source"], "c1/volumes/1");
        assert_eq!(
            out.volumes,
            vec![
                Volume {
                    host: "/var/lib/x/hosts".into(),
                    shared: "c1/volumes/0".into(),
                    readonly: true
                },
                Volume {
                    host: "/srv/data".into(),
                    shared: "c1/volumes/1".into(),
                    readonly: false
                },
            ]
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(for_guest("c", json!([])).is_err());
        assert!(for_guest("c", json!({"root": {}})).is_err());
        let mut s = spec();
        s["mounts"][1]["source"] = json!("relative/path");
        let err = for_guest("c", s).unwrap_err();
        assert!(matches!(err, SpecError::InvalidSpec(_)), "{err}");
    }

    #[test]
    fn an_exec_process_must_be_json() {
        assert!(check_process("e1", br#"{"args": ["sh"]}"#).is_ok());
        let err = check_process("e1", b"{not json").unwrap_err();
        assert!(matches!(err, SpecError::ParseProcess { .. }), "{err}");
    }

    #[test]
    fn pods_group_by_sandbox_id() {
        let ann = annotations(&spec());
        assert_eq!(sandbox_of("c1", &ann), "pod1");
        let mut sandbox = ann.clone();
        sandbox.insert(CONTAINER_TYPE.into(), "sandbox".into());
        assert_eq!(sandbox_of("pod1", &sandbox), "pod1");
        assert_eq!(sandbox_of("solo", &HashMap::new()), "solo");
    }
}
