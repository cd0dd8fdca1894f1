"""FaceGate: face-recognition door access appliance."""

__version__ = "0.1.0"
