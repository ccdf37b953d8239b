"""The SCIM protocol, pure: schemas, filters, PATCH, projection and errors. No SQL and no HTTP here."""
