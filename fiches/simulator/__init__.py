"""The CRM gateway simulator (see ../shared/crm-gateway.md): deterministic synthetic data."""
