from pathlib import Path

import numpy as np
import pytest
import torch

from captioner.data.datamodule import CaptionDataModule
from captioner.errors import ConfigError
from captioner.features.cache import ensure_features
from captioner.features.feature_file import FeatureFile
from captioner.sources import load_records
from tests.conftest import settings_of


@pytest.fixture
def features_path(tiny_cfg, shared_data_root) -> Path:
    records = load_records("shapes", Path(tiny_cfg.dataset.root), tiny_cfg.dataset)
    return ensure_features(settings_of(tiny_cfg), records, shared_data_root)


@pytest.mark.parametrize("in_memory, workers", [(True, 0), (False, 2)])
def test_train_batches_pair_each_caption_with_its_image(features_path, in_memory, workers):
    datamodule = CaptionDataModule(features_path, batch_size=16, num_workers=workers,
                                   in_memory=in_memory)
    datamodule.setup()
    file = FeatureFile(features_path)
    vocab = datamodule.vocabulary
    train_images = set(file.splits["train"].tolist())
    # the vocabulary comes from train captions only
    train_words = {w for c, o in zip(file.captions, file.caption_image, strict=True) if o in train_images
                   for w in c.lower().replace(",", " ").replace(":", " ").split()}
    assert set(vocab.words[4:]) == train_words
    seen = 0
    for batch in datamodule.train_dataloader():
        assert batch["features"].dtype == torch.float32 and batch["features"].shape[1:] == (16, 512)
        assert torch.all(batch["tokens"][:, 0] == vocab.start_id)
        assert batch["tokens"].shape[1] == batch["lengths"].max()
        for row in range(len(batch["tokens"])):
            text = vocab.decode(batch["tokens"][row].tolist())
            owners = [o for c, o in zip(file.captions, file.caption_image, strict=True)
                      if " ".join(vocab.decode(vocab.encode(c, 20)).split()) == text]
            assert any(np.array_equal(file.read([o])[0], batch["features"][row].numpy().astype(np.float16))
                       for o in owners)
        seen += len(batch["tokens"])
    assert seen == len(datamodule.train_captions) == 5 * len(train_images)


def test_a_vocabulary_without_words_is_refused_naming_the_file_and_the_option(features_path):
    # Before: training went on with a model that writes only <pad> (greedy) or fails (sampling).
    datamodule = CaptionDataModule(features_path, min_word_count=10**6)
    with pytest.raises(ConfigError, match=rf"^{features_path}: no word of the train split's \d+ captions is "
                       r"seen text.min_word_count=1000000 times.*lower text.min_word_count$"):
        datamodule.setup()
    datamodule = CaptionDataModule(features_path, min_word_count=2)
    datamodule.setup()
    assert len(datamodule.vocabulary) > 4


def test_evaluation_iterates_images_with_all_their_references(features_path):
    datamodule = CaptionDataModule(features_path, eval_batch_size=4)
    datamodule.setup()
    indices = torch.cat([b["image_index"] for b in datamodule.val_dataloader()]).tolist()
    file = FeatureFile(features_path)
    assert indices == file.splits["val"].tolist()
    references = datamodule.references("val")
    assert set(references) == set(indices) and all(len(r) == 5 for r in references.values())
