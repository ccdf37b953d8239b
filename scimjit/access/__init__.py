"""Time-bound access: grants, access requests and their approvals, and the sweeper that ends what expired."""
