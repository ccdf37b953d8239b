"""Where the JIT engine used to live. The engine is now split by concern (`scimjit.entitlement`,
`scimjit.delivery`, `scimjit.provisioning`, `scimjit.access`); only the import paths that connector plugins
and webhook receivers were documented to use stay here, as aliases: `scimjit.jit.connectors` (and `.base`,
`.webhook`) and `scimjit.jit.settings.ConfigError`. New code imports from the new places."""
