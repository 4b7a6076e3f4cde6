"""Cache keys (gpupipe.frames.keys): named fields, the schedule identity, and the ETag.

The contract: equal frames give equal keys (and ETags); a rewritten file gives a new key and
ETag but keeps its schedule identity; the ETag is a hash of the named fields, so it depends
neither on ``repr`` nor on field order, and shows no stat field (inode) in clear.
"""

from __future__ import annotations

import os
import re

import pytest

from gpupipe import FrameCache, FrameEncoder, FramePipeline
from gpupipe.config import Config
from gpupipe.frames import DataSource, FileIdentity, FrameKey, PathSource, SourceKey
from gpupipe.pipeline import schedule_ident

ETAG = re.compile(r'W/"[0-9a-f]{32}"')


@pytest.fixture(scope="module")
def pipe():
    enc = FrameEncoder(Config(), backend="cpu", tune_allocator=False)
    with FramePipeline(enc, FrameCache(8, 64 * 2**20), tune_allocator=False) as p:
        yield p


def test_equal_frames_give_equal_keys_and_etags(pipe, tmp_path, png_bytes):
    p = tmp_path / "a.png"
    p.write_bytes(png_bytes)
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.png"
    link.symlink_to(p)
    same_file = [p, str(p), tmp_path / "sub" / ".." / "a.png", link]
    keys = [pipe.key(s) for s in same_file]
    assert all(k == keys[0] and hash(k) == hash(keys[0]) for k in keys)
    assert len({k.etag() for k in keys}) == 1
    assert keys[0].source == SourceKey("path", str(p.resolve()), identity=FileIdentity.of(os.stat(p)))
    data = [pipe.key(d) for d in (png_bytes, bytearray(png_bytes), memoryview(png_bytes), DataSource(png_bytes))]
    assert all(k == data[0] for k in data) and len({k.etag() for k in data}) == 1
    assert data[0].source.kind == "data" and data[0].source.identity is None
    assert data[0] != keys[0] and data[0].etag() != keys[0].etag()  # the same bytes from a file: another key


def test_a_rewritten_file_changes_the_key_and_etag_but_not_the_schedule_id(pipe, tmp_path, png_bytes, jpeg_bytes):
    p = tmp_path / "f.png"
    p.write_bytes(png_bytes)
    before = pipe.key(p)
    p.write_bytes(png_bytes + b"\0" * 7)  # another size: a new identity whatever the clock's resolution
    after = pipe.key(p)
    assert after != before and after.etag() != before.etag()
    assert after.schedule_id == before.schedule_id == schedule_ident(before)
    assert after.schedule_id.source.identity is None and after.schedule_id.source.name == str(p.resolve())
    assert after.schedule_id.output == after.output
    # Data has no file identity: its key is its own schedule id.
    data = pipe.key(jpeg_bytes)
    assert data.schedule_id is data


def test_output_settings_are_part_of_the_key_and_etag(tmp_path, png_bytes):
    p = tmp_path / "a.png"
    p.write_bytes(png_bytes)
    enc = FrameEncoder(Config(), backend="cpu", tune_allocator=False)
    cache = FrameCache(8, 64 * 2**20)
    a = FramePipeline(enc, cache, output="jpeg", quality=80, tune_allocator=False)
    b = FramePipeline(enc, cache, output="jpeg", quality=81, tune_allocator=False)
    c = FramePipeline(enc, cache, output="passthrough", quality=80, tune_allocator=False)
    d = FramePipeline(enc, cache, output="passthrough", quality=81, tune_allocator=False)
    ka, kb, kc, kd = (x.key(p) for x in (a, b, c, d))
    assert ka.source == kb.source == kc.source and ka != kb and ka.etag() != kb.etag()
    assert ka.schedule_id != kb.schedule_id
    assert kc == kd and kc.etag() == kd.etag()  # passthrough ignores the quality
    enc.close()


def test_the_etag_shows_no_stat_field_nor_path_and_does_not_come_from_repr(pipe, tmp_path, png_bytes, monkeypatch):
    p = tmp_path / "frame_with_a_name.png"
    p.write_bytes(png_bytes)
    st = os.stat(p)
    key = pipe.key(p)
    tag = key.etag()
    assert ETAG.fullmatch(tag), tag
    for field in (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns):
        assert str(field) not in tag
    assert "frame_with_a_name" not in tag
    for cls in (FrameKey, SourceKey, FileIdentity):
        monkeypatch.setattr(cls, "__repr__", lambda self: "same")
    assert key.etag() == tag


def test_the_etag_is_a_stable_hash_of_the_named_fields():
    """A fixed key has a fixed tag: it depends on no process state (hash seeds, ids, repr)."""
    key = FrameKey(SourceKey("path", "/frames/a.png", identity=FileIdentity(1, 2, 3, 4, 5)), ("auto", (640, 360), 90, 1))
    assert key.etag() == 'W/"65b8ab64c1086d9c00b54ffb25a74140"'
    same = FrameKey(SourceKey(name="/frames/a.png", kind="path", identity=FileIdentity(1, 2, 3, 4, 5)), ("auto", (640, 360), 90, 1))
    assert same == key and same.etag() == key.etag()
    other = FrameKey(SourceKey("path", "/frames/a.png", identity=FileIdentity(1, 2, 3, 4, 6)), ("auto", (640, 360), 90, 1))
    assert other.etag() != key.etag() and other.schedule_id == key.schedule_id


def test_keys_are_named_not_positional(pipe, png_bytes):
    key = pipe.key(png_bytes)
    with pytest.raises(TypeError):
        key[0]  # type: ignore[index]  # noqa: B018
    assert {key: 1}[pipe.key(bytes(png_bytes))] == 1
    with pytest.raises(AttributeError):
        key.source = key.source  # type: ignore[misc]  # frozen


def test_a_path_that_cannot_be_stated_has_no_identity(tmp_path):
    key = PathSource(tmp_path / "missing.png").key()
    assert key == SourceKey("path", str(tmp_path / "missing.png")) and key.schedule_id is key
