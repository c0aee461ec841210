"""Whether an instance is the one of a given run and session: the check before adopting, watching or terminating it.

An instance id can come from places the Airflow side does not control (``sessions/N/launch.json`` is in a bucket
the instances write to, and a tag lookup by the readable run tag can match another run whose long URI shares its
first 256 characters). Only what the Airflow side itself set at RunInstances is evidence: the ClientToken (a digest
of the run URI, the session, the pair and the market) and the tags (the instance role cannot create tags). Pure:
tested without a server.
"""

from __future__ import annotations

from airflow_grid_resume.ec2.launch import ON_DEMAND, SPOT, Pair, client_token
from airflow_grid_resume.ec2.tags import RUN_DIGEST_TAG, RUN_TAG, SESSION_TAG, run_digest, run_tag_is_whole


def tags_of(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags") or []}


def launched_with_token(instance: dict, run_uri: str, session: int) -> bool:
    """The instance's ClientToken is one a launch of this session made (on the instance's own type and subnet,
    either market). EC2 shows the token as soon as it lists the instance, before its tags."""
    token = instance.get("ClientToken")
    instance_type, subnet = instance.get("InstanceType"), instance.get("SubnetId")
    if not token or not instance_type or not subnet:
        return False
    pair = Pair(str(instance_type), str(subnet), "")
    return any(token == client_token(run_uri, session, pair, market) for market in (SPOT, ON_DEMAND))


def belongs_to_session(instance: dict, run_uri: str, session: int) -> bool:
    """Whether ``instance`` was launched for session ``session`` of ``run_uri``: its ClientToken or its tags say
    so, and nothing it carries says otherwise. An instance launched before the digest tag existed is accepted by
    its readable run tag only when that tag can hold the whole URI (under 256 characters)."""
    tags = tags_of(instance)
    if SESSION_TAG in tags and tags[SESSION_TAG] != str(session):
        return False
    if RUN_DIGEST_TAG in tags and tags[RUN_DIGEST_TAG] != run_digest(run_uri):
        return False
    if launched_with_token(instance, run_uri, session):
        return True
    if tags.get(SESSION_TAG) != str(session):
        return False
    if RUN_DIGEST_TAG in tags:
        return True
    value = tags.get(RUN_TAG, "")
    return run_tag_is_whole(value) and value == run_uri


def why_not(instance: dict | None, run_uri: str, session: int) -> str | None:
    """None when ``instance`` belongs to the session; else why it is refused, in the words a log line shows."""
    if instance is None:
        return "EC2 does not list it"
    if belongs_to_session(instance, run_uri, session):
        return None
    tags = tags_of(instance)
    named = tags.get(RUN_TAG) or "no run"
    return (
        f"its ClientToken and tags do not name session {session} of this run "
        f"(tags name {named!r}, session {tags.get(SESSION_TAG) or 'none'})"
    )
