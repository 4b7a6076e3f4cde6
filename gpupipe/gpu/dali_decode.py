"""Decode (and resize) frames with an NVIDIA DALI pipeline, isolating bad frames.

The pipeline: ``fn.external_source`` (encoded bytes) → ``fn.decoders.image`` (RGB, stored
orientation) → optionally ``fn.resize`` to each frame's own output size (Lanczos-3 with
antialiasing, the closest DALI filter to Pillow's ``LANCZOS``) → for a frame with an EXIF
orientation, ``fn.transpose`` and/or a per-frame ``fn.flip``. The orientation is the one the
header probe read (:attr:`Frame.orientation <gpupipe.sources.Frame.orientation>`), exactly as the
CPU path applies it: DALI's own EXIF handling (``adjust_orientation``) is off, because it reads
malformed EXIF differently from the probe and from browsers (DALI 2.4 on its CPU backend rotates
for a LONG-typed little-endian orientation or one with a count of 0, and not for an IFD whose
entry count overstates its entries), and it honours a PNG ``eXIf`` chunk after the pixel data,
which the PNG specification and browsers ignore. With a ``device_id`` the decoder
is ``mixed`` (JPEG on nvJPEG and the hardware decoder where the GPU has one; PNG decoded by DALI's
CPU threads and handed over) and the outputs stay on the device; with ``device_id=None`` the very
same definition runs on the ``cpu`` backend, which is how CI tests it.

DALI fails a whole batch when one sample is bad, and after an error the pipeline object is no
longer valid. So on a batch error the pipeline is rebuilt and the batch's frames are run one at a
time: only the bad frame gets a :class:`~gpupipe.errors.FrameDecodeError`. Out-of-memory errors are
not decode errors: they propagate as :class:`DeviceOutOfMemory` so that the staging layer can
shrink the batch.

DALI may reuse a pipeline's output buffers on its next ``run()``, so :meth:`DaliDecoder.decode`
hands each run's outputs to a ``consume`` callback (e.g. the JPEG encoder) before it runs again;
nothing holds on to DALI's buffers afterwards. Pipelines are built for the largest batch and fed
smaller ones as needed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from ..errors import FrameDecodeError, FrameError
from ..plan import Job
from ..sources import check_complete

__all__ = ["DaliDecoder", "DeviceOutOfMemory", "is_oom_error", "build_pipeline", "orientation_ops"]

log = logging.getLogger("gpupipe.gpu.dali")

R = TypeVar("R")

_OOM_MARKERS = ("out of memory", "cudaerrormemoryallocation", "cuda_error_out_of_memory", "std::bad_alloc", "outofmemory")


class DeviceOutOfMemory(RuntimeError):
    """Device (or pinned host) memory ran out while processing a batch; the batch may be retried smaller."""


def is_oom_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error from CuPy, DALI or nvImageCodec (by type or message)."""
    if isinstance(exc, (DeviceOutOfMemory, MemoryError)):
        return True
    name = type(exc).__name__.lower()
    if "outofmemory" in name:
        return True
    msg = str(exc).lower()
    return any(m in msg for m in _OOM_MARKERS)


def orientation_ops(orientation: int) -> tuple[bool, int, int]:
    """``(transpose, flip_horizontal, flip_vertical)`` that show a frame stored with EXIF
    ``orientation`` upright: swap the axes first if ``transpose``, then flip (unknown values: none)."""
    if not 1 <= orientation <= 8:
        return False, 0, 0
    return orientation >= 5, int(orientation in (2, 3, 6, 7)), int(orientation in (3, 4, 7, 8))


def build_pipeline(
    max_batch: int, num_threads: int, device_id: int | None, resize: bool, orient: str | None = None
) -> Any:
    """Build the DALI pipeline: inputs ``enc`` (uint8 bytes) and, when ``resize``, ``rx``/``ry`` (float32 sizes).

    ``orient``: ``None`` (frames shown as stored), ``"flip"`` (inputs ``fh``/``fv``, int32 per
    frame: flip after the resize) or ``"transpose"`` (swap the axes after the resize, then flip;
    ``rx``/``ry`` are then the stored-orientation sizes). ``device_id=None`` runs every operator
    on the CPU; otherwise decoding is ``mixed`` and the rest runs on the GPU.
    """
    if orient not in (None, "flip", "transpose"):
        raise ValueError(f"orient must be None, 'flip' or 'transpose', got {orient!r}")
    from nvidia.dali import fn, pipeline_def, types

    decoder_device = "cpu" if device_id is None else "mixed"

    @pipeline_def(
        batch_size=max_batch,
        num_threads=num_threads,
        device_id=device_id,
        prefetch_queue_depth=1,
    )
    def frames_pipeline():  # type: ignore[no-untyped-def]
        enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1, no_copy=False)
        # The probe's orientation is applied below, never DALI's reading of the EXIF data.
        kwargs: dict[str, Any] = {"output_type": types.RGB, "adjust_orientation": False}
        if decoder_device == "mixed":
            # Same chroma upsampling as libjpeg-turbo (the CPU decoder, and Pillow).
            kwargs["jpeg_fancy_upsampling"] = True
        img = fn.decoders.image(enc, device=decoder_device, **kwargs)
        if resize:
            rx = fn.external_source(name="rx", dtype=types.FLOAT, ndim=0)
            ry = fn.external_source(name="ry", dtype=types.FLOAT, ndim=0)
            img = fn.resize(
                img,
                resize_x=rx,
                resize_y=ry,
                mode="stretch",
                interp_type=types.INTERP_LANCZOS3,
                antialias=True,
            )
        if orient == "transpose":
            img = fn.transpose(img, perm=[1, 0, 2], output_layout="HWC")
        if orient is not None:
            fh = fn.external_source(name="fh", dtype=types.INT32, ndim=0)
            fv = fn.external_source(name="fv", dtype=types.INT32, ndim=0)
            img = fn.flip(img, horizontal=fh, vertical=fv)
        return img

    pipe = frames_pipeline()
    pipe.build()
    return pipe


class DaliDecoder:
    """Decodes batches of transcode :class:`~gpupipe.plan.Job` s with DALI.

    ``device_id``: the CUDA device, or ``None`` for the CPU backend. ``max_batch``: the
    pipelines' batch size (larger job lists are run in slices). Pipelines are built lazily, one
    per kind of job: keyed ``resize`` (a bool: whether it resizes) for frames shown as stored,
    and ``(resize, transposed)`` for frames with an EXIF orientation (flipped, and for
    orientations 5–8 transposed, after the resize).
    """

    def __init__(self, device_id: int | None, max_batch: int = 8, num_threads: int = 4) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        self.device_id = device_id
        self.max_batch = max_batch
        self.num_threads = max(1, num_threads)
        self._pipes: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self.rebuilds = 0

    # ------------------------------------------------------------------ pipelines

    @staticmethod
    def _key(job: Job) -> Any:
        """The pipeline a job runs on (see the class docstring)."""
        transpose, fh, fv = orientation_ops(job.frame.orientation)
        if not (transpose or fh or fv):
            return job.needs_resize
        return (job.needs_resize, transpose)

    def _pipe(self, key: Any) -> Any:
        p = self._pipes.get(key)
        if p is None:
            resize, orient = (key, None) if isinstance(key, bool) else (key[0], "transpose" if key[1] else "flip")
            p = self._pipes[key] = build_pipeline(self.max_batch, self.num_threads, self.device_id, resize, orient)
        return p

    def _invalidate(self, key: Any) -> None:
        """Drop a pipeline after an error (DALI marks it invalid); the next use rebuilds it."""
        p = self._pipes.pop(key, None)
        self.rebuilds += 1
        del p

    def _run(self, jobs: Sequence[Job], key: Any) -> list[Any]:
        pipe = self._pipe(key)
        resize = key if isinstance(key, bool) else key[0]
        pipe.feed_input("enc", [np.frombuffer(j.frame.data, np.uint8) for j in jobs])
        ops = [orientation_ops(j.frame.orientation) for j in jobs]
        if resize:
            # Resize in the stored orientation: a frame transposed afterwards gets its size swapped.
            sizes = [j.out_size[::-1] if t else j.out_size for j, (t, _, _) in zip(jobs, ops)]
            pipe.feed_input("rx", [np.float32(w) for w, _ in sizes])
            pipe.feed_input("ry", [np.float32(h) for _, h in sizes])
        if not isinstance(key, bool):
            pipe.feed_input("fh", [np.int32(h) for _, h, _ in ops])
            pipe.feed_input("fv", [np.int32(v) for _, _, v in ops])
        (out,) = pipe.run()  # host-synchronous: the outputs are complete when it returns
        return [out[i] for i in range(len(jobs))]

    # ------------------------------------------------------------------ public

    def decode(
        self,
        jobs: Sequence[Job],
        consume: Callable[[list[Job], list[Any]], list[R]],
    ) -> list[R | FrameError]:
        """Decode ``jobs`` (resized to ``job.out_size`` where needed) and pass the images to ``consume``.

        ``consume(jobs, images)`` receives DALI tensors (HWC ``uint8`` RGB, on the device when
        ``device_id`` is set; ``np.asarray`` works on CPU ones) and must finish with them before it
        returns: they are only valid until the pipeline's next run. Returns one result per job, in
        order: what ``consume`` returned for it, or the job's :class:`FrameDecodeError`. Raises
        :class:`DeviceOutOfMemory` when DALI ran out of memory.
        """
        results: list[Any] = [None] * len(jobs)
        todo: dict[Any, list[int]] = {}
        for i, job in enumerate(jobs):
            if job.passthrough:
                raise ValueError(f"{job.frame.label}: passthrough jobs are not decoded")
            if job.frame.kind == "jpeg":
                # A JPEG without its end-of-image marker fails in Pillow on the CPU path; nvJPEG may
                # not notice. (A PNG missing only IEND decodes in both, so PNGs are left to DALI.)
                try:
                    check_complete(job.frame)
                except FrameError as e:
                    results[i] = e
                    continue
            todo.setdefault(self._key(job), []).append(i)
        with self._lock:
            for key, idx in todo.items():
                for s in range(0, len(idx), self.max_batch):
                    part = idx[s : s + self.max_batch]
                    for i, r in zip(part, self._decode_part([jobs[i] for i in part], key, consume)):
                        results[i] = r
        return results

    def _decode_part(self, jobs: list[Job], key: Any, consume: Callable[[list[Job], list[Any]], list[R]]) -> list[Any]:
        try:
            images = self._run(jobs, key)
        except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError/IndexError for bad data
            self._invalidate(key)
            if is_oom_error(e):
                raise DeviceOutOfMemory(f"DALI ran out of memory decoding {len(jobs)} frame(s): {e}") from e
            if len(jobs) == 1:
                return [_decode_error(jobs[0], e)]
            log.debug("DALI batch of %d failed (%s); isolating the bad frame(s)", len(jobs), _first_line(e))
            out: list[Any] = []
            for job in jobs:
                out.extend(self._decode_part([job], key, consume))
            return out
        return list(consume(jobs, images))

    def close(self) -> None:
        """Release the pipelines."""
        with self._lock:
            self._pipes.clear()


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # DALI's message repeats "Critical error in pipeline" and a traceback; keep the informative tail.
    useful = [ln for ln in lines if not ln.startswith(("Critical error", "Error in", "which was used", "File ", "img =", "encountered", "Current pipeline"))]
    return (useful[-1] if useful else (lines[0] if lines else type(e).__name__))[:200]


def _decode_error(job: Job, e: BaseException) -> FrameDecodeError:
    return FrameDecodeError(job.frame.label, f"cannot decode {job.frame.kind.upper()} (DALI): {_first_line(e)}")
