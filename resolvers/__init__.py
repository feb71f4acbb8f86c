"""Thin resolver functions and dataloader batch functions over ``app`` services."""
