"""Attention blocks: one small file per family; `registry.py` names them. Make one with `nets.attention.build_attention`."""
