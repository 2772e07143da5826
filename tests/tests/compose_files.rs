//! The compose deployment cannot run here (no container engine), so its files are checked
//! with the tools that install: `docker-compose config` validates the compose file against
//! the compose schema; the Prometheus and Grafana files must parse and point at files that
//! exist. (`http_endpoints.rs` checks that every series they query is exported.)
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn compose_file_is_valid() {
    let file = root().join("compose/docker-compose.yml");
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(&file)
        .args(["config", "-q"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "docker-compose (installed by scripts/setup.sh) is needed to validate {}: {e}",
                file.display()
            )
        });
    assert!(
        out.status.success(),
        "{} is invalid:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for service in [
        "kafka-home",
        "kafka-us",
        "kafka-eu",
        "kafka-ap",
        "processor-us",
        "processor-eu",
        "processor-ap",
        "reconciler",
        "loadgen",
        "prometheus",
        "grafana",
    ] {
        assert!(
            text.contains(&format!("\n  {service}:")),
            "no service {service}"
        );
    }
    assert!(root().join("compose/Dockerfile").is_file());
}

#[test]
fn prometheus_and_grafana_files_parse() {
    for f in [
        "compose/prometheus/prometheus.yml",
        "compose/prometheus/alerts.yml",
    ] {
        let out = Command::new("python3")
            .args(["-c", "import sys, yaml; yaml.safe_load(open(sys.argv[1]))"])
            .arg(root().join(f))
            .output()
            .expect("python3 with yaml (a dependency of docker-compose)");
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dash =
        std::fs::read_to_string(root().join("compose/grafana/dashboards/regionflow.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dash).expect("dashboard is JSON");
    assert!(v["panels"].as_array().is_some_and(|p| !p.is_empty()));
    for f in [
        "compose/grafana/provisioning/datasources/prometheus.yml",
        "compose/grafana/provisioning/dashboards/dashboards.yml",
    ] {
        assert!(root().join(f).is_file(), "{f} missing");
    }
}
