"""Evaluation: benchmark suites, runs, leaderboards and the arena."""
