"""V4L2 capture with ioctl and mmap: the boards' cameras as they are, with what the bundle has.

On the RV1126 and RV1126B a MIPI sensor reaches user space through the ISP (rkisp) as
multi-planar NV12 on one of several /dev/videoN nodes; which one is the ISP's main output is
found by its V4L2 name (/sys/class/video4linux/videoN/name), never by number. A USB webcam is
single-planar YUYV or MJPEG. opencv-python-headless has no GStreamer, so this reader talks to
the kernel itself: the structs are those of linux/videodev2.h (a test compares their sizes and
offsets with the C header), with native pointer and long sizes, so one file serves armhf and
arm64.

Source syntax: `v4l2:NAME` (the node whose V4L2 name starts with NAME, e.g.
`v4l2:rkisp_mainpath`) or `v4l2:/dev/videoN`.
"""

import ctypes
import fcntl
import mmap
import os
import select
import time
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from appliance.errors import CameraError

SYSFS = Path("/sys/class/video4linux")
CAP_VIDEO_CAPTURE = 0x00000001
CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
CAP_STREAMING = 0x04000000
CAP_DEVICE_CAPS = 0x80000000
BUF_TYPE_CAPTURE, BUF_TYPE_CAPTURE_MPLANE = 1, 9
MEMORY_MMAP = 1
FIELD_NONE = 1
VIDEO_MAX_PLANES = 8


def fourcc(text: str) -> int:
    return sum(ord(c) << (8 * i) for i, c in enumerate(text))


NV12, NV12M, YUYV, MJPEG = fourcc("NV12"), fourcc("NM12"), fourcc("YUYV"), fourcc("MJPG")
NAMES = {NV12: "NV12", NV12M: "NV12M", YUYV: "YUYV", MJPEG: "MJPEG"}


class Capability(ctypes.Structure):
    _fields_ = [("driver", ctypes.c_char * 16), ("card", ctypes.c_char * 32), ("bus_info", ctypes.c_char * 32),
                ("version", ctypes.c_uint32), ("capabilities", ctypes.c_uint32), ("device_caps", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32 * 3)]


class PixFormat(ctypes.Structure):
    _fields_ = [("width", ctypes.c_uint32), ("height", ctypes.c_uint32), ("pixelformat", ctypes.c_uint32),
                ("field", ctypes.c_uint32), ("bytesperline", ctypes.c_uint32), ("sizeimage", ctypes.c_uint32),
                ("colorspace", ctypes.c_uint32), ("priv", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("ycbcr_enc", ctypes.c_uint32), ("quantization", ctypes.c_uint32), ("xfer_func", ctypes.c_uint32)]


class PlanePixFormat(ctypes.Structure):
    _pack_ = 1  # __attribute__ ((packed)) in the header
    _fields_ = [("sizeimage", ctypes.c_uint32), ("bytesperline", ctypes.c_uint32), ("reserved", ctypes.c_uint16 * 6)]


class PixFormatMplane(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("width", ctypes.c_uint32), ("height", ctypes.c_uint32), ("pixelformat", ctypes.c_uint32),
                ("field", ctypes.c_uint32), ("colorspace", ctypes.c_uint32),
                ("plane_fmt", PlanePixFormat * VIDEO_MAX_PLANES), ("num_planes", ctypes.c_uint8),
                ("flags", ctypes.c_uint8), ("ycbcr_enc", ctypes.c_uint8), ("quantization", ctypes.c_uint8),
                ("xfer_func", ctypes.c_uint8), ("reserved", ctypes.c_uint8 * 7)]


class _FormatUnion(ctypes.Union):
    # raw_data[200]; v4l2_window holds pointers, which give the union their alignment
    _fields_ = [("pix", PixFormat), ("pix_mp", PixFormatMplane), ("raw_data", ctypes.c_uint8 * 200),
                ("_align", ctypes.c_void_p)]


class Format(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("fmt", _FormatUnion)]


class RequestBuffers(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint32), ("type", ctypes.c_uint32), ("memory", ctypes.c_uint32),
                ("capabilities", ctypes.c_uint32), ("flags", ctypes.c_uint8), ("reserved", ctypes.c_uint8 * 3)]


class _PlaneM(ctypes.Union):
    _fields_ = [("mem_offset", ctypes.c_uint32), ("userptr", ctypes.c_ulong), ("fd", ctypes.c_int32)]


class Plane(ctypes.Structure):
    _fields_ = [("bytesused", ctypes.c_uint32), ("length", ctypes.c_uint32), ("m", _PlaneM),
                ("data_offset", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 11)]


class TimeVal(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class TimeCode(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("frames", ctypes.c_uint8),
                ("seconds", ctypes.c_uint8), ("minutes", ctypes.c_uint8), ("hours", ctypes.c_uint8),
                ("userbits", ctypes.c_uint8 * 4)]


class _BufferM(ctypes.Union):
    _fields_ = [("offset", ctypes.c_uint32), ("userptr", ctypes.c_ulong), ("planes", ctypes.POINTER(Plane)),
                ("fd", ctypes.c_int32)]


class Buffer(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("type", ctypes.c_uint32), ("bytesused", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("field", ctypes.c_uint32), ("timestamp", TimeVal),
                ("timecode", TimeCode), ("sequence", ctypes.c_uint32), ("memory", ctypes.c_uint32),
                ("m", _BufferM), ("length", ctypes.c_uint32), ("reserved2", ctypes.c_uint32),
                ("request_fd", ctypes.c_int32)]


class Fraction(ctypes.Structure):
    _fields_ = [("numerator", ctypes.c_uint32), ("denominator", ctypes.c_uint32)]


class CaptureParm(ctypes.Structure):
    _fields_ = [("capability", ctypes.c_uint32), ("capturemode", ctypes.c_uint32), ("timeperframe", Fraction),
                ("extendedmode", ctypes.c_uint32), ("readbuffers", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 4)]


class _ParmUnion(ctypes.Union):
    _fields_ = [("capture", CaptureParm), ("raw_data", ctypes.c_uint8 * 200)]


class StreamParm(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("parm", _ParmUnion)]


def _ioc(direction: int, number: int, struct) -> int:
    return (direction << 30) | (ctypes.sizeof(struct) << 16) | (ord("V") << 8) | number


_READ, _WRITE = 2, 1
QUERYCAP = _ioc(_READ, 0, Capability)
S_FMT = _ioc(_READ | _WRITE, 5, Format)
REQBUFS = _ioc(_READ | _WRITE, 8, RequestBuffers)
QUERYBUF = _ioc(_READ | _WRITE, 9, Buffer)
QBUF = _ioc(_READ | _WRITE, 15, Buffer)
DQBUF = _ioc(_READ | _WRITE, 17, Buffer)
STREAMON = _ioc(_WRITE, 18, ctypes.c_int)
STREAMOFF = _ioc(_WRITE, 19, ctypes.c_int)
S_PARM = _ioc(_READ | _WRITE, 22, StreamParm)


def layout() -> List[List[int]]:
    """Struct sizes, offsets and ioctl numbers, in the order tests/data/v4l2_layout.c prints the
    kernel header's (host and emulated armhf tests compare the two)."""
    return [[ctypes.sizeof(s) for s in (Capability, Format, RequestBuffers, Buffer, Plane, StreamParm,
                                        PixFormatMplane)],
            [Buffer.timestamp.offset, Buffer.sequence.offset, Buffer.m.offset, Buffer.length.offset,
             Format.fmt.offset, PixFormatMplane.num_planes.offset],
            [QUERYCAP, S_FMT, REQBUFS, QUERYBUF, QBUF, DQBUF, STREAMON, S_PARM]]


def find_node(name: str, sysfs: Path = SYSFS) -> str:
    """The /dev/videoN whose V4L2 name starts with `name` (the ISP's main output is rkisp_mainpath
    on the RV1126 and RV1126B); CameraError naming the nodes there are otherwise."""
    nodes: List[Tuple[str, str]] = []
    for entry in sorted(sysfs.glob("video*"), key=lambda p: int("0" + p.name[5:])):
        try:
            nodes.append((entry.name, (entry / "name").read_text().strip()))
        except OSError:
            continue
    for node, label in nodes:
        if label.startswith(name):
            return "/dev/%s" % node
    raise CameraError("no V4L2 node named %s*; the nodes here are: %s" % (
        name, ", ".join("/dev/%s (%s)" % n for n in nodes) or "none (is the camera driver loaded?)"))


def device_of(source: str, sysfs: Path = SYSFS) -> str:
    target = source[len("v4l2:"):]
    return target if target.startswith("/dev/") else find_node(target, sysfs)


def to_bgr(data: bytes, pixelformat: int, width: int, height: int, stride: int) -> np.ndarray:
    """A frame as the rest of FaceGate takes it: BGR, height x width."""
    if pixelformat in (NV12, NV12M):
        rows = np.frombuffer(data, np.uint8)[:stride * height * 3 // 2].reshape(height * 3 // 2, stride)
        return cv2.cvtColor(np.ascontiguousarray(rows[:, :width]), cv2.COLOR_YUV2BGR_NV12)
    if pixelformat == YUYV:
        rows = np.frombuffer(data, np.uint8)[:stride * height].reshape(height, stride)[:, :width * 2]
        return cv2.cvtColor(np.ascontiguousarray(rows).reshape(height, width, 2), cv2.COLOR_YUV2BGR_YUYV)
    if pixelformat == MJPEG:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise CameraError("the camera sent a JPEG frame that does not decode")
        return image
    raise CameraError("pixel format %s is not one FaceGate reads (NV12, YUYV, MJPEG)" % pixelformat)


def isp_3a_running(proc: Path = Path("/proc")) -> Optional[bool]:
    """Whether Rockchip's 3A server (rkaiq) runs; without it an ISP's picture stays dark."""
    try:
        names = [(entry / "comm").read_text().strip() for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return None
    return any(name.startswith("rkaiq") for name in names)


class V4l2Capture:
    """A cv2.VideoCapture stand-in (read, isOpened, release) over V4L2 streaming I/O."""

    def __init__(self, source: str, width: int = 640, height: int = 480, fps: float = 15.0, buffers: int = 4,
                 sysfs: Path = SYSFS) -> None:
        self.device = device_of(source, sysfs)
        try:
            self.fd = os.open(self.device, os.O_RDWR | os.O_NONBLOCK)
        except OSError as err:
            raise CameraError("cannot open camera %s: %s" % (self.device, err.strerror or err)) from err
        self._maps: List[List[mmap.mmap]] = []
        self._streaming = False
        try:
            self._setup(width, height, fps, buffers)
        except OSError as err:
            self.release()
            raise CameraError("camera %s refused %s" % (self.device, err)) from err
        except CameraError:
            self.release()
            raise

    def _setup(self, width: int, height: int, fps: float, buffers: int) -> None:
        cap = Capability()
        fcntl.ioctl(self.fd, QUERYCAP, cap)
        caps = cap.device_caps if cap.capabilities & CAP_DEVICE_CAPS else cap.capabilities
        self.card = cap.card.decode(errors="replace")
        if not caps & CAP_STREAMING:
            raise CameraError("camera %s (%s) does not stream" % (self.device, self.card))
        self.mplane = bool(caps & CAP_VIDEO_CAPTURE_MPLANE)
        if not self.mplane and not caps & CAP_VIDEO_CAPTURE:
            raise CameraError("%s (%s) is not a capture device: with an ISP, name its main output "
                              "(v4l2:rkisp_mainpath)" % (self.device, self.card))
        self.type = BUF_TYPE_CAPTURE_MPLANE if self.mplane else BUF_TYPE_CAPTURE
        self._set_format(width, height)
        parm = StreamParm(type=self.type)
        parm.parm.capture.timeperframe = Fraction(1, max(1, int(round(fps))))
        try:
            fcntl.ioctl(self.fd, S_PARM, parm)
        except OSError:
            pass  # an ISP path may fix its rate elsewhere: the self-test measures what arrives
        request = RequestBuffers(count=buffers, type=self.type, memory=MEMORY_MMAP)
        fcntl.ioctl(self.fd, REQBUFS, request)
        for index in range(request.count):
            buffer, planes = self._buffer(index)
            fcntl.ioctl(self.fd, QUERYBUF, buffer)
            if self.mplane:
                self._maps.append([mmap.mmap(self.fd, planes[p].length, offset=planes[p].m.mem_offset)
                                   for p in range(buffer.length)])
            else:
                self._maps.append([mmap.mmap(self.fd, buffer.length, offset=buffer.m.offset)])
            fcntl.ioctl(self.fd, QBUF, buffer)
        fcntl.ioctl(self.fd, STREAMON, ctypes.c_int(self.type))
        self._streaming = True

    def _set_format(self, width: int, height: int) -> None:
        fmt = Format(type=self.type)
        choices = (NV12, NV12M) if self.mplane else (YUYV, MJPEG, NV12)
        for pixelformat in choices:
            if self.mplane:
                fmt.fmt.pix_mp.width, fmt.fmt.pix_mp.height = width, height
                fmt.fmt.pix_mp.pixelformat, fmt.fmt.pix_mp.field = pixelformat, FIELD_NONE
                fmt.fmt.pix_mp.num_planes = 2 if pixelformat == NV12M else 1
            else:
                fmt.fmt.pix.width, fmt.fmt.pix.height = width, height
                fmt.fmt.pix.pixelformat, fmt.fmt.pix.field = pixelformat, FIELD_NONE
            try:
                fcntl.ioctl(self.fd, S_FMT, fmt)
            except OSError:
                continue
            got = fmt.fmt.pix_mp if self.mplane else fmt.fmt.pix
            if got.pixelformat == pixelformat:
                self.pixelformat, self.width, self.height = pixelformat, got.width, got.height
                self.stride = (got.plane_fmt[0].bytesperline if self.mplane else got.bytesperline) or got.width
                return
        raise CameraError("camera %s (%s) offers none of %s" % (self.device, self.card,
                                                               ", ".join(NAMES[c] for c in choices)))

    def _buffer(self, index: int):
        planes = (Plane * VIDEO_MAX_PLANES)()
        buffer = Buffer(index=index, type=self.type, memory=MEMORY_MMAP)
        if self.mplane:
            buffer.m.planes = ctypes.cast(planes, ctypes.POINTER(Plane))
            buffer.length = VIDEO_MAX_PLANES
        return buffer, planes

    def isOpened(self) -> bool:  # noqa: N802  (cv2.VideoCapture's name)
        return self._streaming

    def get(self, prop: int) -> float:
        """cv2.VideoCapture's: a live camera is never paced by the reader."""
        return 0.0

    def read(self, timeout: float = 2.0):
        if not self._streaming:
            return False, None
        readable, _, _ = select.select([self.fd], [], [], timeout)
        if not readable:
            return False, None
        buffer, planes = self._buffer(0)
        try:
            fcntl.ioctl(self.fd, DQBUF, buffer)
        except OSError:
            return False, None
        maps = self._maps[buffer.index]
        if self.mplane:
            data = b"".join(maps[p][:planes[p].bytesused or planes[p].length] for p in range(len(maps)))
        else:
            data = maps[0][:buffer.bytesused]
        fcntl.ioctl(self.fd, QBUF, buffer)
        return True, to_bgr(data, self.pixelformat, self.width, self.height, self.stride)

    def describe(self) -> str:
        return "%s (%s) %s %dx%d" % (self.device, self.card, NAMES.get(self.pixelformat, "?"), self.width,
                                     self.height)

    def release(self) -> None:
        if self._streaming:
            try:
                fcntl.ioctl(self.fd, STREAMOFF, ctypes.c_int(self.type))
            except OSError:
                pass
            self._streaming = False
        for maps in self._maps:
            for region in maps:
                region.close()
        self._maps = []
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None


def measured_fps(capture, frames: int = 10, timeout: float = 5.0) -> Tuple[float, List[np.ndarray]]:
    """Frames per second as they arrive, and the frames."""
    images, started = [], time.monotonic()
    while len(images) < frames and time.monotonic() - started < timeout:
        ok, image = capture.read()
        if ok:
            images.append(image)
    elapsed = time.monotonic() - started
    return (len(images) - 1) / elapsed if len(images) > 1 and elapsed > 0 else 0.0, images
