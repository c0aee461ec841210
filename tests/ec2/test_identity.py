"""ec2/identity.py: which instance is a session's, from what the Airflow side set at RunInstances. Pure."""

from __future__ import annotations

from airflow_grid_resume.ec2.identity import belongs_to_session, why_not
from airflow_grid_resume.ec2.launch import ON_DEMAND, SPOT, Pair, client_token
from airflow_grid_resume.ec2.tags import RUN_TAG, run_tags

LONG = "s3://bucket/grid-runs/" + "d" * 280
RUN_A, RUN_B = LONG + "/0", LONG + "/1"  # differ only past character 256
PAIR = Pair("g5.xlarge", "subnet-1", "us-east-1a")


def instance(run_uri: str, session: int, *, market: str = SPOT, tags: bool = True, token: bool = True) -> dict:
    doc: dict = {"InstanceId": "i-1", "InstanceType": PAIR.instance_type, "SubnetId": PAIR.subnet_id}
    if token:
        doc["ClientToken"] = client_token(run_uri, session, PAIR, market)
    if tags:
        doc["Tags"] = [
            {"Key": k, "Value": v} for k, v in run_tags(run_uri, session, "2030-01-01T00:00:00Z", {}).items()
        ]
    return doc


def test_two_runs_whose_uris_differ_past_the_tag_limit_never_share_an_instance() -> None:
    a, b = instance(RUN_A, 1), instance(RUN_B, 1)
    assert (
        dict((t["Key"], t["Value"]) for t in a["Tags"])[RUN_TAG]
        == dict((t["Key"], t["Value"]) for t in b["Tags"])[RUN_TAG]
    )  # the readable tag is the same for both
    assert belongs_to_session(a, RUN_A, 1) and belongs_to_session(b, RUN_B, 1)
    assert not belongs_to_session(a, RUN_B, 1) and not belongs_to_session(b, RUN_A, 1)
    # by their tags alone too (a describe that shows no ClientToken)
    assert not belongs_to_session(instance(RUN_A, 1, token=False), RUN_B, 1)
    assert belongs_to_session(instance(RUN_A, 1, token=False), RUN_A, 1)


def test_the_session_must_match() -> None:
    assert not belongs_to_session(instance(RUN_A, 1), RUN_A, 2)
    assert not belongs_to_session(instance(RUN_A, 1, tags=False), RUN_A, 2)
    assert "session 2" in (why_not(instance(RUN_A, 1), RUN_A, 2) or "")


def test_an_instance_whose_tags_ec2_does_not_show_yet_is_known_by_its_client_token() -> None:
    assert belongs_to_session(instance(RUN_A, 3, tags=False), RUN_A, 3)
    assert belongs_to_session(instance(RUN_A, 3, tags=False, market=ON_DEMAND), RUN_A, 3)
    assert not belongs_to_session(instance(RUN_B, 3, tags=False), RUN_A, 3)
    assert not belongs_to_session({"InstanceId": "i-2"}, RUN_A, 3)  # nothing to tell: refused


def test_instances_launched_before_the_digest_tag_are_recognised_when_unambiguous() -> None:
    short = "s3://bucket/grid-runs/dag/task/run"
    legacy = {
        "InstanceId": "i-1",
        "Tags": [{"Key": RUN_TAG, "Value": short}, {"Key": "grid-resume:session", "Value": "1"}],
    }
    assert belongs_to_session(legacy, short, 1)
    cut = {
        "InstanceId": "i-1",
        "Tags": [{"Key": RUN_TAG, "Value": RUN_A[:256]}, {"Key": "grid-resume:session", "Value": "1"}],
    }
    assert not belongs_to_session(cut, RUN_A, 1)  # a cut URI could be either run's
    with_token = {
        **cut,
        "ClientToken": client_token(RUN_A, 1, PAIR, SPOT),
        "InstanceType": "g5.xlarge",
        "SubnetId": "subnet-1",
    }
    assert belongs_to_session(with_token, RUN_A, 1)  # its ClientToken is a digest of the whole URI


def test_someone_elses_instance_is_refused_with_the_reason() -> None:
    other = {"InstanceId": "i-9", "Tags": [{"Key": "Name", "Value": "database"}]}
    assert not belongs_to_session(other, RUN_A, 1)
    assert why_not(other, RUN_A, 1) == (
        "its ClientToken and tags do not name session 1 of this run (tags name 'no run', session none)"
    )
    assert why_not(None, RUN_A, 1) == "EC2 does not list it"
