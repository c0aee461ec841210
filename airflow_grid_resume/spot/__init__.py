"""Launching and placement: which (type, zone) pair and market to try next (``planner``), and the launcher that
carries a session's attempts out through the EC2 hook, for the worker's first round and the capacity trigger."""
