"""Kafka on the cluster keeps strangers out: one authenticated TLS listener, simple
authorization, and per service a KafkaUser whose ACLs cover exactly the topics and
consumer group that service uses, with its Deployment logging in as that user."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.topics import CANDIDATES, DLQ, LABELS, RELABEL_REQUESTS, SERVED
from ops.jobs.settings import REPO_ROOT, K8sSettings
from ops.jobs.validate import render, split_documents

# What each service reads (with its consumer group) and writes, from the code.
USES = {
    "candidate-generation": {
        "read": {RELABEL_REQUESTS.name, SERVED.name},
        # UpsertProducts publishes product_changed requests.
        "write": {CANDIDATES.name, DLQ.name, RELABEL_REQUESTS.name},
        "groups": {"candidate-generation", "candidate-generation-served"},
    },
    "teacher-labeling": {
        "read": {CANDIDATES.name},
        "write": {LABELS.name, DLQ.name},
        "groups": {"teacher-labeling"},
    },
    "label-store": {
        "read": {LABELS.name, RELABEL_REQUESTS.name},
        "write": {DLQ.name},
        "groups": {"label-store", "label-store-products"},
    },
    "student-inference": {"read": set(), "write": {SERVED.name}, "groups": set()},
    "disagreement-monitor": {
        "read": {SERVED.name},
        "write": {RELABEL_REQUESTS.name, DLQ.name},
        "groups": {"disagreement-monitor"},
    },
}


@pytest.fixture(scope="module", params=["overlays/dev", "overlays/prod-gpu"])
def objects(request: pytest.FixtureRequest, k8s_settings: K8sSettings) -> list[dict[str, Any]]:
    rendered = render(REPO_ROOT / "k8s" / request.param, k8s_settings.kubectl)
    return list(split_documents(rendered))


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_listener_authenticates_and_acls_apply(objects: list[dict[str, Any]]) -> None:
    kafka = of_kind(objects, "Kafka")["relkd"]["spec"]
    listeners = kafka["kafka"]["listeners"]
    assert listeners and all(
        listener["tls"] and listener["authentication"]["type"] == "scram-sha-512"
        for listener in listeners
    )
    assert kafka["kafka"]["authorization"]["type"] == "simple"
    assert "userOperator" in kafka["entityOperator"]


def test_each_user_may_touch_only_its_own_topics_and_group(
    objects: list[dict[str, Any]],
) -> None:
    users = of_kind(objects, "KafkaUser")
    assert set(users) == set(USES)
    topics = set(of_kind(objects, "KafkaTopic"))
    for name, uses in USES.items():
        acls = users[name]["spec"]["authorization"]["acls"]
        read = {
            a["resource"]["name"]
            for a in acls
            if a["resource"]["type"] == "topic" and "Read" in a["operations"]
        }
        write = {
            a["resource"]["name"]
            for a in acls
            if a["resource"]["type"] == "topic" and "Write" in a["operations"]
        }
        groups = {a["resource"]["name"] for a in acls if a["resource"]["type"] == "group"}
        assert (read, write, groups) == (uses["read"], uses["write"], uses["groups"]), name
        assert read | write <= topics
        # No wildcard or prefix grants and nothing beyond reading, writing, describing.
        for acl in acls:
            assert acl["resource"].get("patternType", "literal") == "literal"
            assert "*" not in acl["resource"].get("name", "")
            assert set(acl["operations"]) <= {"Read", "Write", "Describe", "IdempotentWrite"}


def test_deployments_log_in_as_their_user_with_secrets_by_name(
    objects: list[dict[str, Any]],
) -> None:
    config = of_kind(objects, "ConfigMap")["relkd-config"]["data"]
    assert config["RELKD_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["RELKD_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert not any("PASSWORD" in key and "FILE" not in key for key in config)
    deployments = of_kind(objects, "Deployment")
    for name in USES:
        pod = deployments[name]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
        assert env["RELKD_KAFKA_SASL_USERNAME"] == name
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert {name, "relkd-cluster-ca-cert"} <= secrets
