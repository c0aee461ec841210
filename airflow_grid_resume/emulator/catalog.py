"""What EC2 knows of instance types, for the local spot cloud: which (type, zone) pairs each region offers
(moto's offerings data, with pairs withdrawn or added by the control route ``/_emulator/offerings``), and which
types meet a set of instance requirements (``GetInstanceTypesFromInstanceRequirements``, which moto lacks),
matched against moto's instance type data as EC2 documents the fields.

Pure apart from reading moto's packaged data once; the WSGI layer (``cloud.py``) renders the answers.
"""

from __future__ import annotations

import fnmatch
import functools
import gzip
import json
import threading
from collections.abc import Mapping
from importlib import resources
from xml.sax.saxutils import escape

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"


@functools.lru_cache(maxsize=1)
def instance_types() -> dict[str, dict]:
    """moto's instance type data: name -> DescribeInstanceTypes' InstanceTypeInfo."""
    data = resources.files("moto.ec2").joinpath("resources/instance_types.json.gz").read_bytes()
    return dict(json.loads(gzip.decompress(data)))


@functools.lru_cache(maxsize=64)
def zone_offerings(region: str) -> frozenset[tuple[str, str]]:
    """(type, zone) pairs moto says ``region`` offers."""
    from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS  # loads every region's data once

    items = INSTANCE_TYPE_OFFERINGS.get("availability-zone", {}).get(region, [])
    return frozenset((str(o["InstanceType"]), str(o["Location"])) for o in items)


class Offerings:
    """The pairs each region offers: moto's data, changed by the control route (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed: dict[tuple[str, str], bool] = {}  # (type, zone) -> offered

    def set_offered(self, instance_type: str, zone: str, offered: bool) -> list[dict]:
        with self.lock:
            self.changed[(instance_type, zone)] = offered
        return self.state()

    def reset(self) -> None:
        with self.lock:
            self.changed.clear()

    def state(self) -> list[dict]:
        with self.lock:
            return [{"instance_type": t, "zone": z, "offered": o} for (t, z), o in sorted(self.changed.items())]

    def offered(self, region: str, instance_type: str, zone: str) -> bool:
        with self.lock:
            changed = self.changed.get((instance_type, zone))
        if changed is not None:
            return changed
        return (instance_type, zone) in zone_offerings(region)

    def pairs(self, region: str) -> set[tuple[str, str]]:
        found = set(zone_offerings(region))
        with self.lock:
            for (instance_type, zone), offered in self.changed.items():
                if not zone.startswith(region):
                    continue
                if offered:
                    found.add((instance_type, zone))
                else:
                    found.discard((instance_type, zone))
        return found

    def zones_offering(self, region: str, instance_type: str) -> list[str]:
        return sorted(z for t, z in self.pairs(region) if t == instance_type)


def query_lists(params: Mapping[str, str], prefix: str) -> list[str]:
    """``Prefix.1``, ``Prefix.2``... of an EC2 query, in order."""
    found = []
    for key, value in params.items():
        head, _, index = key.rpartition(".")
        if head == prefix and index.isdigit():
            found.append((int(index), value))
    return [v for _, v in sorted(found)]


def query_filters(params: Mapping[str, str]) -> dict[str, list[str]]:
    names = {k.split(".")[1]: v for k, v in params.items() if k.startswith("Filter.") and k.endswith(".Name")}
    return {name: query_lists(params, f"Filter.{n}.Value") for n, name in names.items()}


def describe_offerings_xml(pairs: set[tuple[str, str]], params: Mapping[str, str], request_id: str) -> bytes:
    """DescribeInstanceTypeOfferings with ``LocationType=availability-zone``, filtered as EC2 filters it."""
    filters = query_filters(params)
    types, locations = filters.get("instance-type"), filters.get("location")
    items = "".join(
        f"<item><instanceType>{escape(t)}</instanceType><locationType>availability-zone</locationType>"
        f"<location>{escape(z)}</location></item>"
        for t, z in sorted(pairs)
        if (types is None or t in types) and (locations is None or z in locations)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><DescribeInstanceTypeOfferingsResponse xmlns="{EC2_NS}">'
        f"<requestId>{request_id}</requestId><instanceTypeOfferingSet>{items}</instanceTypeOfferingSet>"
        "</DescribeInstanceTypeOfferingsResponse>"
    ).encode()


def _range(params: Mapping[str, str], name: str) -> tuple[float | None, float | None]:
    low, high = params.get(f"InstanceRequirements.{name}.Min"), params.get(f"InstanceRequirements.{name}.Max")
    return (float(low) if low else None, float(high) if high else None)


def _within(value: float, bounds: tuple[float | None, float | None]) -> bool:
    low, high = bounds
    return (low is None or value >= low) and (high is None or value <= high)


class RequirementsError(ValueError):
    """An invalid request: EC2 answers 400 InvalidParameterValue / MissingParameter with these words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def matching_types(params: Mapping[str, str], offered_types: set[str]) -> list[str]:
    """The instance types (among those the region offers) that meet the request's requirements, as
    GetInstanceTypesFromInstanceRequirements answers: VCpuCount and MemoryMiB are required; accelerator count,
    manufacturers, names, types and total memory, architectures, virtualization types, CPU manufacturers,
    allowed and excluded types, bare metal and burstable performance are honoured."""
    if "InstanceRequirements.VCpuCount.Min" not in params:
        raise RequirementsError("MissingParameter", "The request must contain the parameter VCpuCount")
    if "InstanceRequirements.MemoryMiB.Min" not in params:
        raise RequirementsError("MissingParameter", "The request must contain the parameter MemoryMiB")
    architectures = query_lists(params, "ArchitectureType")
    virtualizations = query_lists(params, "VirtualizationType")
    if not architectures or not virtualizations:
        raise RequirementsError(
            "MissingParameter", "The request must contain the parameters ArchitectureTypes and VirtualizationTypes"
        )
    vcpus, memory = _range(params, "VCpuCount"), _range(params, "MemoryMiB")
    accelerators = _range(params, "AcceleratorCount")
    accel_memory = _range(params, "AcceleratorTotalMemoryMiB")
    manufacturers = {m.lower() for m in query_lists(params, "InstanceRequirements.AcceleratorManufacturer")}
    names = {n.lower() for n in query_lists(params, "InstanceRequirements.AcceleratorName")}
    accel_types = set(query_lists(params, "InstanceRequirements.AcceleratorType"))
    cpu_makers = {m.lower() for m in query_lists(params, "InstanceRequirements.CpuManufacturer")}
    allowed = query_lists(params, "InstanceRequirements.AllowedInstanceType")
    excluded = query_lists(params, "InstanceRequirements.ExcludedInstanceType")
    bare_metal = params.get("InstanceRequirements.BareMetal", "excluded")
    burstable = params.get("InstanceRequirements.BurstablePerformance", "excluded")
    found = []
    for name, info in sorted(instance_types().items()):
        if name not in offered_types:
            continue
        if allowed and not any(_glob(name, pattern) for pattern in allowed):
            continue
        if any(_glob(name, pattern) for pattern in excluded):
            continue
        if not _matches(info, architectures, virtualizations, vcpus, memory, bare_metal, burstable, cpu_makers):
            continue
        if not _accelerators_match(info, accelerators, accel_memory, manufacturers, names, accel_types):
            continue
        found.append(name)
    return found


def _glob(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


def _matches(
    info: dict,
    architectures: list[str],
    virtualizations: list[str],
    vcpus: tuple[float | None, float | None],
    memory: tuple[float | None, float | None],
    bare_metal: str,
    burstable: str,
    cpu_makers: set[str],
) -> bool:
    if not set(info.get("ProcessorInfo", {}).get("SupportedArchitectures", [])) & set(architectures):
        return False
    if not set(info.get("SupportedVirtualizationTypes", [])) & set(virtualizations):
        return False
    if not _within(float(info.get("VCpuInfo", {}).get("DefaultVCpus", 0)), vcpus):
        return False
    if not _within(float(info.get("MemoryInfo", {}).get("SizeInMiB", 0)), memory):
        return False
    if not _allowed(bool(info.get("BareMetal")), bare_metal):
        return False
    if not _allowed(bool(info.get("BurstablePerformanceSupported")), burstable):
        return False
    maker = str(info.get("ProcessorInfo", {}).get("Manufacturer", "")).lower()
    return not cpu_makers or any(m in maker for m in cpu_makers)


def _allowed(has: bool, setting: str) -> bool:
    return setting == "included" or (setting == "required" and has) or (setting == "excluded" and not has)


def _accelerators_match(
    info: dict,
    count: tuple[float | None, float | None],
    total_memory: tuple[float | None, float | None],
    manufacturers: set[str],
    names: set[str],
    kinds: set[str],
) -> bool:
    devices: list[tuple[str, dict]] = [("gpu", g) for g in info.get("GpuInfo", {}).get("Gpus", [])]
    devices += [("fpga", f) for f in info.get("FpgaInfo", {}).get("Fpgas", [])]
    devices += [("inference", a) for a in info.get("InferenceAcceleratorInfo", {}).get("Accelerators", [])]
    devices += [("inference", a) for a in info.get("NeuronInfo", {}).get("NeuronDevices", [])]

    def wanted(kind: str, device: dict) -> bool:
        return (
            (not kinds or kind in kinds)
            and (not manufacturers or str(device.get("Manufacturer", "")).lower() in manufacturers)
            and (not names or str(device.get("Name", "")).lower() in names)
        )

    chosen = [d for kind, d in devices if wanted(kind, d)]
    n = sum(int(d.get("Count", 1)) for d in chosen)
    if count == (None, None) and total_memory == (None, None) and not (manufacturers or names or kinds):
        return True  # no accelerator asked about: EC2 includes types with or without them
    if not _within(float(n), count if count != (None, None) else (1, None)):
        return False
    memory = sum(int(d.get("Count", 1)) * int(d.get("MemoryInfo", {}).get("SizeInMiB", 0)) for d in chosen)
    return _within(float(memory), total_memory)


def requirements_xml(types: list[str], request_id: str) -> bytes:
    items = "".join(f"<item><instanceType>{escape(t)}</instanceType></item>" for t in types)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<GetInstanceTypesFromInstanceRequirementsResponse xmlns="{EC2_NS}"><requestId>{request_id}</requestId>'
        f"<instanceTypeSet>{items}</instanceTypeSet></GetInstanceTypesFromInstanceRequirementsResponse>"
    ).encode()


def unsupported_message(instance_type: str, zone: str, zones: list[str]) -> str:
    """EC2's words for a pair it does not offer (code Unsupported, HTTP 400)."""
    others = ", ".join(zones)
    tail = f"Please retry your request by not specifying an Availability Zone or choosing {others}." if zones else ""
    return (
        f"Your requested instance type ({instance_type}) is not supported in your requested Availability Zone "
        f"({zone}). {tail}"
    ).strip()


__all__ = [
    "Offerings",
    "RequirementsError",
    "describe_offerings_xml",
    "instance_types",
    "matching_types",
    "query_lists",
    "requirements_xml",
    "unsupported_message",
    "zone_offerings",
]
