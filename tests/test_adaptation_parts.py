"""Pieces of the paper's adaptation: what is trainable, and the focal loss."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch

from cxrprobe.errors import InputError
from cxrprobe.models.mlp_head import PaperHead
from cxrprobe.models.unfreeze import total_count, trainable_count, unfreeze_top
from cxrprobe.train.losses import focal_bce_with_logits


def test_vit_b_32_with_three_blocks_and_the_head_trains_22_057_486_parameters():
    model = open_clip.create_model("ViT-B-32", pretrained=None)  # uninitialised: no download
    unfreeze_top(model.visual, 3)
    head = PaperHead(512)
    assert trainable_count(model.visual, head) == 22_057_486
    share = trainable_count(model.visual, head) / total_count(model.visual, head)
    assert round(100 * share, 2) == 24.99  # the paper's "24.99% of total"
    blocks = model.visual.transformer.resblocks
    assert not any(p.requires_grad for p in blocks[8].parameters())
    assert all(p.requires_grad for p in blocks[9].parameters())
    assert not model.visual.conv1.weight.requires_grad


@pytest.mark.parametrize("k", [-1, 13])
def test_unfreeze_outside_the_block_count_is_refused(k):
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with pytest.raises(InputError, match="between 0 and 12"):
        unfreeze_top(model.visual, k)


def test_focal_loss_matches_its_formula_and_masks_held_out_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = []
    for z, y in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = 1 / (1 + math.exp(-z))
        p_t = p if y == 1 else 1 - p
        a_t = 0.25 if y == 1 else 0.75
        expected.append(-a_t * (1 - p_t) ** 2 * math.log(p_t))
    assert focal_bce_with_logits(logits, targets).item() == pytest.approx(sum(expected) / 4, rel=1e-6)
    logits.requires_grad_(True)
    mask = torch.tensor([[1.0, 0.0]])  # second finding held out
    focal_bce_with_logits(logits, targets, mask=mask).backward()
    assert torch.all(logits.grad[:, 1] == 0) and torch.all(logits.grad[:, 0] != 0)


def test_pixel_cache_holds_each_image_decoded_once(small_dataset, tmp_path):
    import numpy as np

    from cxrprobe.data.images import Preprocessing, load_grey
    from cxrprobe.train.pixels import PixelDataset, build_pixel_cache

    paths = sorted(str(p) for p in (small_dataset / "images").glob("*.png"))[:10]
    prep = Preprocessing(image_size=64)
    pixels = build_pixel_cache(paths, tmp_path / "pixels.npy", prep, workers=0)
    assert pixels.shape == (10, 64, 64) and pixels.dtype == np.uint8
    assert np.array_equal(pixels[3], load_grey(paths[3], prep))
    labels = np.zeros((10, 14), dtype=np.uint8)
    plain = PixelDataset(pixels, labels, augment=False)
    x, y = plain[0, 3]
    assert x.dtype == torch.uint8 and x.shape == (64, 64) and y.shape == (14,)  # uint8 out of the workers
    assert np.array_equal(x.numpy(), pixels[3])
    augmented = PixelDataset(pixels, labels, augment=True, seed=1)
    first, again = augmented[0, 3][0], augmented[0, 3][0]
    assert torch.equal(first, again)  # the draw is a function of (seed, epoch, row)
    assert not torch.equal(first, augmented[1, 3][0])
    assert not torch.equal(first, x)


def test_persistent_workers_draw_each_epoch_as_the_main_process_does(small_dataset, tmp_path):
    """Workers keep their copy of the dataset across epochs: the epoch must travel with each index."""
    import numpy as np

    from cxrprobe.data.images import Preprocessing
    from cxrprobe.train.pixels import PixelDataset, build_pixel_cache, pixel_loader

    paths = sorted(str(p) for p in (small_dataset / "images").glob("*.png"))[:12]
    pixels = build_pixel_cache(paths, tmp_path / "pixels.npy", Preprocessing(image_size=32), workers=0)
    dataset = PixelDataset(pixels, np.eye(12, 14, dtype=np.uint8), augment=True, seed=3)
    batches = {}
    for workers in (0, 2):
        loader = pixel_loader(dataset, 5, shuffle=True, workers=workers, pin_memory=False, seed=3)
        epochs = []
        for epoch in (1, 2):
            loader.batch_sampler.set_epoch(epoch)
            epochs.append([(x.clone(), y.clone()) for x, y in loader])
        batches[workers] = epochs
    for a, b in zip(batches[0], batches[2]):
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    first, second = batches[0]
    assert not torch.equal(first[0][1], second[0][1])  # another order in another epoch


def test_pixel_cache_refuses_an_undecodable_training_image(small_dataset, tmp_path):
    from cxrprobe.data.images import Preprocessing
    from cxrprobe.errors import DataError
    from cxrprobe.train.pixels import build_pixel_cache

    broken = tmp_path / "empty.png"
    broken.write_bytes(b"")
    good = str(next((small_dataset / "images").glob("*.png")))
    with pytest.raises(DataError, match="empty file"):
        build_pixel_cache([good, str(broken)], tmp_path / "p.npy", Preprocessing(image_size=32), workers=0)
    assert not (tmp_path / "p.npy").exists() and len(list(tmp_path.iterdir())) == 1


def test_pixel_cache_scales_sixteen_bit_images_by_their_recorded_depth(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from cxrprobe.data.images import Preprocessing
    from cxrprobe.train.pixels import build_pixel_cache, decoded_by_adapt, pixel_record

    values = (np.arange(32 * 32).reshape(32, 32) % 2048).astype(np.uint16)  # the lower half of 12 bits
    paths = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    for path in paths:
        Image.fromarray(values).save(path)
    prep = Preprocessing(image_size=32)
    pixels = build_pixel_cache(paths, tmp_path / "pixels-train.npy", prep, workers=0, bits_stored=[12, 0])
    assert np.array_equal(pixels[0], np.rint(values * (255 / 4095)).astype(np.uint8))  # dim, as stored
    assert pixels[1].max() == 255  # no depth recorded: its own range
    (tmp_path / "pixels-train.source").write_text(pixel_record(["a", "b"], paths, prep, [12, 0]))
    assert json.loads(pixel_record(["a"], paths[:1], prep))["files"][0][-1] != 12  # the depth is part of a file's record
    # embed reuses a decoded image only when the metadata gives it the same depth
    assert decoded_by_adapt(tmp_path, ["a", "b"], paths, prep, [12, 0]).where == ((0, 0), (0, 1))
    assert decoded_by_adapt(tmp_path, ["a", "b"], paths, prep, [10, 0]).where == (None, (0, 1))
    assert decoded_by_adapt(tmp_path, ["a", "b"], paths, prep).where == (None, (0, 1))
