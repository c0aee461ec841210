"""The triggers' async AWS plumbing: shared aiobotocore clients, the SigV4 signer and the signed fast path for
S3 objects and the live-output queue, batched DescribeInstances, the process-wide RunInstances budget, and the
async ledger reader."""
