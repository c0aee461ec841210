"""Where the UI lives: the FastAPI app's prefix and the plugin's views' routes, for the plugin that registers
them and the pages that link to them."""

from __future__ import annotations

from urllib.parse import urlparse

URL_PREFIX = "/grid-resume"
RUN_VIEW_ROUTE = "grid-resume-run"
FLEET_ROUTE = "grid-resume-fleet"


def base_path() -> str:
    """The path part of ``[api] base_url`` ("" at the root): external views need absolute paths."""
    from airflow.configuration import conf

    base_url = conf.get("api", "base_url", fallback="/") or "/"
    path = urlparse(base_url).path if base_url.startswith(("http://", "https://")) else base_url
    return path.rstrip("/")
