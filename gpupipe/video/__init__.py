"""Decoding video clips for :class:`gpupipe.VideoFrame` sources.

- :mod:`~gpupipe.video.decoder`: the contract every decoder implements (:class:`VideoDecoder`),
  and the seek rule they share (:func:`must_seek`);
- :mod:`~gpupipe.video.pyav_decoder`: the CPU decoder, FFmpeg through PyAV;
- :mod:`~gpupipe.video.rgb`: its conversion of decoded frames to RGB (RGBA), into a buffer it reuses;
- :mod:`~gpupipe.video.pool`: the bounded pool of open decoders an encoder keeps, one per clip,
  least recently used closed first, their state counted in a cache's byte budget.

The GPU decoder (NVDEC through PyNvVideoCodec) implements the same contract in
:mod:`gpupipe.gpu.nvdec`. What a clip holds is probed by :mod:`gpupipe.frames.clip`.
"""

from __future__ import annotations

from .decoder import DecoderOpener, VideoDecoder, must_seek
from .pool import DecoderPool, PoolScope
from .pyav_decoder import PyavDecoder

__all__ = ["DecoderOpener", "DecoderPool", "PoolScope", "PyavDecoder", "VideoDecoder", "must_seek"]
