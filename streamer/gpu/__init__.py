"""The GPU path: frames that stay on the device from the decoder to the detections.

* :mod:`streamer.gpu.nv12`: NV12 planes (what NVDEC writes) to the letterboxed model input,
  colour conversion, resize and padding in one gather, straight into a batch slot;
* :mod:`streamer.gpu.nms`: YOLOv8/11 decode and class-aware NMS for a whole batch in torch,
  so only the kept rows (at most ``max_det`` × 6 numbers per image) reach the host;
* :mod:`streamer.gpu.graphs`: the model replayed as CUDA graphs, one per batch bucket and
  input shape.

Every function here takes tensors on any device: the tests run them on the CPU against the
OpenCV and Numba paths they must agree with. Importing this package does not import torch.
"""
