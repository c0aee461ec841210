"""The run ledger in S3: the contract the agent and the Airflow side share.

Its layout (which key holds what), its records (typed, versioned JSON), the store that reads and writes them with
conditional writes, manifests and packs, the live-output message format, gc, and the S3 client settings. Standard
library and boto3 only, like the agent that ships it in its zipapp; see docs/ledger.md.
"""
