"""Operations of the compute pool: nodes, deployments and placement."""
