"""The docs describe the product as it is: every operator parameter documented, no history of the docs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from airflow_grid_resume.operators import GridRunOperator

ROOT = Path(__file__).parent.parent
# Sentences about the docs' own history or plans, not about the product.
HISTORY = re.compile(r"just arrived|being added|will describe|added (?:just|recently)|coming soon", re.IGNORECASE)


def test_every_operator_parameter_has_a_param_line() -> None:
    params = [p for p in inspect.signature(GridRunOperator.__init__).parameters if p not in ("self", "kwargs")]
    doc = GridRunOperator.__doc__ or ""
    assert [p for p in params if f":param {p}:" not in doc] == []
    assert [p for p in re.findall(r":param (\w+):", doc) if p not in params] == []


def test_docs_do_not_narrate_their_own_history() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert found == []


def _policy_statements() -> dict[str, dict]:
    import json

    text = (ROOT / "docs" / "user-guide.md").read_text()
    found = {}
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        for statement in json.loads(block).get("Statement", []):
            if statement.get("Sid"):
                found[statement["Sid"]] = statement
    return found


def test_the_user_guides_delete_permissions_cover_exactly_what_is_deleted() -> None:
    """s3:DeleteObject in the IAM examples: the instance's covers the manifests its agent prunes, the
    Airflow side's the manifests, packs and objects gc deletes, and neither covers a record or a log."""
    from fnmatch import fnmatchcase

    from airflow_grid_resume.ledger import layout

    sha = "ab" * 32
    run = "grid-runs/dag/task/run"

    def allowed(sid: str, key: str) -> bool:
        statement = _policy_statements()[sid]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Action"] == "s3:DeleteObject" and statement["Effect"] == "Allow"
        return any(fnmatchcase(f"arn:aws:s3:::BUCKET/{key}", r) for r in resources)  # IAM's * spans slashes too

    records = [layout.SPEC, layout.FINAL, layout.LEASE, layout.POINTER, layout.outcome(1), layout.log_chunk(1, 0)]
    for prefix in (run, f"{run}/{layout.rerun(2)}"):
        assert allowed("PruneOwnSessionsCheckpoints", f"{prefix}/{layout.manifest(1, 2)}")
        assert not allowed("PruneOwnSessionsCheckpoints", f"{prefix}/{layout.pack(sha)}")
        for key in (layout.manifest(1, 2), layout.pack(sha), layout.blob(sha)):
            assert allowed("GarbageCollectCheckpoints", f"{prefix}/{key}"), key
        for key in records:
            assert not allowed("PruneOwnSessionsCheckpoints", f"{prefix}/{key}"), key
            assert not allowed("GarbageCollectCheckpoints", f"{prefix}/{key}"), key


def _policies() -> dict[str, list[dict]]:
    """The guide's permission policies by role: the instance's (it prunes its checkpoints) and the Airflow side's
    (it passes the instance role). Sids repeat between them, so each is read as a whole."""
    import json

    text = (ROOT / "docs" / "user-guide.md").read_text()
    found = {}
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        statements = json.loads(block).get("Statement", [])
        sids = {s.get("Sid") for s in statements}
        if "PruneOwnSessionsCheckpoints" in sids:
            found["instance"] = statements
        if "PassTheInstanceRoleOnly" in sids:
            found["airflow"] = statements
    return found


def _allows(statements: list[dict], action: str, arn: str) -> bool:
    """IAM's verdict on one request without conditions: an explicit Deny wins, else an Allow, else denied. ``*``
    in a resource spans ``/`` as in IAM (fnmatch's does too)."""
    from fnmatch import fnmatchcase

    def listed(value: str | list[str]) -> list[str]:
        return value if isinstance(value, list) else [value]

    def matches(statement: dict) -> bool:
        actions = listed(statement["Action"])
        return any(fnmatchcase(action, a) for a in actions) and any(
            fnmatchcase(arn, r) for r in listed(statement["Resource"])
        )

    if any(s["Effect"] == "Deny" and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s) for s in statements)


def test_the_instance_role_cannot_write_what_only_the_airflow_side_writes() -> None:
    """Every key of the ledger's rules (ledger/layout.py RULES), in a run and in a fresh re-run under it: the
    instance policy lets the instance write exactly the keys the agent writes, the Airflow policy every key."""
    from airflow_grid_resume.ledger import layout

    sha = "ab" * 32
    concrete = {
        "SSSSSS": "000003",
        "NNNNNN": "000002",
        "<64 hex>": sha,
        "<16-digit offset>": "0" * 16,
    }
    policies = _policies()
    assert set(policies) == {"instance", "airflow"}
    run = "grid-runs/dag/task/run"
    checked = []
    for rule in layout.RULES:
        key = rule.key
        for placeholder, value in concrete.items():
            key = key.replace(placeholder, value)
        for prefix in (run, f"{run}/{layout.rerun(2)}", f"grid-runs/dag/task/{'x' * 300}/7"):
            arn = f"arn:aws:s3:::BUCKET/{prefix}/{key}"
            instance_may = _allows(policies["instance"], "s3:PutObject", arn)
            assert instance_may == ("agent" in rule.writers), (rule.key, prefix, instance_may)
            assert _allows(policies["airflow"], "s3:PutObject", arn), (rule.key, prefix)
            checked.append(rule.key)
    control = {r.key for r in layout.RULES if "agent" not in r.writers}
    assert control == {
        "spec.json", "agent/grid-resume-agent.pyz", "final.json", "sessions/SSSSSS/launch-attempt.json",
        "sessions/SSSSSS/launch.json", "sessions/SSSSSS/watch.json", "sessions/SSSSSS/closed.json",
        "deadline.json", "sessions/SSSSSS/decision.json",
    }  # fmt: skip
    for key in control:  # nor delete them (a deleted spec would start the run over)
        arn = f"arn:aws:s3:::BUCKET/{run}/{key.replace('SSSSSS', '000001')}"
        assert not _allows(policies["instance"], "s3:DeleteObject", arn), key


def test_the_user_guides_version_permissions_cover_what_gc_deletes_and_its_rule_is_the_one_gc_prints() -> None:
    """On a versioned bucket gc removes versions of the manifests, packs and objects it deleted (and nothing
    else); the lifecycle rule the guide gives is the one gc prints when it may not."""
    import json
    from fnmatch import fnmatchcase

    from airflow_grid_resume.ledger import layout
    from airflow_grid_resume.ledger.versions import LIFECYCLE_RULE

    statement = _policy_statements()["GarbageCollectCheckpointVersions"]
    assert statement["Action"] == "s3:DeleteObjectVersion" and statement["Effect"] == "Allow"
    run, sha = "grid-runs/dag/task/run", "ab" * 32

    def allowed(key: str) -> bool:
        return any(fnmatchcase(f"arn:aws:s3:::BUCKET/{run}/{key}", r) for r in statement["Resource"])

    assert all(allowed(k) for k in (layout.manifest(1, 2), layout.pack(sha), layout.blob(sha)))
    assert not any(allowed(k) for k in (layout.SPEC, layout.FINAL, layout.LEASE, layout.outcome(1)))
    assert _policy_statements()["ListRunLedgerVersions"]["Action"] == "s3:ListBucketVersions"
    text = (ROOT / "docs" / "user-guide.md").read_text()
    rules = [
        rule
        for block in re.findall(r"```json\n(.*?)```", text, re.S)
        for rule in json.loads(block).get("Rules", [])
        if "NoncurrentVersionExpiration" in rule
    ]
    assert rules == [LIFECYCLE_RULE]


def test_the_user_guides_bucket_policy_denies_what_the_local_spot_cloud_refuses() -> None:
    from airflow_grid_resume.emulator.bucketrules import BucketRuleBook, BucketRules
    from airflow_grid_resume.ledger.writeoptions import S3WriteOptions

    deny = _policy_statements()["DenyUnencryptedUploads"]
    required = deny["Condition"]["StringNotEquals"]["s3:x-amz-server-side-encryption"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "s3:PutObject"
    book, rules = BucketRuleBook(), BucketRules(require_encryption=required)
    for options, refused in ((S3WriteOptions(), True), (S3WriteOptions(required), False)):
        environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": "/BUCKET/grid-runs/r/spec.json"}
        environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in options.headers(b"{}").items()})
        assert (book.refuse(environ, rules) is not None) is refused
    kms = _policy_statements()["UseTheRunLedgersKey"]
    assert set(kms["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
