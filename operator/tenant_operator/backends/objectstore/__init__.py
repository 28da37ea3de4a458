"""Object storage (MinIO, or S3 with IAM): `client` speaks to the store;
`component` reconciles and purges a tenant's buckets and storage users."""
