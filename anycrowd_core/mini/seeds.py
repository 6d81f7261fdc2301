"""Seed ranges of the miniature's procedural scenes. Training and evaluation draw scene
seeds from disjoint ranges, so no evaluation scene is ever seen in training."""

TRAIN_SEED_BASE = 0
TRAIN_SEED_LIMIT = 5_000_000  # training scene seeds lie in [TRAIN_SEED_BASE, TRAIN_SEED_LIMIT)
EVAL_SEED_BASE = 9_000_000  # evaluation scene seeds start here
