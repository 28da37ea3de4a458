"""MySQL: `client` speaks to the server (admin account, bookkeeping table);
`component` reconciles and purges a tenant's databases and users."""
