"""Accounts on demand: ID token verification, the login hook, the deprovisioning listener that turns SCIM
writes into outbox events, and the reconcile pass that repairs drift."""
