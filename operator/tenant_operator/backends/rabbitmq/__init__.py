"""RabbitMQ: `client` speaks to the management API; `component` reconciles
and purges a tenant's vhost, user and topology."""
