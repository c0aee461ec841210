"""The run watch's pure parts: is the instance alive (liveness), when to read the next chunk (cadence), the
output from two sources in order (merge), and when a trigger's event may go (settle)."""
