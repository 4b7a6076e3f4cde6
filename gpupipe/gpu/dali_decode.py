"""Decode (and resize) frames with an NVIDIA DALI pipeline, isolating bad frames cheaply.

The pipeline: ``fn.external_source`` (encoded bytes) → ``fn.decoders.image`` (RGB, stored
orientation) → optionally ``fn.resize`` to each frame's own output size (Lanczos-3 with
antialiasing, the closest DALI filter to Pillow's ``LANCZOS``) → for a frame with an EXIF
orientation, ``fn.transpose`` and/or a per-frame ``fn.flip``. The orientation is the one the
header probe read (:attr:`Frame.orientation <gpupipe.frames.Frame.orientation>`), exactly as the
CPU path applies it: DALI's own EXIF handling (``adjust_orientation``) is off, because it reads
malformed EXIF differently from the probe and from browsers (DALI 2.4 on its CPU backend rotates
for a LONG-typed little-endian orientation or one with a count of 0, and not for an IFD whose
entry count overstates its entries), and it honours a PNG ``eXIf`` chunk after the pixel data,
which the PNG specification and browsers ignore. With a ``device_id`` the decoder
is ``mixed`` (JPEG on nvJPEG and the hardware decoder where the GPU has one; PNG decoded by DALI's
CPU threads and handed over) and the outputs stay on the device; with ``device_id=None`` the very
same definition runs on the ``cpu`` backend, which is how CI tests it.

Bad frames. DALI fails a whole batch when one sample is bad, and the pipeline object is not
valid after an error, so every failed run costs a pipeline rebuild. Three things keep that rare:

1. **Host checks first** (:func:`host_precheck`): the headers were probed when the frame was
   read; here a PNG's chunk structure and every chunk CRC (``zlib.crc32``) and a JPEG's
   end-of-image marker are checked, so frames DALI would refuse for those reasons never reach it.
   They come back as :class:`~gpupipe.errors.FrameDecodeError` (the device layer then asks the
   CPU path, whose verdict stands).
2. **Skip the failing sample**: DALI's image decoder names the sample it failed on ("Failed to
   decode sample #N", ``dali/operators/imgcodec/image_decoder.h``, for the ``cpu`` and ``mixed``
   backends alike). That frame gets its error and the rest of the batch is run once more, so
   ``k`` bad frames cost ``k`` rebuilds, and never a run per frame.
3. Only when DALI does not name the sample (a failure outside the decode step), the batch is
   bisected to find the bad frame(s); the good ones are then run together once.

Out-of-memory errors are not decode errors: they propagate as :class:`DeviceOutOfMemory` so that
the staging layer can shrink the batch; sticky CUDA errors (:func:`~gpupipe.gpu.faults.is_sticky_error`)
propagate unchanged, since no rebuild can help.

DALI may reuse a pipeline's output buffers on its next ``run()``. :meth:`DaliDecoder.run_batch`
returns the images of one run per pipeline "slot"; the caller must be done with them before that
slot runs again (the staged runner alternates two slots, so batch k's images are encoded while
batch k+1 decodes on the other slot's pipelines). ``run()`` is called without a CUDA stream, which
makes its outputs host-synchronous (DALI 2.4 ``Pipeline.run``): they are complete on return.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from ..errors import DeviceOutOfMemory, FrameDecodeError, FrameError, codec_reason
from ..frames import Frame, check_complete
from ..plan import Job
from .faults import is_oom_error, is_sticky_error

__all__ = [
    "DaliDecoder",
    "build_pipeline",
    "failed_sample",
    "host_precheck",
    "orientation_ops",
]

log = logging.getLogger("gpupipe.gpu.dali")

R = TypeVar("R")

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_FAILED_SAMPLE_RE = re.compile(r"Failed to decode sample #(\d+)")


def host_precheck(frame: Frame) -> str | None:  # noqa: PLR0911 - one return per reason DALI would refuse the frame
    """Why DALI would refuse ``frame`` for a reason the host can see cheaply, or ``None``.

    PNG: every chunk lies inside the data with a correct CRC, and the stream reaches ``IEND``.
    JPEG: an end-of-image marker in the last KiB (:func:`gpupipe.frames.check_complete`).
    The header itself was probed when the frame was read.
    """
    if frame.kind == "jpeg":
        try:
            check_complete(frame)
        except FrameError as e:
            return e.reason
        return None
    data = frame.data
    if not data.startswith(_PNG_SIG):
        return "not a PNG signature"
    pos, n = len(_PNG_SIG), len(data)
    crc32 = zlib.crc32
    while pos + 12 <= n:
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length
        if end + 4 > n:
            return f"truncated PNG: the chunk at byte {pos} runs past the end of the data"
        ctype = data[pos + 4 : pos + 8]
        if crc32(memoryview(data)[pos + 4 : end]) != struct.unpack_from(">I", data, end)[0]:
            return f"corrupt PNG: bad CRC in the {ctype.decode('latin-1')!r} chunk at byte {pos}"
        if ctype == b"IEND":
            return None
        pos = end + 4
    return "truncated PNG: no IEND chunk"


def failed_sample(exc: BaseException) -> int | None:
    """The sample index DALI's decoder names in ``exc`` ("Failed to decode sample #N"), if any."""
    m = _FAILED_SAMPLE_RE.search(str(exc))
    return int(m.group(1)) if m else None


def orientation_ops(orientation: int) -> tuple[bool, int, int]:
    """``(transpose, flip_horizontal, flip_vertical)`` that show a frame stored with EXIF
    ``orientation`` upright: swap the axes first if ``transpose``, then flip (unknown values: none)."""
    if not 1 <= orientation <= 8:
        return False, 0, 0
    return orientation >= 5, int(orientation in (2, 3, 6, 7)), int(orientation in (3, 4, 7, 8))


def build_pipeline(
    max_batch: int,
    num_threads: int,
    device_id: int | None,
    resize: bool,
    orient: str | None = None,
    decoder_args: Mapping[str, float | int] | None = None,
) -> Any:
    """Build the DALI pipeline: inputs ``enc`` (uint8 bytes) and, when ``resize``, ``rx``/``ry`` (float32 sizes).

    ``decoder_args``: extra arguments of the ``mixed`` ``fn.decoders.image`` (the hardware JPEG
    decoder's ``hw_decoder_load``, its ``preallocate_width_hint`` / ``preallocate_height_hint``,
    ``hybrid_huffman_threshold``: :meth:`gpupipe.config.GpuPathConfig.dali_decoder_args`); DALI's
    ``cpu`` backend accepts them too and ignores them.

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
    def frames_pipeline() -> Any:
        enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1, no_copy=False)
        # The probe's orientation is applied below, never DALI's reading of the EXIF data.
        kwargs: dict[str, Any] = {"output_type": types.RGB, "adjust_orientation": False}
        if decoder_device == "mixed":
            # Same chroma upsampling as libjpeg-turbo (the CPU decoder, and Pillow).
            kwargs["jpeg_fancy_upsampling"] = True
        kwargs.update(decoder_args or {})
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

    ``device_id``: the CUDA device, or ``None`` for the CPU backend. ``decoder_args``: see
    :func:`build_pipeline`. ``max_batch``: the
    pipelines' batch size (larger job lists are run in slices by :meth:`decode`). Pipelines are
    built lazily, one per kind of job and slot: the kind is ``resize`` (a bool: whether it
    resizes) for frames shown as stored, and ``(resize, transposed)`` for frames with an EXIF
    orientation (flipped, and for orientations 5–8 transposed, after the resize).

    Counters: ``runs`` (pipeline runs), ``failed_runs``, ``rebuilds`` (pipelines dropped after an
    error; the next use builds a new one), ``host_rejects`` (frames refused by
    :func:`host_precheck`), ``bad_samples`` (frames DALI refused).
    """

    def __init__(
        self,
        device_id: int | None,
        max_batch: int = 8,
        num_threads: int = 4,
        decoder_args: Mapping[str, float | int] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        self.device_id = device_id
        self.max_batch = max_batch
        self.num_threads = max(1, num_threads)
        self.decoder_args = dict(decoder_args or {})
        self._pipes: dict[tuple[Any, int], Any] = {}
        self._lock = threading.Lock()
        self.runs = 0
        self.failed_runs = 0
        self.rebuilds = 0
        self.host_rejects = 0
        self.bad_samples = 0

    def stats(self) -> dict[str, int]:
        """The counters as a dict."""
        return {
            "dali_runs": self.runs,
            "dali_failed_runs": self.failed_runs,
            "dali_rebuilds": self.rebuilds,
            "dali_host_rejects": self.host_rejects,
            "dali_bad_samples": self.bad_samples,
        }

    # ------------------------------------------------------------------ pipelines

    @staticmethod
    def _key(job: Job) -> Any:
        """The kind of pipeline a job runs on (see the class docstring)."""
        transpose, fh, fv = orientation_ops(job.frame.orientation)
        if not (transpose or fh or fv):
            return job.needs_resize
        return (job.needs_resize, transpose)

    def _pipe(self, key: Any, slot: int) -> Any:
        p = self._pipes.get((key, slot))
        if p is None:
            resize, orient = (key, None) if isinstance(key, bool) else (key[0], "transpose" if key[1] else "flip")
            p = self._pipes[(key, slot)] = build_pipeline(
                self.max_batch, self.num_threads, self.device_id, resize, orient, self.decoder_args
            )
        return p

    def _invalidate(self, key: Any, slot: int) -> None:
        """Drop a pipeline after an error (DALI marks it invalid); the next use rebuilds it."""
        p = self._pipes.pop((key, slot), None)
        self.rebuilds += 1
        del p

    def _run(self, jobs: Sequence[Job], key: Any, slot: int = 0) -> list[Any]:
        pipe = self._pipe(key, slot)
        self.runs += 1
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
        (out,) = pipe.run()  # no cuda_stream: host-synchronous, the outputs are complete on return
        return [out[i] for i in range(len(jobs))]

    # ------------------------------------------------------------------ public

    def run_batch(self, jobs: Sequence[Job], slot: int = 0) -> list[Any]:
        """Decode ``jobs`` (at most ``max_batch`` per resize group) on ``slot``'s pipelines.

        Returns one entry per job, in order: a DALI tensor (HWC ``uint8`` RGB, on the device when
        ``device_id`` is set; ``np.asarray`` works on CPU ones), valid until this slot's
        pipelines run again, or the job's :class:`FrameDecodeError`. Raises
        :class:`DeviceOutOfMemory` when DALI ran out of memory, and sticky CUDA errors as they are.
        """
        results: list[Any] = [None] * len(jobs)
        groups: dict[Any, list[int]] = {}
        for i, job in enumerate(jobs):
            if job.passthrough:
                raise ValueError(f"{job.frame.label}: passthrough jobs are not decoded")
            why = host_precheck(job.frame)
            if why is not None:
                self.host_rejects += 1
                results[i] = FrameDecodeError(job.frame.label, f"refused before DALI: {why}")
                continue
            groups.setdefault(self._key(job), []).append(i)
        with self._lock:
            for key, idx in groups.items():
                if len(idx) > self.max_batch:
                    raise ValueError(f"run_batch got {len(idx)} frames for pipelines of batch size {self.max_batch}")
                if idx:
                    for i, r in self._decode_group(jobs, idx, key, slot).items():
                        results[i] = r
        return results

    def decode(
        self,
        jobs: Sequence[Job],
        consume: Callable[[list[Job], list[Any]], list[R]],
    ) -> list[R | FrameError]:
        """Decode ``jobs`` (resized to ``job.out_size`` where needed) and pass the images to ``consume``.

        ``consume(jobs, images)`` receives the decoded frames of one run and must finish with them
        before it returns (they are only valid until the pipeline's next run). Returns one result
        per job, in order: what ``consume`` returned for it, or the job's :class:`FrameDecodeError`.
        """
        results: list[Any] = [None] * len(jobs)
        for s in range(0, len(jobs), self.max_batch):
            part = list(jobs[s : s + self.max_batch])
            out = self.run_batch(part, 0)
            ok = [k for k, r in enumerate(out) if not isinstance(r, FrameError)]
            for k, r in enumerate(out):
                if isinstance(r, FrameError):
                    results[s + k] = r
            if ok:
                for k, r in zip(ok, consume([part[k] for k in ok], [out[k] for k in ok])):
                    results[s + k] = r
        return results

    def _attempt(self, jobs: Sequence[Job], idx: list[int], key: Any, slot: int) -> list[Any] | BaseException:
        """One run of ``idx``: its images, or the decode error (after dropping the pipeline)."""
        try:
            return self._run([jobs[i] for i in idx], key, slot)
        except Exception as e:  # DALI raises RuntimeError for bad data
            self.failed_runs += 1
            self._invalidate(key, slot)
            if is_sticky_error(e):
                raise
            if is_oom_error(e):
                raise DeviceOutOfMemory(f"DALI ran out of memory decoding {len(idx)} frame(s): {_first_line(e)}") from e
            return e

    def _decode_group(self, jobs: Sequence[Job], idx: list[int], key: Any, slot: int) -> dict[int, Any]:
        """Images (or errors) for the jobs ``idx``, which share a pipeline: the last run is the one
        whose outputs are returned, so it holds every good frame."""
        out: dict[int, Any] = {}
        todo = list(idx)
        while todo:
            got = self._attempt(jobs, todo, key, slot)
            if not isinstance(got, BaseException):
                out.update(zip(todo, got))
                return out
            k = failed_sample(got)
            if k is not None and 0 <= k < len(todo):
                i = todo.pop(k)
                out[i] = _decode_error(jobs[i], got)
                self.bad_samples += 1
                log.debug("DALI refused %s (sample #%d of %d); running the rest again", jobs[i].frame.label, k, len(todo) + 1)
                continue
            bad = self._bisect(jobs, todo, key, slot, got)
            if not bad:  # every part decodes on its own: not a bad frame, so not a decode error
                raise RuntimeError(f"DALI failed a batch of {len(todo)} whose parts decode alone: {_first_line(got)}") from got
            for i, e in bad.items():
                out[i] = e
            self.bad_samples += len(bad)
            todo = [i for i in todo if i not in bad]
        return out

    def _bisect(
        self, jobs: Sequence[Job], idx: list[int], key: Any, slot: int, err: BaseException
    ) -> dict[int, FrameDecodeError]:
        """Find the frames of ``idx`` (which failed with ``err``, naming no sample) that fail alone."""
        if len(idx) == 1:
            return {idx[0]: _decode_error(jobs[idx[0]], err)}
        half = len(idx) // 2
        bad: dict[int, FrameDecodeError] = {}
        for part in (idx[:half], idx[half:]):
            got = self._attempt(jobs, part, key, slot)
            if isinstance(got, BaseException):
                k = failed_sample(got)
                if k is not None and 0 <= k < len(part):
                    bad[part[k]] = _decode_error(jobs[part[k]], got)  # the rest of this half is retried by the caller
                else:
                    bad.update(self._bisect(jobs, part, key, slot, got))
        return bad

    def close(self) -> None:
        """Release the pipelines."""
        with self._lock:
            self._pipes.clear()


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # DALI's message repeats "Critical error in pipeline" and a traceback; keep the informative tail.
    useful = [
        ln
        for ln in lines
        if not ln.startswith(
            ("Critical error", "Error in", "which was used", "File ", "img =", "encountered", "Current pipeline")
        )
    ]
    return (useful[-1] if useful else (lines[0] if lines else type(e).__name__))[:200]


def _decode_error(job: Job, e: BaseException) -> FrameDecodeError:
    return FrameDecodeError(job.frame.label, f"cannot decode {job.frame.kind.upper()} (DALI): {codec_reason(_first_line(e))}")
