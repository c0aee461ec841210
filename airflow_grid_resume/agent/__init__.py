"""The on-instance supervisor: restore, run, watch for interruption, sync, record the outcome.

Everything under this package uses only the standard library and boto3, and Python 3.9 syntax, so that it
ships as a single zipapp (``make agent``) carrying boto3 itself, onto any image that has a python3 >= 3.9.
"""
