"""Headless fine-tuning of AnyCrowd LoRA and gating weights (`python -m training.run`).

Built on `anycrowd_core` by the [train] work item.
"""
