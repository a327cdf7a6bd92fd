"""Replay of recorded outcomes, a synthetic world, in-process simulation and off-policy evaluation.

Pure Python on top of the policy core (numpy only, matplotlib lazily for plots); nothing here talks to Kafka.
"""
