//! The Kubernetes manifests in deploy/kubernetes, checked against what the daemon
//! needs ([`super::PATHS`], [`super::CAPABILITIES`]), against each other, and against
//! the Kubernetes API schemas (with `kubernetes-validate`, offline).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use yaml_rust2::{Yaml, YamlLoader};

use super::*;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// The single document of one manifest.
fn load(name: &str) -> Yaml {
    let path = deploy_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not YAML: {err}", path.display()));
    assert_eq!(docs.len(), 1, "{name}: one document expected");
    docs.remove(0)
}

fn text(yaml: &Yaml) -> Option<&str> {
    yaml.as_str()
}

fn list(yaml: &Yaml) -> &[Yaml] {
    yaml.as_vec().map(Vec::as_slice).unwrap_or_default()
}

fn strings(yaml: &Yaml) -> Vec<&str> {
    list(yaml).iter().filter_map(Yaml::as_str).collect()
}

/// The pod spec and the daemon's container of the DaemonSet.
fn pod_and_container(daemonset: &Yaml) -> (&Yaml, &Yaml) {
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = list(&pod["containers"])
        .iter()
        .find(|c| text(&c["name"]) == Some("session-monitor"))
        .expect("a container named session-monitor");
    (pod, container)
}

/// A volume mount, with the volume it mounts.
struct Mount<'a> {
    path: &'a str,
    read_only: bool,
    sub_path: Option<&'a str>,
    volume: &'a Yaml,
}

fn mounts<'a>(pod: &'a Yaml, container: &'a Yaml) -> Vec<Mount<'a>> {
    let volumes: BTreeMap<&str, &Yaml> = list(&pod["volumes"])
        .iter()
        .map(|v| (text(&v["name"]).expect("volume name"), v))
        .collect();
    list(&container["volumeMounts"])
        .iter()
        .map(|m| {
            let name = text(&m["name"]).expect("volumeMount name");
            Mount {
                path: text(&m["mountPath"]).expect("mountPath"),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
                sub_path: text(&m["subPath"]),
                volume: volumes
                    .get(name)
                    .unwrap_or_else(|| panic!("volumeMount {name} has no volume")),
            }
        })
        .collect()
}

/// `path` is `mount` or lies below it.
fn under(path: &str, mount: &str) -> bool {
    path == mount
        || path
            .strip_prefix(mount)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[test]
fn the_daemonset_grants_exactly_the_capabilities_preflight_requires() {
    let daemonset = load("daemonset.yaml");
    let (pod, container) = pod_and_container(&daemonset);
    let security = &container["securityContext"];
    assert_eq!(security["privileged"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);

    let granted: BTreeSet<&str> = strings(&security["capabilities"]["add"])
        .into_iter()
        .collect();
    let required: BTreeSet<&str> = CAPABILITIES
        .iter()
        .map(Capability::kubernetes_name)
        .collect();
    assert_eq!(
        granted, required,
        "capabilities.add must equal preflight::CAPABILITIES"
    );
    assert!(
        !pod["hostNetwork"].as_bool().unwrap_or(false),
        "no hostNetwork"
    );
    // Pod-level capabilities would not be visible here: there must be none.
    assert!(pod["securityContext"]["capabilities"].is_badvalue());
}

#[test]
fn the_daemonset_provides_every_path_preflight_requires() {
    let daemonset = load("daemonset.yaml");
    let (pod, container) = pod_and_container(&daemonset);
    let mounts = mounts(pod, container);

    for req in PATHS {
        match req.provision {
            Provision::HostPid => {
                assert_eq!(
                    pod["hostPID"].as_bool(),
                    Some(true),
                    "{}: hostPID",
                    req.path
                );
                assert!(
                    mounts.iter().all(|m| !under(m.path, req.path)),
                    "{}: given by hostPID, nothing is mounted there",
                    req.path
                );
            }
            Provision::HostPath => {
                let mount = mounts
                    .iter()
                    .find(|m| under(req.path, m.path))
                    .unwrap_or_else(|| panic!("{}: no volume mounted there", req.path));
                let host = text(&mount.volume["hostPath"]["path"])
                    .unwrap_or_else(|| panic!("{}: not a hostPath volume", req.path));
                assert_eq!(host, mount.path, "{}: the host's own path", req.path);
                assert!(mount.sub_path.is_none(), "{}: no subPath", req.path);
                let writes = matches!(req.need, Need::WritableDirectory | Need::Bpffs);
                assert_eq!(
                    mount.read_only, !writes,
                    "{}: read-only exactly when the daemon only reads it",
                    req.path
                );
                let kind = text(&mount.volume["hostPath"]["type"]);
                let expected = if req.need == Need::WritableDirectory {
                    "DirectoryOrCreate"
                } else if mount.path == req.path && req.need == Need::ReadableFile {
                    "File"
                } else {
                    "Directory"
                };
                assert_eq!(kind, Some(expected), "{}: hostPath type", req.path);
            }
            Provision::ConfigMap => {
                let mount = mounts
                    .iter()
                    .find(|m| m.path == req.path)
                    .unwrap_or_else(|| panic!("{}: no volume mounted there", req.path));
                assert!(
                    text(&mount.volume["configMap"]["name"]).is_some(),
                    "{}: a ConfigMap volume",
                    req.path
                );
                // subPath mounts are never updated: the daemon would not see edits.
                assert!(
                    mount.sub_path.is_none(),
                    "{}: mounted as a directory",
                    req.path
                );
                assert!(mount.read_only, "{}: read-only", req.path);
            }
        }
    }

    // Nothing is mounted that the daemon does not need.
    for mount in &mounts {
        assert!(
            PATHS.iter().any(|req| under(req.path, mount.path)),
            "{} is mounted but not in preflight::PATHS",
            mount.path
        );
    }
}

#[test]
fn the_manifests_agree_on_policy_port_and_names() {
    let daemonset = load("daemonset.yaml");
    let (pod, container) = pod_and_container(&daemonset);
    let configmap = load("configmap.yaml");
    let service = load("service.yaml");
    let monitor = load("servicemonitor.yaml");
    let namespace = load("namespace.yaml");

    // One namespace.
    let ns = text(&namespace["metadata"]["name"]).unwrap();
    for (name, doc) in [
        ("daemonset", &daemonset),
        ("configmap", &configmap),
        ("service", &service),
        ("servicemonitor", &monitor),
        ("serviceaccount", &load("serviceaccount.yaml")),
    ] {
        assert_eq!(text(&doc["metadata"]["namespace"]), Some(ns), "{name}");
    }

    // The policy the daemon is told to read is the ConfigMap's key.
    let args = strings(&container["args"]);
    let config = args
        .iter()
        .position(|&a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .expect("--config PATH");
    let (dir, file) = config.rsplit_once('/').unwrap();
    assert_eq!(dir, CONFIG_DIR);
    let policy_volume = list(&pod["volumes"])
        .iter()
        .find(|v| !v["configMap"].is_badvalue())
        .expect("the policy volume");
    assert_eq!(
        text(&policy_volume["configMap"]["name"]),
        text(&configmap["metadata"]["name"])
    );
    let policy = text(&configmap["data"][file]).expect("the ConfigMap holds the policy file");

    // The daemon's own parser accepts the policy (unknown keys are errors there).
    let parsed = crate::policy::parse_str(policy, "configmap.yaml")
        .unwrap_or_else(|err| panic!("the ConfigMap's policy is rejected:\n{err}"));
    assert_eq!(
        parsed.mode,
        crate::policy::Mode::DryRun,
        "first rollouts run dry"
    );

    // One metrics port everywhere.
    let port = list(&container["ports"])
        .iter()
        .find(|p| text(&p["name"]) == Some("metrics"))
        .and_then(|p| p["containerPort"].as_i64())
        .expect("a container port named metrics");
    let flag = args
        .iter()
        .position(|&a| a == "--metrics-addr")
        .and_then(|i| args.get(i + 1))
        .expect("--metrics-addr ADDR");
    assert_eq!(flag.rsplit_once(':').unwrap().1, port.to_string());
    let in_policy = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("metrics_addr = "))
        .expect("metrics_addr in the policy");
    assert_eq!(in_policy.trim_matches('"'), *flag);
    let annotations = &daemonset["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(text(&annotations["prometheus.io/scrape"]), Some("true"));
    assert_eq!(
        text(&annotations["prometheus.io/port"]),
        Some(port.to_string().as_str())
    );
    assert_eq!(text(&annotations["prometheus.io/path"]), Some("/metrics"));

    // Probes hit the health endpoints on that port.
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(text(&get["path"]), Some(path), "{probe}");
        assert_eq!(text(&get["port"]), Some("metrics"), "{probe}");
    }

    // The Service selects the pods and exposes the port; the ServiceMonitor selects
    // the Service and scrapes that port.
    let pod_labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_hash().expect("a selector") {
        assert_eq!(
            &pod_labels[key.as_str().unwrap()],
            value,
            "service selector"
        );
    }
    let service_port = &list(&service["spec"]["ports"])[0];
    assert_eq!(text(&service_port["name"]), Some("metrics"));
    assert_eq!(service_port["port"].as_i64(), Some(port));
    assert_eq!(text(&service_port["targetPort"]), Some("metrics"));
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_hash()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key.as_str().unwrap()], value);
    }
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [ns]
    );
    let endpoint = &list(&monitor["spec"]["endpoints"])[0];
    assert_eq!(text(&endpoint["port"]), Some("metrics"));
    assert_eq!(text(&endpoint["path"]), Some("/metrics"));

    // The pods run under the ServiceAccount, which carries no API token.
    assert_eq!(text(&pod["serviceAccountName"]), Some("session-monitor"));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
}

/// The YAML files of deploy/kubernetes, by name.
fn manifest_files() -> BTreeSet<String> {
    std::fs::read_dir(deploy_dir())
        .expect("deploy/kubernetes")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect()
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_servicemonitor() {
    let kustomization = load("kustomization.yaml");
    let listed: BTreeSet<String> = strings(&kustomization["resources"])
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut expected = manifest_files();
    expected.remove("kustomization.yaml");
    // A CRD kind: applying it where the Prometheus Operator is absent would fail the
    // whole `kubectl apply -k`; it is applied on its own (see the file).
    expected.remove("servicemonitor.yaml");
    assert_eq!(listed, expected);
}

/// How to run `kubernetes-validate`.
struct Validator {
    program: PathBuf,
    args: Vec<&'static str>,
}

impl Validator {
    fn run(&self, args: &[&str], files: &[PathBuf]) -> Output {
        Command::new(&self.program)
            .args(&self.args)
            .args(args)
            .args(files)
            .output()
            .expect("kubernetes-validate runs")
    }
}

fn works(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The pinned release installed into a private virtualenv when the tool is not on
/// the machine; it carries the schemas of Kubernetes 1.25 to 1.37.
const PINNED: &str = "kubernetes-validate==1.37.0";

/// Finds `kubernetes-validate`, installing it with pip into a virtualenv under the
/// target directory when needed. `Err` says why it cannot be had.
fn find_validator() -> Result<Validator, String> {
    if let Some(program) = std::env::var_os("KUBERNETES_VALIDATE") {
        return Ok(Validator {
            program: program.into(),
            args: vec![],
        });
    }
    let on_path = Path::new("kubernetes-validate");
    if works(on_path, &[]) {
        return Ok(Validator {
            program: on_path.into(),
            args: vec![],
        });
    }
    let python = Path::new("python3");
    if works(python, &["-m", "kubernetes_validate"]) {
        return Ok(Validator {
            program: python.into(),
            args: vec!["-m", "kubernetes_validate"],
        });
    }
    // target/<profile>/deps/<test binary> -> target/<profile>/kubernetes-validate-venv
    let exe = std::env::current_exe().map_err(|e| format!("locating the test binary: {e}"))?;
    let venv = exe
        .ancestors()
        .nth(2)
        .ok_or("no target directory")?
        .join("kubernetes-validate-venv");
    let installed = venv.join("bin/kubernetes-validate");
    if !works(&installed, &[]) {
        let run = |program: &Path, args: &[&str]| -> Result<(), String> {
            let out = Command::new(program)
                .args(args)
                .output()
                .map_err(|e| format!("{}: {e}", program.display()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`{} {}` failed: {}",
                    program.display(),
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let venv_arg = venv.to_string_lossy();
        run(python, &["-m", "venv", "--clear", &venv_arg])?;
        run(
            &venv.join("bin/pip"),
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--timeout",
                "30",
                "--retries",
                "2",
                PINNED,
            ],
        )?;
    }
    Ok(Validator {
        program: installed,
        args: vec![],
    })
}

/// Output lines of a validator run.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The oldest Kubernetes the manifests support (securityContext.appArmorProfile is
/// GA in 1.30) and the newest the pinned validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Every manifest is valid for the Kubernetes API, with unknown fields rejected.
/// Fails when `kubernetes-validate` is not installed and cannot be installed (no
/// Python, no network): `cargo xtask setup` installs it.
#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    let validator = find_validator()
        .unwrap_or_else(|reason| panic!("kubernetes-validate is not available: {reason}"));
    let files: Vec<PathBuf> = manifest_files()
        .into_iter()
        .filter(|name| name != "kustomization.yaml")
        .map(|name| deploy_dir().join(name))
        .collect();

    for version in KUBERNETES_VERSIONS {
        let out = validator.run(&["--strict", "-k", version], &files);
        let said = said(&out);
        assert!(out.status.success(), "Kubernetes {version}:\n{said}");
        // Kinds without a schema only warn. The ServiceMonitor (a CRD) is the one
        // expected; any other would be a misspelt kind or apiVersion.
        for line in said.lines().filter(|l| l.contains("Couldn't find schema")) {
            assert!(
                line.contains("kind ServiceMonitor"),
                "Kubernetes {version}: {line}"
            );
        }
        let passed = said.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(passed, files.len() - 1, "Kubernetes {version}:\n{said}");
    }

    // And it does reject a broken manifest, so the passes above mean something.
    let broken = std::env::temp_dir().join(format!("broken-daemonset-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    std::fs::write(&broken, text.replace("hostPID: true", "hostPid: true")).unwrap();
    let out = validator.run(
        &["--strict", "-k", KUBERNETES_VERSIONS[1]],
        std::slice::from_ref(&broken),
    );
    std::fs::remove_file(&broken).unwrap();
    assert!(
        !out.status.success(),
        "a misspelt field passed:\n{}",
        said(&out)
    );
}
