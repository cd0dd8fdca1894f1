"""ONNX to RKNN conversion and the quantisation check, run on a host with Rockchip's toolkit.

These modules import the toolkit lazily and run in their own virtual environment
(`make rknn-env`), because rknn-toolkit2 pins numpy below 2.
"""
