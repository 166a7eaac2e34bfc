"""Kubernetes manifests: valid against the offline Kubernetes schemas, and running the compose worker's command."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO

K8S = REPO / "deploy" / "kubernetes"
VALIDATE = [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", "1.37.0"]


def _validate(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*VALIDATE, *map(str, files)], capture_output=True, text=True, timeout=120)


def test_manifests_are_valid_kubernetes_objects():
    files = sorted(K8S.glob("*.yaml"))
    assert {f.name for f in files} == {"configmap.yaml", "secret.yaml", "worker-job.yaml"}
    proc = _validate(*files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (proc.stdout + proc.stderr).count(" passed for resource ") == 3, proc.stdout + proc.stderr


def test_a_broken_manifest_is_rejected(tmp_path):
    job = yaml.safe_load((K8S / "worker-job.yaml").read_text())
    job["spec"]["parallelism"] = "four"  # wrong type
    job["spec"]["template"]["spec"]["containers"][0]["commands"] = ["sh"]  # unknown field (strict)
    bad = tmp_path / "job.yaml"
    bad.write_text(yaml.safe_dump(job))
    proc = _validate(bad)
    assert proc.returncode != 0 and "parallelism" in proc.stdout + proc.stderr


def test_job_runs_the_compose_worker_with_the_same_image_and_variables():
    job = yaml.safe_load((K8S / "worker-job.yaml").read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["worker"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == compose["command"] and container["image"] == compose["image"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["parallelism"] == job["spec"]["completions"]
    refs = {r.get("configMapRef", r.get("secretRef"))["name"] for r in container["envFrom"]}
    config = yaml.safe_load((K8S / "configmap.yaml").read_text())
    secret = yaml.safe_load((K8S / "secret.yaml").read_text())
    assert refs == {config["metadata"]["name"], secret["metadata"]["name"]}
    provided = set(config["data"]) | set(secret["stringData"])
    assert provided == set(compose["environment"])  # every variable the compose worker gets, and nothing else
    assert (REPO / compose["command"][1]).is_file() and shutil.which("sh")
