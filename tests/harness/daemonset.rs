//! The DaemonSet in `deploy/kubernetes/daemonset.yaml`, turned into `podman run`
//! options, so that the daemon runs from its image exactly as the manifest says:
//! host PID namespace, only the added capabilities, read-only root, the manifest's
//! mounts, its arguments and environment, no seccomp filter. A field of the
//! security context this reader does not translate fails the test rather than being
//! dropped: the manifest and the proof cannot drift apart.
//!
//! Where the container's files come from on the host is the test's choice: the
//! kernel's file systems (`hostPath` of type `Directory`) are the host's own; the
//! daemon's own state (`DirectoryOrCreate`) and the policy (a ConfigMap) are
//! directories the test gives, never the machine's /run, /var or /etc.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

/// One volume mount of the daemon's container.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The volume's name (`btf`, `state`, `policy`, ...).
    pub volume: String,
    /// Where it is mounted in the container.
    pub path: String,
    pub read_only: bool,
    /// `HostToContainer` in the manifest: podman's `rslave`.
    pub host_to_container: bool,
    /// The host path of a `hostPath` volume; `None` for a ConfigMap.
    pub host_path: Option<String>,
    /// The `hostPath` type: `Directory` is the host's own (a kernel file system).
    pub host_path_type: Option<String>,
}

impl Mount {
    /// True for the host's own directories and files (kernel file systems, user
    /// names: `hostPath` of type `Directory` or `File`), which the test mounts as
    /// they are; false for the daemon's state and the policy.
    pub fn is_hosts_own(&self) -> bool {
        matches!(self.host_path_type.as_deref(), Some("Directory" | "File"))
    }
}

/// What the DaemonSet's pod template asks of the runtime for the daemon's container.
#[derive(Clone, Debug)]
pub struct DaemonSetPod {
    pub host_pid: bool,
    pub host_network: bool,
    pub read_only_root: bool,
    pub capabilities_drop: Vec<String>,
    pub capabilities_add: Vec<String>,
    pub seccomp_unconfined: bool,
    pub apparmor_unconfined: bool,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// The metrics port (`containerPort` of the port named `metrics`).
    pub metrics_port: u16,
}

/// The manifest's path in this repository.
pub fn manifest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml")
}

fn strings(yaml: &Yaml, what: &str) -> Vec<String> {
    yaml.as_vec()
        .unwrap_or_else(|| panic!("daemonset.yaml: {what} is not a list"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("daemonset.yaml: {what}: {v:?} is not a string"))
                .to_string()
        })
        .collect()
}

fn string(yaml: &Yaml, what: &str) -> String {
    yaml.as_str()
        .unwrap_or_else(|| panic!("daemonset.yaml: {what} missing or not a string"))
        .to_string()
}

impl DaemonSetPod {
    /// Reads `deploy/kubernetes/daemonset.yaml`.
    pub fn load() -> Self {
        let path = manifest_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Self::parse(&text)
    }

    /// The daemon's container (`name: session-monitor`) of the pod template.
    pub fn parse(text: &str) -> Self {
        let docs = YamlLoader::load_from_str(text)
            .unwrap_or_else(|e| panic!("daemonset.yaml is not YAML: {e}"));
        let pod = &docs[0]["spec"]["template"]["spec"];
        let container = pod["containers"]
            .as_vec()
            .expect("daemonset.yaml: spec.template.spec.containers")
            .iter()
            .find(|c| c["name"].as_str() == Some("session-monitor"))
            .expect("daemonset.yaml: a container named session-monitor");
        let security = &container["securityContext"];
        let known = [
            "privileged",
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "readOnlyRootFilesystem",
            "capabilities",
            "seccompProfile",
            "appArmorProfile",
        ];
        for key in security
            .as_hash()
            .expect("daemonset.yaml: securityContext")
            .keys()
        {
            let key = key.as_str().unwrap_or_default();
            assert!(
                known.contains(&key),
                "daemonset.yaml: securityContext.{key} is new: translate it into podman \
                 options in tests/harness/daemonset.rs"
            );
        }
        assert_eq!(
            security["privileged"].as_bool(),
            Some(false),
            "daemonset.yaml: securityContext.privileged"
        );
        assert_eq!(security["runAsUser"].as_i64(), Some(0), "runAsUser");
        assert_eq!(security["runAsGroup"].as_i64(), Some(0), "runAsGroup");

        let volumes = pod["volumes"].as_vec().expect("daemonset.yaml: volumes");
        let mounts = container["volumeMounts"]
            .as_vec()
            .expect("daemonset.yaml: volumeMounts")
            .iter()
            .map(|m| {
                let volume = string(&m["name"], "volumeMounts[].name");
                let source = volumes
                    .iter()
                    .find(|v| v["name"].as_str() == Some(&volume))
                    .unwrap_or_else(|| panic!("daemonset.yaml: no volume {volume}"));
                assert!(
                    !source["hostPath"].is_badvalue() || !source["configMap"].is_badvalue(),
                    "daemonset.yaml: volume {volume} is neither hostPath nor configMap"
                );
                assert!(
                    m["subPath"].is_badvalue(),
                    "daemonset.yaml: volumeMount {volume} has a subPath"
                );
                let propagation = m["mountPropagation"].as_str().unwrap_or("None");
                assert!(
                    ["None", "HostToContainer"].contains(&propagation),
                    "daemonset.yaml: volumeMount {volume}: mountPropagation {propagation}"
                );
                Mount {
                    path: string(&m["mountPath"], "volumeMounts[].mountPath"),
                    read_only: m["readOnly"].as_bool().unwrap_or(false),
                    host_to_container: propagation == "HostToContainer",
                    host_path: source["hostPath"]["path"].as_str().map(str::to_string),
                    host_path_type: source["hostPath"]["type"].as_str().map(str::to_string),
                    volume,
                }
            })
            .collect();
        let env = container["env"]
            .as_vec()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        (
                            string(&e["name"], "env[].name"),
                            string(&e["value"], "env[].value"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let metrics_port = container["ports"]
            .as_vec()
            .expect("daemonset.yaml: ports")
            .iter()
            .find(|p| p["name"].as_str() == Some("metrics"))
            .and_then(|p| p["containerPort"].as_i64())
            .expect("daemonset.yaml: a port named metrics") as u16;
        Self {
            host_pid: pod["hostPID"].as_bool().unwrap_or(false),
            host_network: pod["hostNetwork"].as_bool().unwrap_or(false),
            read_only_root: security["readOnlyRootFilesystem"]
                .as_bool()
                .unwrap_or(false),
            capabilities_drop: strings(&security["capabilities"]["drop"], "capabilities.drop"),
            capabilities_add: strings(&security["capabilities"]["add"], "capabilities.add"),
            seccomp_unconfined: security["seccompProfile"]["type"].as_str() == Some("Unconfined"),
            apparmor_unconfined: security["appArmorProfile"]["type"].as_str() == Some("Unconfined"),
            args: strings(&container["args"], "args"),
            env,
            mounts,
            metrics_port,
        }
    }

    /// `podman run` options for the container (before the image): `source_of` says
    /// where on the host each mount's files are.
    pub fn podman_options(&self, source_of: impl Fn(&Mount) -> PathBuf) -> Vec<String> {
        let mut options = Vec::new();
        if self.host_pid {
            options.extend(["--pid".into(), "host".into()]);
        }
        // No host network: a network namespace with only loopback, which the test
        // enters to probe /readyz, as the kubelet probes the pod's own address.
        options.extend([
            "--network".into(),
            if self.host_network { "host" } else { "none" }.into(),
        ]);
        if self.read_only_root {
            options.push("--read-only".into());
        }
        for cap in &self.capabilities_drop {
            options.push(format!("--cap-drop={cap}"));
        }
        for cap in &self.capabilities_add {
            options.push(format!("--cap-add={cap}"));
        }
        if self.seccomp_unconfined {
            options.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
        }
        if self.apparmor_unconfined {
            options.extend(["--security-opt".into(), "apparmor=unconfined".into()]);
        }
        for (name, value) in &self.env {
            options.extend(["--env".into(), format!("{name}={value}")]);
        }
        for mount in &self.mounts {
            let mut flags = vec![if mount.read_only { "ro" } else { "rw" }];
            if mount.host_to_container {
                flags.push("rslave");
            }
            options.extend([
                "--volume".into(),
                format!(
                    "{}:{}:{}",
                    source_of(mount).display(),
                    mount.path,
                    flags.join(",")
                ),
            ]);
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_becomes_podman_options() {
        let pod = DaemonSetPod::load();
        let options = pod.podman_options(|m| PathBuf::from(format!("/host{}", m.path)));
        let has = |a: &str, b: &str| options.windows(2).any(|w| w[0] == a && w[1] == b);
        assert!(has("--pid", "host"), "{options:?}");
        assert!(has("--network", "none"), "{options:?}");
        assert!(has("--security-opt", "seccomp=unconfined"), "{options:?}");
        assert!(options.contains(&"--read-only".to_string()), "{options:?}");
        assert!(
            options.contains(&"--cap-drop=ALL".to_string()),
            "{options:?}"
        );
        assert!(
            options.contains(&"--cap-add=KILL".to_string()),
            "{options:?}"
        );
        assert!(
            has("--volume", "/host/sys/kernel/btf:/sys/kernel/btf:ro"),
            "{options:?}"
        );
        assert!(
            has("--volume", "/host/sys/fs/bpf:/sys/fs/bpf:rw,rslave"),
            "{options:?}"
        );
        assert_eq!(pod.args[0], "run");
        assert_eq!(pod.metrics_port, 9469);
    }

    #[test]
    fn an_untranslated_security_field_fails() {
        let text = std::fs::read_to_string(manifest_path()).unwrap().replace(
            "privileged: false",
            "privileged: false\n            procMount: Unmasked",
        );
        let result = std::panic::catch_unwind(|| DaemonSetPod::parse(&text));
        let message = *result.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.contains("securityContext.procMount is new"),
            "{message}"
        );
    }
}
