"""Who may hold what: applications and their entitlement rules, access policies, the SCIM user as an
application sees it (identity), and the account ledger."""
