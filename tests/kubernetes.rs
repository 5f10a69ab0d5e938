//! The Kubernetes deployment as the Prometheus ecosystem installs it: a kustomize base
//! (`deploy/kubernetes/base`: DaemonSet and headless Service) and two overlays for the Prometheus
//! Operator (`monitoring`: ServiceMonitor, PrometheusRule, Grafana dashboard ConfigMap;
//! `podmonitor`: the same with a PodMonitor instead of the Service). Each is rendered by the
//! real tool (`kubectl kustomize`), its core objects validated against the Kubernetes schemas
//! (kubernetes-validate) and its custom resources against the prometheus-operator CRDs
//! vendored in `deploy/kubernetes/crds` (tests/validate_crds.py). The PrometheusRule and the
//! dashboard ConfigMap are generated from `prometheus/alerts.yml` and
//! `grafana/sockwatch.json`: a test keeps them identical (`SOCKWATCH_BLESS=1` rewrites them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn yaml_docs(text: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// What the generated files must hold, from their sources.
fn generated() -> [(PathBuf, String); 2] {
    let alerts: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path("prometheus/alerts.yml")).unwrap()).unwrap();
    let rule = serde_yaml_ng::to_string(&serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&format!(
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: sockwatch\n  namespace: monitoring\n  \
         labels:\n    app.kubernetes.io/name: sockwatch\n    release: kube-prometheus-stack\nspec:\n  groups: {}\n",
        serde_json::to_string(&alerts["groups"]).unwrap()
    ))
    .unwrap())
    .unwrap();
    let dashboard = std::fs::read_to_string(path("grafana/sockwatch.json")).unwrap();
    let mut map = serde_yaml_ng::Mapping::new();
    map.insert("sockwatch.json".into(), dashboard.into());
    let cm: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sockwatch-grafana-dashboard\n  namespace: monitoring\n  \
         labels:\n    app.kubernetes.io/name: sockwatch\n    grafana_dashboard: \"1\"\n",
    )
    .unwrap();
    let mut cm = cm;
    cm["data"] = serde_yaml_ng::Value::Mapping(map);
    let header = "# Generated from prometheus/alerts.yml by tests/kubernetes.rs (SOCKWATCH_BLESS=1 cargo test --test kubernetes).\n";
    let header_cm = "# Generated from grafana/sockwatch.json by tests/kubernetes.rs (SOCKWATCH_BLESS=1 cargo test --test kubernetes).\n# The Grafana sidecar of kube-prometheus-stack loads ConfigMaps labelled grafana_dashboard: \"1\".\n";
    [
        (path("deploy/kubernetes/monitoring/prometheusrule.yaml"), format!("{header}{rule}")),
        (
            path("deploy/kubernetes/monitoring/grafana-dashboard.yaml"),
            format!("{header_cm}{}", serde_yaml_ng::to_string(&cm).unwrap()),
        ),
    ]
}

/// The PrometheusRule holds exactly prometheus/alerts.yml's groups, and the dashboard
/// ConfigMap exactly grafana/sockwatch.json: one source each, the copies generated.
fn the_prometheus_rule_and_dashboard_are_the_shipped_ones() {
    let bless = std::env::var("SOCKWATCH_BLESS").is_ok_and(|v| v == "1");
    for (file, want) in generated() {
        if bless {
            std::fs::write(&file, &want).unwrap();
        }
        let have = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            have == want,
            "{} differs from its source: SOCKWATCH_BLESS=1 cargo test --test kubernetes",
            file.display()
        );
    }
    // And by content, not only by text: the rule's groups are the alert file's.
    let rule =
        &yaml_docs(&std::fs::read_to_string(path("deploy/kubernetes/monitoring/prometheusrule.yaml")).unwrap())[0];
    let alerts: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path("prometheus/alerts.yml")).unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    let cm =
        &yaml_docs(&std::fs::read_to_string(path("deploy/kubernetes/monitoring/grafana-dashboard.yaml")).unwrap())[0];
    let json: serde_json::Value = serde_json::from_str(cm["data"]["sockwatch.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "sockwatch");
}

/// `kubectl kustomize` on a directory; its stdout.
fn kustomize(dir: &str) -> String {
    let out = Command::new("kubectl").args(["kustomize", &path(dir).to_string_lossy()]).output().unwrap();
    assert!(out.status.success(), "kubectl kustomize {dir}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Each kustomization renders with the real tool into the objects it promises, and every
/// object is valid: core kinds against the Kubernetes schemas, custom resources against the
/// prometheus-operator CRDs. The checks can fail: a misspelt field is refused by each.
fn kustomizations_render_and_validate() {
    let test = "kustomizations_render_and_validate";
    if !common::require_commands(test, &["kubectl", "kubernetes-validate", "python3"]) {
        return;
    }
    let cases: [(&str, &[&str]); 3] = [
        ("deploy/kubernetes/base", &["DaemonSet", "Service"]),
        ("deploy/kubernetes/monitoring", &["ConfigMap", "DaemonSet", "PrometheusRule", "Service", "ServiceMonitor"]),
        ("deploy/kubernetes/podmonitor", &["ConfigMap", "DaemonSet", "PodMonitor", "PrometheusRule"]),
    ];
    let dir = std::env::temp_dir().join(format!("sockwatch-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (kustomization, kinds) in cases {
        let text = kustomize(kustomization);
        let docs = yaml_docs(&text);
        let mut have: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        have.sort_unstable();
        assert_eq!(have, kinds, "{kustomization}");
        let (custom, core): (Vec<_>, Vec<_>) = docs
            .iter()
            .partition(|d| d["apiVersion"].as_str().is_some_and(|a| a.starts_with("monitoring.coreos.com/")));
        let core_file = dir.join("core.yaml");
        std::fs::write(
            &core_file,
            core.iter().map(|d| serde_yaml_ng::to_string(d).unwrap()).collect::<Vec<_>>().join("---\n"),
        )
        .unwrap();
        validate_core(&core_file, kustomization);
        if !custom.is_empty() {
            let stream = custom.iter().map(|d| serde_yaml_ng::to_string(d).unwrap()).collect::<Vec<_>>().join("---\n");
            validate_custom(&stream, kustomization, true);
            // The check can fail: a misspelt field in a ServiceMonitor or PrometheusRule.
            let broken =
                stream.replace("podMetricsEndpoints:", "podMetricEndpoints:").replace("endpoints:", "endpoint:");
            let broken = broken.replace("  groups:", "  group:");
            validate_custom(&broken, kustomization, false);
        }
    }
    // kubernetes-validate refuses a misspelt field in a core object too.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, kustomize("deploy/kubernetes/base").replace("clusterIP: None", "clusterIp: None")).unwrap();
    let out = Command::new("kubernetes-validate").arg("--strict").arg(&bad).output().unwrap();
    assert!(!out.status.success(), "a misspelt Service field passed");
    let _ = std::fs::remove_dir_all(&dir);
}

fn validate_core(file: &Path, what: &str) {
    let out = Command::new("kubernetes-validate").arg("--strict").arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: kubernetes-validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn validate_custom(stream: &str, what: &str, valid: bool) {
    let crds: Vec<PathBuf> = ["servicemonitors", "podmonitors", "prometheusrules"]
        .iter()
        .map(|c| path(&format!("deploy/kubernetes/crds/monitoring.coreos.com_{c}.yaml")))
        .collect();
    let mut child = Command::new("python3")
        .arg(path("tests/validate_crds.py"))
        .args(&crds)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stream.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.success(), valid, "{what} (expected valid: {valid}): {report}");
}

test_main!(the_prometheus_rule_and_dashboard_are_the_shipped_ones, kustomizations_render_and_validate,);
