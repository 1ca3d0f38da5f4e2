"""Compute pool: nodes, agent, scheduler, deployments, replicas, engines, gateway routing."""
