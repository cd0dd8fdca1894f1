"""FaceGate's host tools: what runs on a developer's or CI's machine, never on a board.

Model preparation (PyTorch to ONNX) and the networks it needs, RKNN conversion and the
quantisation check, Rockchip's toolkit simulator as a backend, the board bundle, the accuracy
evaluations and the relay emulator. The board's bundle carries only `appliance`; nothing in
`appliance` imports this package except through the two named doors below, each of which
says what to install when it is missing:
- `appliance.cli` adds the commands of `facegate_host.cli` when this package is installed;
- `appliance.inference` names the "rknn" (toolkit simulator) backend here, and
  `appliance.models.install` the preparers.
"""
