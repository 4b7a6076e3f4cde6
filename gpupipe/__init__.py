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
Importing gpupipe never needs a GPU, and loads none of it up front: each public name is imported
from its module on first use (PEP 562), so ``import gpupipe`` and the light modules (the
``gpupipe-ffmpeg`` front, :mod:`gpupipe.errors`) start fast. Importing gpupipe has no side effect.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import errors
    from .cache import CacheStats, FrameCache, Lease, LruPolicy
    from .config import Config, load_config
    from .encoder import FrameEncoder
    from .frames import VideoFrame
    from .pipeline import FramePipeline, open_pipeline
    from .plan import OutputSpec
    from .schedule import Schedule, SchedulePolicy, ScheduleStats

__version__ = "0.1.0"

_HOMES = {
    "CacheStats": ".cache",
    "Config": ".config",
    "FrameCache": ".cache",
    "FrameEncoder": ".encoder",
    "FramePipeline": ".pipeline",
    "Lease": ".cache",
    "LruPolicy": ".cache",
    "OutputSpec": ".plan",
    "Schedule": ".schedule",
    "SchedulePolicy": ".schedule",
    "ScheduleStats": ".schedule",
    "VideoFrame": ".frames",
    "load_config": ".config",
    "open_pipeline": ".pipeline",
}
"""Each public name and the module it is imported from on first use."""

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


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (and kept here after)."""
    if name == "errors":
        value: Any = importlib.import_module(".errors", __name__)
    elif name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
