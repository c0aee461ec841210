"""What this provider asks of EC2 and what its answers mean, pure: the launch spec and its RunInstances request,
idempotency tokens, error classes and backoff, the tags, the user data, on-demand prices. The hooks send these
requests; ``spot/`` decides which to send."""
