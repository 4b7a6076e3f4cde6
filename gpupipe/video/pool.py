"""The bounded pool of open decoders an encoder keeps: one per clip, least recently used closed first.

:class:`DecoderPool` lends each clip's decoder to one thread at a time (other threads asking for
the same clip wait for it: a clip is decoded in one place, forward where it can). Opening a
decoder for one more clip than ``max_decoders`` closes the least recently used idle one; when
every open one is busy, the opener waits for one to be handed back.

**Memory.** A pipeline reads through a :class:`PoolScope` (:meth:`DecoderPool.scope`), bound to
its cache, so that decoder state counts in the cache's byte budget like other work:

- every video frame's work is admitted with room for one decoder's state
  (:attr:`Header.scratch_bytes <gpupipe.frames.headers.Header.scratch_bytes>`) unless its clip's
  decoder is open and kept already (:meth:`DecoderPool.kept_for`), so a load that opens a
  decoder has the room for it reserved;
- at the end of that load, :meth:`PoolScope.settle` *keeps* the state of the decoders it opened
  (:meth:`FrameCache.keep <gpupipe.cache.FrameCache.keep>`: the bytes move from the load's
  reservation to ``kept_bytes``), and they count there until the decoder is closed; a decoder
  whose state cannot be kept is closed as soon as it is idle;
- a request that finds no room reclaims kept state (:meth:`DecoderPool.reclaim`, registered with
  the cache for the decoders kept in it): idle decoders are closed, least recently used first.

So entries, work in flight and open decoders together stay within the budget; the decoders'
state is the bound of :func:`~gpupipe.frames.clip.decoder_state_bytes` (or the GPU decoder's own).

Lock order: a cache's lock may be held when the pool's lock is taken (in :meth:`reclaim`),
never the other way round: the pool calls a cache only without its own lock.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from ..errors import FrameDecodeError, FrameError, codec_reason
from ..frames.clip import Clip, decoder_state_bytes
from ..frames.source import Pixels
from .decoder import DEFAULT_CONVERSION, Conversion, DecoderOpener, VideoDecoder
from .pyav_decoder import PyavDecoder

__all__ = ["Budget", "DecoderPool", "PoolScope", "PoolStats"]

log = logging.getLogger("gpupipe.video")


class Budget(Protocol):
    """What the pool needs from a cache to count decoder state in its budget (:class:`~gpupipe.cache.FrameCache`)."""

    def keep(self, nbytes: int) -> bool: ...
    def unkeep(self, nbytes: int) -> None: ...
    def add_reclaimer(self, reclaim: Any) -> None: ...


@dataclass(frozen=True)
class PoolStats:
    """The pool's counters: decoders ``open`` now and ever ``opened``, ``closed`` (for the count
    bound, at close), ``reclaimed`` (closed to make room in a budget), and ``seeks`` and frames
    ``decoded`` by the decoders closed so far and the open ones."""

    open: int
    opened: int
    closed: int
    reclaimed: int
    seeks: int
    decoded: int


@dataclass(eq=False)
class _Slot:
    """One clip's place in the pool: its decoder (opened by the first user), who uses it, what it keeps."""

    key: Hashable
    clip: Clip
    state_bytes: int
    decoder: VideoDecoder | None = None
    busy: int = 0  # threads using or waiting for it
    lock: threading.Lock = field(default_factory=threading.Lock)
    kept: int = 0
    budget: Budget | None = None
    closed: bool = False
    doomed: bool = False  # its state could not be kept: close it once idle


def _clip_key(clip: Clip) -> Hashable:
    return clip.path, clip.identity


class DecoderPool:
    """Open decoders, at most ``max_decoders`` (see the module docstring); a :class:`~gpupipe.frames.ClipReader`.

    ``opener`` opens a decoder for a clip (default: :class:`~gpupipe.video.pyav_decoder.PyavDecoder`);
    ``state_bytes(clip)`` is what one open decoder holds (default:
    :func:`~gpupipe.frames.clip.decoder_state_bytes`). Thread-safe. A pool used without a scope
    counts nothing in any budget.
    """

    def __init__(self, max_decoders: int, opener: DecoderOpener | None = None, state_bytes: Any = None) -> None:
        if isinstance(max_decoders, bool) or not isinstance(max_decoders, int) or max_decoders < 1:
            raise ValueError(f"max_decoders must be a positive integer, got {max_decoders!r}")
        self.max_decoders = max_decoders
        self._opener: DecoderOpener = opener or PyavDecoder
        self._state_bytes = state_bytes or decoder_state_bytes
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._slots: OrderedDict[Hashable, _Slot] = OrderedDict()  # least recently used first
        self._opened = self._closed_count = self._reclaimed = 0
        self._seeks = self._decoded = 0
        self._shut = False
        self._reclaimers: dict[int, Any] = {}  # id(budget) -> its reclaimer (registered once per budget)

    # ------------------------------------------------------------------ reading

    def decode(
        self,
        clip: Clip,
        index: int,
        label: str,
        fit: tuple[int, int] | None = None,
        conversion: Conversion = DEFAULT_CONVERSION,
    ) -> Pixels:
        """Frame ``index`` of ``clip`` through its open decoder (opened now if needed); the frame's error is raised.
        ``fit``: the box the frame will be fitted into; ``conversion``: its YUV->RGB conversion
        (:meth:`VideoDecoder.frame <gpupipe.video.decoder.VideoDecoder.frame>`)."""
        return self._decode(clip, index, label, None, (fit, conversion))

    def scope(
        self, budget: Budget | None, fit: tuple[int, int] | None = None, conversion: Conversion = DEFAULT_CONVERSION
    ) -> PoolScope:
        """A reader for one load that counts the decoders it opens in ``budget`` (see the module docstring)
        and asks for its frames fitted into ``fit`` (the load's output size) and converted as
        ``conversion`` says."""
        if budget is not None:
            with self._lock:
                reclaim = self._reclaimers.get(id(budget))
                if reclaim is None:
                    reclaim = self._reclaimers[id(budget)] = partial(self.reclaim, budget=budget)
            budget.add_reclaimer(reclaim)
        return PoolScope(self, budget, fit, conversion)

    def kept_for(self, group: Hashable) -> int:
        """Bytes kept in a budget for the open decoder of the clip whose read group (``(path, identity)``,
        :meth:`VideoFrame.read_order <gpupipe.frames.video.VideoFrame.read_order>`) is ``group``; 0 when none."""
        with self._lock:
            slot = self._slots.get(group)
            return slot.kept if slot is not None and not slot.closed and not slot.doomed else 0

    def _decode(
        self, clip: Clip, index: int, label: str, opened: list[_Slot] | None, how: tuple[tuple[int, int] | None, Conversion]
    ) -> Pixels:
        slot, evicted = self._take(clip)
        self._close_all(evicted)
        try:
            with slot.lock:
                if slot.decoder is None:
                    slot.decoder = self._open(clip, label)
                    if opened is not None:
                        opened.append(slot)
                return slot.decoder.frame(index, label, *how)
        finally:
            self._give_back(slot)

    def _open(self, clip: Clip, label: str) -> VideoDecoder:
        try:
            decoder = self._opener(clip)
        except FrameError as e:
            raise type(e)(label, e.reason) from None
        except Exception as e:  # noqa: BLE001 - an opener's failure is this frame's
            raise FrameDecodeError(label, f"cannot open a decoder: {type(e).__name__}: {codec_reason(e)}") from None
        with self._lock:
            self._opened += 1
        return decoder

    def _take(self, clip: Clip) -> tuple[_Slot, list[_Slot]]:
        """The clip's slot, marked busy (a new one when it has none); and the slots closed to make room for it."""
        key = _clip_key(clip)
        evicted: list[_Slot] = []
        with self._lock:
            while True:
                if self._shut:
                    raise RuntimeError("the decoder pool is closed")
                slot = self._slots.get(key)
                if slot is not None:
                    break
                if len(self._slots) < self.max_decoders:
                    slot = self._slots[key] = _Slot(key, clip, self._state_bytes(clip))
                    break
                victim = next((s for s in self._slots.values() if s.busy == 0), None)
                if victim is not None:
                    self._unlink(victim)
                    evicted.append(victim)
                    self._closed_count += 1
                    continue
                self._idle.wait()  # every open decoder is in use: wait for one to be handed back
            slot.busy += 1
            self._slots.move_to_end(key)
        return slot, evicted

    def _give_back(self, slot: _Slot) -> None:
        close = False
        with self._lock:
            slot.busy -= 1
            if slot.busy == 0 and slot.doomed and not slot.closed:
                self._unlink(slot)
                close = True
            self._idle.notify_all()
        if close:
            self._close_all([slot])

    def _unlink(self, slot: _Slot) -> None:
        """Take an idle slot out (lock held); its decoder is closed by the caller, outside the lock."""
        slot.closed = True
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]

    def _close_all(self, slots: list[_Slot]) -> None:
        """Close the decoders of unlinked slots and give their kept bytes back (no lock held)."""
        for slot in slots:
            self._close_decoder(slot)
            kept, budget = slot.kept, slot.budget
            slot.kept, slot.budget = 0, None
            if kept and budget is not None:
                budget.unkeep(kept)

    def _close_decoder(self, slot: _Slot) -> None:
        decoder, slot.decoder = slot.decoder, None
        if decoder is not None:
            with self._lock:
                self._seeks += decoder.seeks
                self._decoded += decoder.decoded
            decoder.close()

    def close_unkept(self, slots: list[_Slot]) -> None:
        """Close these slots' decoders unless their state is kept in a budget: now if idle, else when
        handed back (see :meth:`PoolScope.close_opened`)."""
        idle: list[_Slot] = []
        with self._lock:
            for slot in slots:
                if slot.closed or slot.kept:
                    continue
                if slot.busy:
                    slot.doomed = True
                    continue
                self._unlink(slot)
                self._closed_count += 1
                idle.append(slot)
        self._close_all(idle)

    # ------------------------------------------------------------------ budgets

    def settle(self, opened: list[_Slot], budget: Budget) -> None:
        """Keep the state of the decoders ``opened`` during a load in ``budget`` (see the module docstring)."""
        for slot in opened:
            with self._lock:
                if slot.closed or slot.kept:
                    continue
            kept = budget.keep(slot.state_bytes)
            close = False
            with self._lock:
                if kept and not slot.closed:
                    slot.kept, slot.budget = slot.state_bytes, budget
                    continue
                if not kept and not slot.closed:
                    slot.doomed = True
                    if slot.busy == 0:
                        self._unlink(slot)
                        close = True
            if kept:  # closed meanwhile
                budget.unkeep(slot.state_bytes)
            if close:
                self._close_all([slot])

    def reclaim(self, nbytes: int, *, budget: Budget) -> int:
        """Close idle decoders whose state is kept in ``budget``, least recently used first, until about
        ``nbytes`` are freed; returns the bytes freed (they stop counting at once). Called by that
        cache with its lock held: closes the decoders here and never calls the cache."""
        freed = 0
        with self._lock:
            for slot in [s for s in self._slots.values() if s.busy == 0 and s.kept and s.budget is budget]:
                if freed >= nbytes:
                    break
                self._unlink(slot)
                self._reclaimed += 1
                freed += slot.kept
                slot.kept, slot.budget = 0, None
                decoder, slot.decoder = slot.decoder, None
                if decoder is not None:
                    self._seeks += decoder.seeks
                    self._decoded += decoder.decoded
                    decoder.close()
        if freed:
            log.debug("closed idle decoders to free %d bytes of the budget", freed)
        return freed

    # ------------------------------------------------------------------ report, close

    def stats(self) -> PoolStats:
        """The pool's counters (see :class:`PoolStats`)."""
        with self._lock:
            live = [s.decoder for s in self._slots.values() if s.decoder is not None]
            return PoolStats(
                open=len(live),
                opened=self._opened,
                closed=self._closed_count,
                reclaimed=self._reclaimed,
                seeks=self._seeks + sum(d.seeks for d in live),
                decoded=self._decoded + sum(d.decoded for d in live),
            )

    def release(self) -> int:
        """Close the idle decoders now (the pool stays usable); returns how many were closed."""
        with self._lock:
            idle = [s for s in self._slots.values() if s.busy == 0]
            for s in idle:
                self._unlink(s)
            self._closed_count += len(idle)
        self._close_all(idle)
        return len(idle)

    def close(self) -> None:
        """Close every decoder (waiting for those in use) and give their kept bytes back."""
        with self._lock:
            self._shut = True
            while any(s.busy for s in self._slots.values()):
                self._idle.wait()
            slots = list(self._slots.values())
            for s in slots:
                self._unlink(s)
        self._close_all(slots)

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoolScope:
    """A :class:`~gpupipe.frames.ClipReader` for one load: decodes through its pool, frames fitted into
    ``fit`` where the decoder can and converted as ``conversion`` says, and remembers the decoders it
    opened, whose state :meth:`settle` keeps in the scope's budget."""

    def __init__(
        self,
        pool: DecoderPool,
        budget: Budget | None,
        fit: tuple[int, int] | None = None,
        conversion: Conversion = DEFAULT_CONVERSION,
    ) -> None:
        self.pool = pool
        self.budget = budget
        self.fit = fit
        self.conversion = conversion
        self._opened: list[_Slot] = []
        self._lock = threading.Lock()

    def decode(self, clip: Clip, index: int, label: str) -> Pixels:
        opened: list[_Slot] = []
        try:
            return self.pool._decode(clip, index, label, opened, (self.fit, self.conversion))
        finally:
            if opened:
                with self._lock:
                    self._opened.extend(opened)

    def settle(self) -> None:
        """Keep the state of the decoders this scope opened in its budget (call it at the end of the
        load, in the thread the cache runs the loader in); with no budget, nothing."""
        with self._lock:
            opened, self._opened = self._opened, []
        if self.budget is not None and opened:
            self.pool.settle(opened, self.budget)

    def close_opened(self) -> None:
        """Close the decoders this scope opened (those idle and not kept in a budget; a busy one when it
        is handed back): for work that counted a decoder's state in its own reservation only."""
        with self._lock:
            opened, self._opened = self._opened, []
        if opened:
            self.pool.close_unkept(opened)
