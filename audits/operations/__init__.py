"""Operations: health and readiness, metrics, and outgoing webhooks for release pipelines."""
