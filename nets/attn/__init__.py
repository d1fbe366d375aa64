"""Attention blocks: one small file per family. Use `nets.attention.build_attention` to make one by name."""
