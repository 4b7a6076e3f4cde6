"""Video frames decoded on the device (NVDEC), encoded to JPEG there: nvImageCodec straight from the decoder's output.

The frames :class:`~gpupipe.gpu.nvdec.NvdecDecoder` hands out are CuPy arrays (HWC RGB) on the
device. Those that need no resize and go to JPEG are encoded by nvImageCodec from device memory
(:class:`~gpupipe.gpu.jpeg_encode.JpegEncoder`), so only the bitstream crosses PCIe; the others
(a resize, PNG output) are copied to the host and take the CPU path (:func:`to_host`).
**Unverified on a GPU** (see :mod:`gpupipe.gpu.nvdec`).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from ..errors import FrameDecodeError, FrameError, codec_reason
from ..frames.source import Pixels
from ..plan import Job
from ..uri import build_uri

__all__ = ["DevicePixelsEncoder", "on_device", "to_host"]


def on_device(job: Job) -> bool:
    """Whether ``job``'s frame is decoded pixels held on the device."""
    return job.frame.pixels is not None and job.frame.pixels.on_device


def encodes_on_device(job: Job) -> bool:
    """Whether ``job`` is a device frame nvImageCodec encodes where it is: JPEG, no resize."""
    return on_device(job) and job.target == "jpeg" and not job.needs_resize


def to_host(job: Job) -> Job:
    """``job`` with its device pixels copied to a NumPy array (for the CPU path); other jobs as they are."""
    if not on_device(job):
        return job
    import cupy

    assert job.frame.pixels is not None
    host = Pixels(cupy.asnumpy(job.frame.pixels.array))
    return dataclasses.replace(job, frame=dataclasses.replace(job.frame, pixels=host))


class DevicePixelsEncoder:
    """JPEG-encodes device frames on GPU ``device_id`` with nvImageCodec (its encoder made on first use)."""

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self._enc: Any = None
        self._lock = threading.Lock()
        self.frames = 0

    def run(self, jobs: list[Job]) -> list[str | FrameError]:
        """Each job's JPEG URI, or its frame's error, in order."""
        from .jpeg_encode import JpegEncoder

        with self._lock:
            if self._enc is None:
                self._enc = JpegEncoder(self.device_id)
        out: list[str | FrameError] = []
        for job in jobs:
            assert job.frame.pixels is not None
            try:
                data = self._enc.encode_one(job.frame.pixels.array, job.quality)
            except Exception as e:  # noqa: BLE001 - nvImageCodec's failure is this frame's
                out.append(FrameDecodeError(job.frame.label, f"cannot encode JPEG on the GPU: {codec_reason(e)}"))
                continue
            out.append(build_uri("image/jpeg", data))
            self.frames += 1
        return out
