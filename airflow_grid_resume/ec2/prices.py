"""On-demand list prices, for the cost estimate's "what would on-demand have cost" side.

EC2's price list API needs its own IAM permission and answers slowly, and the spot price we pay is
read at launch anyway (DescribeSpotPriceHistory). The on-demand side only has to be a fair reference,
so a small table of Linux us-east-1 list prices (USD per hour) for the usual training types is kept
here; ``GridRunOperator(on_demand_prices={...})`` overrides or extends it for other regions and types.
"""

from __future__ import annotations

from collections.abc import Mapping

# Linux, us-east-1, USD per instance-hour (AWS list prices; approximate, check your region).
ON_DEMAND_USD_PER_HOUR: Mapping[str, float] = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672,
    "g5.48xlarge": 16.288,
    "g6.xlarge": 0.805,
    "g6.2xlarge": 0.978,
    "g6.12xlarge": 4.602,
    "p3.2xlarge": 3.06,
    "p3.8xlarge": 12.24,
    "p3.16xlarge": 24.48,
    "p4d.24xlarge": 32.773,
    "p5.48xlarge": 98.32,
    "trn1.2xlarge": 1.344,
    "inf2.xlarge": 0.758,
    "m5.large": 0.096,
    "m5.xlarge": 0.192,
    "c5.xlarge": 0.17,
    "c5.2xlarge": 0.34,
    "t3.micro": 0.0104,
    "t3.medium": 0.0416,
}


def on_demand_price(instance_type: str | None, overrides: Mapping[str, float] | None = None) -> float | None:
    """USD per hour on demand, or None when the type is unknown (the estimate then says so)."""
    if not instance_type:
        return None
    if overrides and instance_type in overrides:
        return float(overrides[instance_type])
    return ON_DEMAND_USD_PER_HOUR.get(instance_type)


# Data transfer between two AWS regions, USD per GB (AWS bills a GB as 2**30 bytes), at the list prices EC2 and S3
# charge the sending region: $0.02 between US regions, $0.01 between us-east-1 and us-east-2, nothing within one
# region. Other pairs are left unknown rather than guessed (their prices vary by region, up to several times more).
GB = 1 << 30
US_REGION_USD_PER_GB = 0.02
NEIGHBOUR_USD_PER_GB: Mapping[frozenset[str], float] = {frozenset({"us-east-1", "us-east-2"}): 0.01}
_US_COMMERCIAL = ("us-east-", "us-west-")  # not us-gov-*: another partition, which no transfer reaches


def transfer_usd_per_gb(source: str | None, destination: str | None) -> float | None:
    """USD per GB sent from ``source`` to ``destination`` region: 0 within a region, None when unknown."""
    if not source or not destination:
        return None
    if source == destination:
        return 0.0
    neighbours = NEIGHBOUR_USD_PER_GB.get(frozenset({source, destination}))
    if neighbours is not None:
        return neighbours
    if source.startswith(_US_COMMERCIAL) and destination.startswith(_US_COMMERCIAL):
        return US_REGION_USD_PER_GB
    return None
