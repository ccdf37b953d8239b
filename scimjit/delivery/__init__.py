"""Getting events downstream: the transactional outbox, the deliverer and worker that drain it, and the
connectors that speak to applications."""
