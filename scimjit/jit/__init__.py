"""Where the JIT engine used to live. The engine is now split by concern (`scimjit.entitlement`,
`scimjit.delivery`, `scimjit.provisioning`, `scimjit.access`); only the import path that connector plugins
were documented to use stays here, as an alias: `scimjit.jit.connectors.base`."""
