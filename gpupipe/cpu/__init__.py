"""The CPU path: one module per stage (:mod:`.decode`, :mod:`.resize`, :mod:`.encode`) and the backend
that runs them on a thread pool (:mod:`.backend`). Also the fallback on machines without a usable GPU:
it takes the same :class:`~gpupipe.plan.Job` list as the GPU backend and returns the same URIs
(passthrough byte-identical; transcodes within codec tolerance).
"""

from .backend import CpuBackend, StageTimes, pillow_flavour, run_job, run_job_guarded, transcode
from .decode import decode_frame, has_transparency
from .encode import encode_image
from .resize import resize_image

__all__ = [
    "CpuBackend",
    "StageTimes",
    "decode_frame",
    "encode_image",
    "has_transparency",
    "pillow_flavour",
    "resize_image",
    "run_job",
    "run_job_guarded",
    "transcode",
]
