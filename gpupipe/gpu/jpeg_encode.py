"""JPEG encoding with nvImageCodec, straight from DALI's (device) output.

With a ``device_id`` the encoder uses nvImageCodec's GPU backends (nvJPEG, hardware encoder where
present) and takes the decoded images where they are, on the device: DALI's ``TensorGPU`` exposes
``__cuda_array_interface__``/``__dlpack__``, which :func:`nvidia.nvimgcodec.as_image` wraps without
a copy. With ``device_id=None`` it uses nvImageCodec's CPU-only backend (libjpeg-turbo, the same
library Pillow uses) on host arrays, which is how CI tests this module.

nvImageCodec returns each encoded bitstream in *host* memory (a ``CodeStream``); its bytes are
exposed through the buffer protocol (``memoryview(code_stream)``) and are not copied here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..errors import EncodeFailed

__all__ = ["EncodeFailed", "JpegEncoder"]


class JpegEncoder:
    """Batch JPEG encoder on CUDA device ``device_id`` (or the CPU when ``None``)."""

    def __init__(self, device_id: int | None = None, max_cpu_threads: int = 0) -> None:
        from nvidia import nvimgcodec as nv

        self._nv = nv
        self.device_id = device_id
        if device_id is None:
            self._enc = nv.Encoder(
                device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY,
                max_num_cpu_threads=max_cpu_threads,
                backends=[nv.Backend(nv.BackendKind.CPU_ONLY)],
            )
        else:
            # GPU backends first; nvImageCodec falls back to the CPU encoder for what they cannot do.
            self._enc = nv.Encoder(device_id=device_id, max_num_cpu_threads=max_cpu_threads)
        self._params: dict[int, Any] = {}
        self._lock = threading.Lock()

    def params(self, quality: int) -> Any:
        """``EncodeParams`` for JPEG ``quality`` (1–100, the same scale as Pillow's), cached."""
        p = self._params.get(quality)
        if p is None:
            nv = self._nv
            p = self._params[quality] = nv.EncodeParams(quality_type=nv.QualityType.QUALITY, quality_value=float(quality))
        return p

    def as_image(self, img: Any) -> Any:
        """Wrap a DALI tensor, CuPy array or NumPy array (HWC uint8 RGB) as an nvImageCodec ``Image`` without copying."""
        nv = self._nv
        if self.device_id is None and not hasattr(img, "__array_interface__") and hasattr(img, "__array__"):
            import numpy as np

            img = np.asarray(img)
        return nv.as_image(img)

    def encode(self, images: Sequence[Any], quality: int) -> list[Any]:
        """Encode ``images`` to JPEG at ``quality``; one ``CodeStream`` (host bytes, buffer protocol) or ``None`` each.

        Synchronous: the bitstreams are complete (and the inputs no longer needed) on return.
        """
        if not images:
            return []
        wrapped = [self.as_image(im) for im in images]
        with self._lock:
            out = self._enc.encode(wrapped, "jpeg", params=self.params(int(quality)))
        if not isinstance(out, list):
            out = [out]
        return out

    def encode_one(self, image: Any, quality: int) -> memoryview:
        """Encode one image; its JPEG bytes (a view of the ``CodeStream``). Raises :class:`EncodeFailed`."""
        (cs,) = self.encode([image], quality)
        if cs is None:
            raise EncodeFailed("nvImageCodec could not encode the image")
        return memoryview(cs)
