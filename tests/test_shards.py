"""Shards: commit semantics, and several shards merging into the cache one writer makes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import TINY

from cxrprobe.cache.final import write_cache
from cxrprobe.cache.reader import FeatureCache
from cxrprobe.cache.schema import EmbedSpec, attr_json, manifest_sha256
from cxrprobe.cache.shard import ShardPlan, ShardWriter, create_shard
from cxrprobe.commands.embed import fill_shard
from cxrprobe.data.locate import find_images
from cxrprobe.data.nih import load_nih_metadata
from cxrprobe.errors import CacheError
from cxrprobe.models.loading import load_model
from cxrprobe.models.text import default_prompts


@pytest.fixture(scope="module")
def setup(small_dataset):
    meta = load_nih_metadata(small_dataset)
    paths = find_images(small_dataset, meta.table.image_ids)
    loaded = load_model("cxrprobe-tiny", "none", "cpu")
    spec = EmbedSpec(
        model="cxrprobe-tiny", pretrained="none", weights_sha256=loaded.weights_sha256,
        preprocessing=attr_json(loaded.preprocessing.as_dict()), embed_dim=loaded.embed_dim,
        dtype="float16", precision="fp32", device="cpu", l2_normalised=False, dataset="test",
        dataset_fingerprint=meta.table.fingerprint(), label_source=meta.label_source,
        val_fraction=meta.val_fraction, val_seed=meta.val_seed,
        manifest_sha256=manifest_sha256(meta.table.image_ids),
    )
    prompts = default_prompts()
    text = loaded.encode_texts(prompts.prompts)
    return meta.table, paths, loaded, spec, prompts, text


def make_shard(path, setup, start, stop, batch_size=4):
    table, _, _, spec, prompts, text = setup
    plan = ShardPlan(start, stop, len(table), batch_size)
    create_shard(path, spec, plan, table.take(np.arange(start, stop)), prompts, text, {"created": "x"})


def test_commit_marks_rows_and_pending_shrinks(tmp_path, setup):
    path = tmp_path / "s.h5"
    table = setup[0]
    make_shard(path, setup, 0, 10, batch_size=4)
    with ShardWriter(path) as writer:
        assert [list(b) for b in writer.pending_batches()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        batch = writer.pending_batches()[1]
        writer.commit(batch, np.array([4, 6, 7]), np.ones((3, 32), dtype=np.float32), [(5, "empty file (0 bytes)")])
        assert [b.start for b in writer.pending_batches()] == [0, 8]
        with pytest.raises(ValueError, match="either embedded or failed"):
            writer.commit(writer.pending_batches()[0], np.array([0]), np.ones((1, 32)), [])
    with h5py.File(path, "r") as f:
        assert f["status"][4:8].tolist() == [1, 2, 1, 1]
        assert f["reason"][5] == b"empty file (0 bytes)"
    make_shard(tmp_path / "rest.h5", setup, 10, len(table))
    with pytest.raises(CacheError, match="s.h5 is not finished: 6 rows pending"):
        write_cache(tmp_path / "c.h5", [path, tmp_path / "rest.h5"])


def test_two_shards_merge_into_the_single_writer_cache(tmp_path, setup, small_dataset, cli):
    table, paths, loaded, *_ = setup
    half = len(table) // 2
    shards = [tmp_path / "rank0.h5", tmp_path / "rank1.h5"]
    for path, (start, stop) in zip(shards, [(0, half), (half, len(table))]):
        make_shard(path, setup, start, stop)
        with ShardWriter(path) as writer:
            fill_shard(writer, paths[start:stop].tolist(), loaded, "fp32", workers=0)
    merged = tmp_path / "merged.h5"
    summary = write_cache(merged, shards)
    assert summary.rows == len(table) and summary.failures == 0

    single = tmp_path / "single.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", single, *TINY, "--workers", "0", "-q").code == 0
    with FeatureCache(merged) as a, FeatureCache(single) as b:
        assert (a.table.image_ids == b.table.image_ids).all()
        assert (a.labels == b.labels).all() and (a.table.split == b.table.split).all()
        assert np.allclose(a.embeddings(), b.embeddings(), atol=2e-3)


def test_shards_must_tile_the_rows(tmp_path, setup):
    table = setup[0]
    make_shard(tmp_path / "a.h5", setup, 0, 5)
    make_shard(tmp_path / "b.h5", setup, 6, len(table))
    with pytest.raises(CacheError, match="starts at row 6, expected 5"):
        write_cache(tmp_path / "c.h5", [tmp_path / "a.h5", tmp_path / "b.h5"])
