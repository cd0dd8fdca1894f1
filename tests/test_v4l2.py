"""The V4L2 reader without a camera: its structs against linux/videodev2.h, the ISP's node found
by name, and recorded NV12 (multi-planar, with stride padding), YUYV and MJPEG frames.

No V4L2 device exists on this machine and its kernel cannot load the vivid test driver, so the
streaming ioctls themselves run only on a board (board/README.md's hardware checklist).
"""

import ctypes
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from conftest import ROOT, SEED

from appliance import v4l2
from appliance.errors import CameraError

LAYOUT = ROOT / "tests" / "data" / "v4l2_layout.c"


def test_the_structs_and_ioctl_numbers_match_the_kernel_header(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to read linux/videodev2.h")
    subprocess.run(["gcc", "-o", str(tmp_path / "layout"), str(LAYOUT)], check=True)
    sizes, offsets, numbers = [list(map(int, line.split())) for line in
                               subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True,
                                              check=True).stdout.splitlines()]
    assert [sizes, offsets, numbers] == v4l2.layout()


def test_the_isps_main_output_is_found_by_name_not_number(tmp_path):
    for node, name in (("video0", "rkisp-statistics"), ("video11", "rkisp_mainpath"), ("video2", "rkisp_selfpath"),
                       ("video3", "rkispp_input_image")):
        (tmp_path / node).mkdir()
        (tmp_path / node / "name").write_text(name + "\n")
    assert v4l2.find_node("rkisp_mainpath", tmp_path) == "/dev/video11"
    assert v4l2.device_of("v4l2:/dev/video5", tmp_path) == "/dev/video5"
    with pytest.raises(CameraError) as caught:
        v4l2.find_node("rkcif_mipi", tmp_path)
    assert "/dev/video11 (rkisp_mainpath)" in str(caught.value) and "\n" not in str(caught.value)


def recorded(width=640, height=480):
    photo = cv2.resize(cv2.imread(str(SEED / "probes" / "obama.jpg")), (width, height))
    return photo


def test_recorded_frames_in_each_format_come_out_as_the_picture(tmp_path):
    photo = recorded()
    height, width = photo.shape[:2]
    i420 = cv2.cvtColor(photo, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    y, u, v = i420[:width * height], i420[width * height:width * height * 5 // 4], i420[width * height * 5 // 4:]
    stride = width + 64  # the ISP pads each line
    nv12 = np.zeros((height * 3 // 2, stride), np.uint8)
    nv12[:height, :width] = y.reshape(height, width)
    nv12[height:, :width:2], nv12[height:, 1:width:2] = u.reshape(height // 2, width // 2), v.reshape(height // 2,
                                                                                                       width // 2)
    yuyv = cv2.cvtColor(photo, cv2.COLOR_BGR2YUV_YUY2)
    jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    for data, pixelformat, line in ((nv12.tobytes(), v4l2.NV12, stride), (yuyv.tobytes(), v4l2.YUYV, width * 2),
                                    (jpeg, v4l2.MJPEG, 0)):
        image = v4l2.to_bgr(data, pixelformat, width, height, line)
        assert image.shape == photo.shape
        error = np.abs(image.astype(int) - photo.astype(int)).mean()
        assert error < 6, (v4l2.NAMES[pixelformat], error)  # chroma subsampling, not a scrambled picture
    with pytest.raises(CameraError, match="not one FaceGate reads"):
        v4l2.to_bgr(b"", v4l2.fourcc("RGGB"), width, height, width)


def test_a_missing_device_and_a_stopped_3a_server_are_said(tmp_path):
    with pytest.raises(CameraError, match="cannot open camera /dev/video99"):
        v4l2.V4l2Capture("v4l2:/dev/video99")
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "comm").write_text("init\n")
    assert v4l2.isp_3a_running(proc) is False
    (proc / "42").mkdir()
    (proc / "42" / "comm").write_text("rkaiq_3A_server\n")
    assert v4l2.isp_3a_running(proc) is True
