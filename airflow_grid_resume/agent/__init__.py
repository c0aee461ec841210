"""The on-instance supervisor: restore, run, watch for interruption, sync, record the outcome.

Everything under this package uses only the standard library and boto3 so that it can ship as a
single zipapp (``make agent``) onto any AMI that has python3 and boto3.
"""
