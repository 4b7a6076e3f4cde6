"""gpupipe: video frames to ``data:image/...;base64,`` URIs on NVIDIA GPUs (or the CPU), in a memory-bounded cache.

Quick use::

    import gpupipe
    with gpupipe.open_pipeline() as pipe:      # config from $GPUPIPE_CONFIG or defaults
        uri = pipe.get("frames/frame_00001.png")

The public API, all of it exported here: :class:`FrameCache` / :class:`CacheStats` / :class:`Lease`
(with the eviction policies :class:`LruPolicy` and :class:`SchedulePolicy`), :func:`load_config` /
:class:`Config`, :class:`FrameEncoder` / :class:`OutputSpec` / :class:`VideoFrame` (a video clip's frame, by
index or time, wherever a frame is taken), :class:`FramePipeline` /
:func:`open_pipeline` / :class:`Schedule` / :class:`ScheduleStats`, and :mod:`gpupipe.errors`.
Importing gpupipe never needs a GPU.
"""

from __future__ import annotations

from . import errors
from .cache import CacheStats, FrameCache, Lease, LruPolicy
from .config import Config, load_config
from .encoder import FrameEncoder
from .frames import VideoFrame
from .pipeline import FramePipeline, open_pipeline
from .plan import OutputSpec
from .schedule import Schedule, SchedulePolicy, ScheduleStats

__version__ = "0.1.0"

__all__ = [
    "CacheStats",
    "Config",
    "FrameCache",
    "FrameEncoder",
    "FramePipeline",
    "Lease",
    "LruPolicy",
    "OutputSpec",
    "Schedule",
    "SchedulePolicy",
    "ScheduleStats",
    "VideoFrame",
    "__version__",
    "errors",
    "load_config",
    "open_pipeline",
]
