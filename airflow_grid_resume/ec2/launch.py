"""Pure launch logic: the launch spec, (type, zone) pairs, idempotency tokens, error classes, backoff.

Nothing here talks to AWS; the hook and the trigger build on it, and it is tested without a server.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from airflow_grid_resume.ec2.tags import RESERVED_PREFIXES

SPOT = "spot"
ON_DEMAND = "on-demand"

# image_id as an SSM parameter (the current Deep Learning AMI, say), resolved to an AMI id before each launch.
SSM_IMAGE_PREFIX = "resolve:ssm:"

CAPACITY = "capacity"
THROTTLE = "throttle"
TRANSIENT = "transient"  # 5xx or no answer: the request may or may not have been carried out
FATAL = "fatal"
UNSUPPORTED = "unsupported"  # this (type, zone) pair is not offered: skip the pair, never retry it in this session

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "UnfulfillableCapacity",
        "VcpuLimitExceeded",
        "InsufficientFreeAddressesInSubnet",
    }
)
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled"})
# EC2's server-side errors and lost answers: retry the same request (for a launch, with the same ClientToken).
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "Unavailable",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "RequestExpired",
        "ConnectionError",  # our name for a connection error or read timeout: no answer at all
    }
)

# What to fix for the errors waiting cannot fix: (code prefix, parameter, advice).
_FATAL_HINTS: tuple[tuple[str, str, str], ...] = (
    ("InvalidAMIID", "image_id", "the AMI does not exist in this region or is not shared with the account"),
    (
        "ParameterNotFound",
        "image_id",
        "the SSM parameter does not exist in this region (AWS's public AMI parameters "
        "are under /aws/service/...: `aws ssm get-parameters-by-path --path /aws/service/...` lists them)",
    ),
    ("ParameterVersionNotFound", "image_id", "the SSM parameter has no such version or label"),
    (
        "AccessDeniedException",
        "aws_conn_id",
        "the credentials lack ssm:GetParameter, which resolving the image_id's SSM parameter needs",
    ),
    ("InvalidSubnetID", "subnet_ids", "the subnet does not exist in this region"),
    ("InvalidSubnet", "subnet_ids", "the subnet does not exist in this region"),
    ("InvalidGroup", "security_group_ids", "a security group does not exist or is in another VPC"),
    ("InvalidKeyPair", "key_name", "the key pair does not exist in this region"),
    ("InvalidParameterValue", "launch spec", "a launch parameter has an invalid value (AWS's message names it)"),
    ("InvalidInstanceType", "instance_types", "the instance type does not exist or is not offered here"),
    ("Unsupported", "instance_types", "the instance type is not supported in that zone or with that AMI"),
    ("InvalidParameterCombination", "instance_types", "the AMI's architecture or virtualization does not fit the type"),
    (
        "UnauthorizedOperation",
        "aws_conn_id",
        "the credentials lack a permission this launch needs: ec2:RunInstances, ec2:CreateTags, "
        "ec2:DescribeSubnets, or iam:PassRole on the instance profile's role (AWS's message names the action; "
        "decode it with `aws sts decode-authorization-message`)",
    ),
    ("AuthFailure", "aws_conn_id", "the credentials were rejected"),
    ("InvalidClientTokenId", "aws_conn_id", "the access key does not exist"),
    ("AccessDenied", "iam_instance_profile", "iam:PassRole on the instance profile's role is not allowed"),
    ("InvalidIamInstanceProfile", "iam_instance_profile", "the instance profile does not exist"),
    ("InvalidParameter", "launch spec", "a launch parameter is invalid"),
    ("IdempotentParameterMismatch", "launch spec", "a retried launch changed its parameters; the session is stuck"),
    ("InvalidUserData", "launch spec", "the rendered user data is invalid or too large"),
)


def classify_error(code: str) -> str:
    """capacity (try the next pair, then wait), throttle (back off), transient (retry the same request
    after a backoff: it may have been carried out), unsupported (skip this pair for good), or fatal (fail now)."""
    if code in CAPACITY_CODES:
        return CAPACITY
    if code in THROTTLE_CODES:
        return THROTTLE
    if code in TRANSIENT_CODES:
        return TRANSIENT
    if code == "Unsupported":  # "Your requested instance type (X) is not supported in ... Zone (Y)": that pair only
        return UNSUPPORTED
    return FATAL


def explain_fatal(code: str, message: str) -> str:
    """A message for an error waiting cannot fix, naming the parameter to change."""
    for prefix, parameter, advice in _FATAL_HINTS:
        if code.startswith(prefix):
            return f"launch failed with {code}: {advice}. Fix the operator's {parameter!r}. AWS said: {message}"
    return f"launch failed with {code}, which waiting cannot fix. AWS said: {message}"


@dataclass(frozen=True)
class Pair:
    """One place to try: an instance type in one zone (through that zone's subnet) of one region ("" where the
    run has one region only, named elsewhere)."""

    instance_type: str
    subnet_id: str
    zone: str
    region: str = ""

    @property
    def key(self) -> str:
        # Subnet ids are unique across regions, so the key (and the ClientToken made from it) needs no region.
        return f"{self.instance_type}|{self.subnet_id}"

    def pool(self, market: str) -> str:
        """The capacity pool this pair draws from in ``market``: what the fleet record counts by."""
        return pool_key(self.region or region_of_zone(self.zone), self.zone, self.instance_type, market)


def region_of_zone(zone: str) -> str:
    """us-east-1a -> us-east-1 (zone names are the region's name and a letter; local zones aside)."""
    return zone[:-1] if zone and zone[-1].isalpha() else zone


def pool_key(region: str, zone: str, instance_type: str, market: str) -> str:
    return f"{region}|{zone}|{instance_type}|{market}"


@dataclass(frozen=True)
class FallbackPolicy:
    """When to give up on spot for a session and launch on-demand; all off by default."""

    after_capacity_failures: int | None = None
    after_interruptions: int | None = None
    after_wait_seconds: float | None = None

    def market(self, *, capacity_failures_in_a_row: int, interruptions: int, waited_seconds: float) -> str:
        if self.after_capacity_failures is not None and capacity_failures_in_a_row >= self.after_capacity_failures:
            return ON_DEMAND
        if self.after_interruptions is not None and interruptions >= self.after_interruptions:
            return ON_DEMAND
        if self.after_wait_seconds is not None and waited_seconds >= self.after_wait_seconds:
            return ON_DEMAND
        return SPOT

    def reason(self, *, capacity_failures_in_a_row: int, interruptions: int, waited_seconds: float) -> str:
        if self.after_capacity_failures is not None and capacity_failures_in_a_row >= self.after_capacity_failures:
            return f"{capacity_failures_in_a_row} spot capacity failures in a row"
        if self.after_interruptions is not None and interruptions >= self.after_interruptions:
            return f"{interruptions} interruptions"
        return f"{waited_seconds:.0f} s waiting for spot capacity"


# instance_requirements: EC2's own names (GetInstanceTypesFromInstanceRequirements' InstanceRequirements fields,
# plus its two top-level lists ArchitectureTypes and VirtualizationTypes).
REQUIREMENT_FIELDS = frozenset(
    {
        "VCpuCount",
        "MemoryMiB",
        "CpuManufacturers",
        "MemoryGiBPerVCpu",
        "ExcludedInstanceTypes",
        "InstanceGenerations",
        "SpotMaxPricePercentageOverLowestPrice",
        "OnDemandMaxPricePercentageOverLowestPrice",
        "BareMetal",
        "BurstablePerformance",
        "RequireHibernateSupport",
        "NetworkInterfaceCount",
        "LocalStorage",
        "LocalStorageTypes",
        "TotalLocalStorageGB",
        "BaselineEbsBandwidthMbps",
        "AcceleratorTypes",
        "AcceleratorCount",
        "AcceleratorManufacturers",
        "AcceleratorNames",
        "AcceleratorTotalMemoryMiB",
        "NetworkBandwidthGbps",
        "AllowedInstanceTypes",
        "MaxSpotPriceAsPercentageOfOptimalOnDemandPrice",
        "BaselinePerformanceFactors",
        "RequireEncryptionInTransit",
    }
)
REQUEST_LISTS = ("ArchitectureTypes", "VirtualizationTypes")
# The resolved types a session tries at most (each is tried in every subnet, each try one RunInstances).
MAX_RESOLVED_TYPES = 6


def requirements_request(requirements: dict) -> dict:
    """The GetInstanceTypesFromInstanceRequirements request for ``instance_requirements``: x86_64 and hvm unless
    said otherwise; VCpuCount and MemoryMiB (which EC2 requires) at least 0 unless given."""
    inner = {k: v for k, v in requirements.items() if k not in REQUEST_LISTS}
    inner.setdefault("VCpuCount", {"Min": 0})
    inner.setdefault("MemoryMiB", {"Min": 0})
    return {
        "ArchitectureTypes": list(requirements.get("ArchitectureTypes") or ["x86_64"]),
        "VirtualizationTypes": list(requirements.get("VirtualizationTypes") or ["hvm"]),
        "InstanceRequirements": inner,
    }


def requirement_problems(requirements: dict) -> list[str]:
    problems = []
    for key in requirements:
        if key not in REQUIREMENT_FIELDS and key not in REQUEST_LISTS:
            problems.append(
                f"instance_requirements has {key!r}, which is not one of EC2's InstanceRequirements fields "
                f"({', '.join(sorted({'VCpuCount', 'MemoryMiB', 'AcceleratorCount', 'AcceleratorManufacturers'}))}, "
                "... as in GetInstanceTypesFromInstanceRequirements) nor ArchitectureTypes/VirtualizationTypes"
            )
    for key in ("VCpuCount", "MemoryMiB", "AcceleratorCount", "AcceleratorTotalMemoryMiB"):
        value = requirements.get(key)
        if value is not None and (not isinstance(value, dict) or not set(value) <= {"Min", "Max"}):
            problems.append(f"instance_requirements[{key!r}] must be like {{'Min': 1, 'Max': 4}}, got {value!r}")
    for key in (*REQUEST_LISTS, "AcceleratorManufacturers", "AcceleratorTypes", "AcceleratorNames"):
        value = requirements.get(key)
        if value is not None and (isinstance(value, str) or not isinstance(value, (list, tuple))):
            problems.append(f"instance_requirements[{key!r}] must be a list, got {value!r}")
    return problems


def pick_resolved_types(
    resolved: Sequence[str], listed: Sequence[str], prices: dict[str, float], cap: int = MAX_RESOLVED_TYPES
) -> list[str]:
    """The types a session tries: the listed ones in the author's order, then up to ``cap`` of those EC2
    resolved from the requirements, cheapest known on-demand price first (then EC2's order)."""
    extra = [t for t in resolved if t not in listed]
    ranked = sorted(extra, key=lambda t: (prices.get(t, float("inf")), extra.index(t)))
    return [*listed, *ranked[:cap]]


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to launch one session's instance. Plain JSON via ``as_dict``/``from_dict``."""

    image_id: str
    instance_types: tuple[str, ...]
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...] = ()
    iam_instance_profile: str | None = None
    root_volume_gb: int | None = None
    key_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    max_spot_price: str | None = None
    expiry_hours: float = 72.0
    # The AMI's root device (DescribeImages RootDeviceName), resolved before launching when
    # root_volume_gb is set: /dev/xvda on Amazon Linux, /dev/sda1 on Ubuntu and most Deep Learning AMIs.
    root_device_name: str | None = None
    # IMDSv2's hop limit (HttpPutResponseHopLimit): 2 lets a container on the instance (one hop more) reach the
    # metadata service, as AWS recommends for containers; 1 keeps it to the instance's own processes.
    metadata_hop_limit: int = 2
    # The SHA-256 of the agent zipapp and of spec.json as the Airflow side wrote them: the user data carries them
    # and the bootstrap runs nothing else (None: not known, as in a trigger serialized before they existed).
    agent_sha256: str | None = None
    spec_sha256: str | None = None
    # Attribute-based selection: EC2's InstanceRequirements, resolved per region before the first round.
    instance_requirements: dict | None = None
    # Several regions: each {"region", "subnet_ids", "image_id", "security_group_ids", "iam_instance_profile"};
    # empty for the one-region form (the fields above, in the connection's region). With placements, the fields
    # above are the first placement's.
    placements: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        problems = validate_spec(self)
        if problems:
            raise ValueError("; ".join(problems))

    def as_dict(self) -> dict:
        doc = asdict(self)
        doc["instance_types"] = list(self.instance_types)
        doc["subnet_ids"] = list(self.subnet_ids)
        doc["security_group_ids"] = list(self.security_group_ids)
        doc["placements"] = [dict(p) for p in self.placements]
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> LaunchSpec:
        doc = dict(doc)
        for key in ("instance_types", "subnet_ids", "security_group_ids"):
            doc[key] = tuple(doc.get(key) or ())
        doc["placements"] = tuple(dict(p) for p in doc.get("placements") or ())
        return cls(**doc)

    def by_region(self, default_region: str | None) -> dict[str, LaunchSpec]:
        """region -> the spec of that placement (its image, subnets, groups and profile), in the author's order;
        the one-region form is the connection's region (``default_region``, "" when the connection decides)."""
        if not self.placements:
            return {default_region or "": self}
        return {str(p["region"]): self.in_placement(p) for p in self.placements}

    def in_placement(self, placement: dict) -> LaunchSpec:
        return replace(
            self,
            image_id=str(placement["image_id"]),
            subnet_ids=tuple(placement["subnet_ids"]),
            security_group_ids=tuple(placement.get("security_group_ids") or ()),
            iam_instance_profile=placement.get("iam_instance_profile"),
            root_device_name=placement.get("root_device_name"),
            placements=(),
        )


def launch_spec(
    *,
    image_id: str | None,
    subnet_ids: tuple[str, ...],
    security_group_ids: tuple[str, ...],
    iam_instance_profile: str | None,
    placements: Sequence[dict] | None,
    **rest: Any,
) -> LaunchSpec:
    """The spec of the operator's arguments: the one-region form as it always was, or ``placements`` (the first
    placement's image and subnets also filling the one-region fields). Raises ValueError saying what to fix."""
    if not placements:
        return LaunchSpec(
            image_id=image_id or "",
            subnet_ids=subnet_ids,
            security_group_ids=security_group_ids,
            iam_instance_profile=iam_instance_profile,
            **rest,
        )
    if image_id or subnet_ids or security_group_ids or iam_instance_profile:
        raise ValueError(
            "give either placements (each with its region, subnet_ids, image_id...) or image_id/subnet_ids/"
            "security_group_ids/iam_instance_profile for one region, not both"
        )
    if isinstance(placements, dict) or not isinstance(placements, (list, tuple)):
        raise ValueError(f"placements must be a list of dicts, one per region, got {placements!r}")
    problems = placement_problems(placements)
    if problems:
        raise ValueError("; ".join(problems))
    normalized = tuple(
        {
            "region": p["region"],
            "subnet_ids": list(p["subnet_ids"]),
            "image_id": p["image_id"],
            "security_group_ids": list(p.get("security_group_ids") or ()),
            "iam_instance_profile": p.get("iam_instance_profile"),
        }
        for p in placements
    )
    first = normalized[0]
    return LaunchSpec(
        image_id=str(first["image_id"]),
        subnet_ids=tuple(first["subnet_ids"]),
        security_group_ids=tuple(first["security_group_ids"]),
        iam_instance_profile=first["iam_instance_profile"],
        placements=normalized,
        **rest,
    )


PLACEMENT_KEYS = frozenset({"region", "subnet_ids", "image_id", "security_group_ids", "iam_instance_profile"})


def placement_problems(placements: Sequence[dict]) -> list[str]:
    """What is wrong with ``placements`` (the operator's several-region form), each naming what to fix."""
    problems: list[str] = []
    seen: set[str] = set()
    for n, placement in enumerate(placements):
        where = f"placements[{n}]"
        if not isinstance(placement, dict):
            problems.append(f"{where} must be a dict with region, subnet_ids and image_id, got {placement!r}")
            continue
        unknown = set(placement) - PLACEMENT_KEYS - {"root_device_name"}
        if unknown:
            problems.append(
                f"{where} has unknown keys {sorted(unknown)}; a placement takes {', '.join(sorted(PLACEMENT_KEYS))}"
            )
        region = placement.get("region")
        if not isinstance(region, str) or not region:
            problems.append(f"{where} must name its region, like 'us-west-2'")
        elif region in seen:
            problems.append(f"{where}: region {region!r} is given twice; put all its subnets in one placement")
        else:
            seen.add(region)
        subnets = placement.get("subnet_ids")
        if not subnets or isinstance(subnets, str) or not all(isinstance(s, str) and s for s in subnets):
            problems.append(f"{where} must list its subnet_ids (one per zone to try), got {subnets!r}")
        image_id = placement.get("image_id")
        if not isinstance(image_id, str) or not (image_id.startswith("ami-") or ssm_parameter(image_id)):
            problems.append(
                f"{where} needs its own image_id (AMI ids differ per region): 'ami-...' or "
                f"'{SSM_IMAGE_PREFIX}/aws/service/...', got {image_id!r}"
            )
        groups = placement.get("security_group_ids") or []
        if isinstance(groups, str):
            problems.append(f"{where}: security_group_ids must be a list, got {groups!r}")
    return problems


def validate_spec(spec: LaunchSpec) -> list[str]:
    problems = []
    if not spec.image_id or not (spec.image_id.startswith("ami-") or ssm_parameter(spec.image_id)):
        problems.append(
            "image_id must be an AMI id like 'ami-0123...' or an SSM parameter like "
            f"'{SSM_IMAGE_PREFIX}/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64', "
            f"got {spec.image_id!r}"
        )
    if not spec.instance_types and not spec.instance_requirements:
        problems.append("instance_types must name at least one instance type (or give instance_requirements)")
    if spec.instance_requirements is not None:
        if not isinstance(spec.instance_requirements, dict) or not spec.instance_requirements:
            problems.append(f"instance_requirements must be a non-empty dict, got {spec.instance_requirements!r}")
        else:
            problems.extend(requirement_problems(spec.instance_requirements))
    if not spec.subnet_ids:
        problems.append("subnet_ids must name at least one subnet (one per zone to try)")
    problems.extend(placement_problems(spec.placements))
    if spec.root_volume_gb is not None and spec.root_volume_gb < 1:
        problems.append(f"root_volume_gb must be positive, got {spec.root_volume_gb}")
    if not 1 <= spec.metadata_hop_limit <= 64:
        problems.append(f"metadata_hop_limit must be 1 to 64 (EC2's range), got {spec.metadata_hop_limit}")
    for key in spec.tags:
        if key.startswith(RESERVED_PREFIXES):
            problems.append(f"tag {key!r} uses a reserved prefix ({' or '.join(RESERVED_PREFIXES)})")
    return problems


def ssm_parameter(image_id: str) -> str | None:
    """The SSM parameter (with any ``:version`` or ``:label``) an ``image_id`` of ``resolve:ssm:NAME`` names,
    as RunInstances reads it; None for an AMI id."""
    if not image_id.startswith(SSM_IMAGE_PREFIX):
        return None
    return image_id[len(SSM_IMAGE_PREFIX) :] or None


def make_pairs(instance_types: Sequence[str], subnet_zones: dict[str, str], region: str = "") -> list[Pair]:
    """Every (type, subnet) pair, in the user's order of types, then of subnets."""
    return [Pair(t, s, z, region) for t in instance_types for s, z in subnet_zones.items()]


def client_token(run_uri: str, session: int, pair: Pair, market: str) -> str:
    """An idempotency token (<= 64 ASCII chars) for one launch attempt of one session on one pair.

    The same attempt retried (lost response, restart) reuses it and EC2 returns the same instance;
    each pair has its own token because EC2 rejects a reused token with other parameters.
    """
    digest = hashlib.sha256(f"{run_uri}\n{session}\n{pair.key}\n{market}".encode()).hexdigest()
    return f"gr-{digest[:48]}"


def session_tokens(run_uri: str, session: int, pairs: Sequence[Pair]) -> list[str]:
    """Every ClientToken a launch of the session could have carried, on any pair and either market: what
    DescribeInstances' ``client-token`` filter finds the session's instance by before EC2 shows its tags."""
    return [client_token(run_uri, session, pair, market) for market in (SPOT, ON_DEMAND) for pair in pairs]


def backoff_delay(attempt: int, *, base: float = 15.0, cap: float = 300.0, rng: random.Random | None = None) -> float:
    """Delay before wait number ``attempt`` (1-based): exponential, capped, with "equal jitter"
    (half fixed, half random) so waits never collapse to zero yet many waiters spread out."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def run_instances_params(
    spec: LaunchSpec,
    pair: Pair,
    *,
    market: str,
    token: str,
    tags: dict[str, str],
    user_data: str,
) -> dict:
    """The RunInstances request for one pair: IMDSv2 required, shutdown terminates, tagged."""
    params: dict = {
        "ImageId": spec.image_id,
        "InstanceType": pair.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": pair.subnet_id,
        "ClientToken": token,
        "UserData": user_data,
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": spec.metadata_hop_limit,
        },
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}
            for kind in ("instance", "volume")
        ],
    }
    if spec.security_group_ids:
        params["SecurityGroupIds"] = list(spec.security_group_ids)
    if spec.iam_instance_profile:
        key = "Arn" if spec.iam_instance_profile.startswith("arn:") else "Name"
        params["IamInstanceProfile"] = {key: spec.iam_instance_profile}
    if spec.key_name:
        params["KeyName"] = spec.key_name
    if spec.root_volume_gb:
        params["BlockDeviceMappings"] = [
            {
                "DeviceName": spec.root_device_name or "/dev/xvda",
                "Ebs": {"VolumeSize": spec.root_volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True},
            }
        ]
    if market == SPOT:
        options: dict = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
        if spec.max_spot_price:
            options["MaxPrice"] = spec.max_spot_price
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
    return params
