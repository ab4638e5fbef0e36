"""Decoding model outputs: YOLO layouts, NMS, classification top-k (Numba kernels)."""
