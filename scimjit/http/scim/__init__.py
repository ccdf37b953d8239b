"""The SCIM 2.0 API under /scim/v2: one route module per resource (Users and Groups, discovery, Bulk, search)."""
