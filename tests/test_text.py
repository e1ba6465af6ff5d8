import pytest
import torch

from captioner.data.vocabulary import Vocabulary, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("Two shapes: a Red circle, and a blue-ish square.") == [
        "two", "shapes", "a", "red", "circle", "and", "a", "blue", "ish", "square"]


def test_specials_come_first_with_pad_zero():
    vocab = Vocabulary.build(["a red circle"])
    assert vocab.words[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)


def test_top_k_and_min_count():
    captions = ["a a a b b c", "a b d"]
    vocab = Vocabulary.build(captions, max_words=2)
    assert vocab.words[4:] == ["a", "b"]  # by frequency
    vocab = Vocabulary.build(captions, min_count=2)
    assert vocab.words[4:] == ["a", "b"]  # c and d seen once
    vocab = Vocabulary.build(captions)
    assert vocab.words[4:] == ["a", "b", "c", "d"]  # ties broken by spelling


def test_encode_wraps_truncates_and_maps_unknown_words():
    vocab = Vocabulary.build(["a red circle"])
    assert vocab.encode("a red circle", 20) == [1, vocab.index["a"], vocab.index["red"],
                                                vocab.index["circle"], 2]
    assert vocab.encode("a green circle", 20)[2] == vocab.unk_id
    assert vocab.encode("a red circle", 2) == [1, vocab.index["a"], vocab.index["red"], 2]


def test_encode_batch_pads_with_zero_and_reports_lengths():
    vocab = Vocabulary.build(["a red circle", "a square"])
    ids, lengths = vocab.encode_batch(["a red circle", "a square"], 20)
    assert ids.shape == (2, 5)
    assert lengths.tolist() == [5, 4]
    assert ids[1, 4] == vocab.pad_id
    assert torch.all(ids[0] != vocab.pad_id)


def test_decode_stops_at_end_and_skips_specials():
    vocab = Vocabulary.build(["a red circle"])
    ids = vocab.encode("a red circle", 20) + [vocab.index["red"], 0, 0]
    assert vocab.decode(ids) == "a red circle"


def test_save_and_load_round_trip(tmp_path):
    vocab = Vocabulary.build(["a red circle", "two blue squares"])
    vocab.save(tmp_path / "vocabulary.json")
    assert Vocabulary.load(tmp_path / "vocabulary.json") == vocab


def test_a_run_folders_vocabulary_file_loads_and_a_bad_one_is_named(tmp_path):
    path = tmp_path / "vocabulary.json"
    Vocabulary.build(["a red circle", "a blue square"]).save(path)
    assert Vocabulary.load(path).words[-1] in {"red", "circle", "blue", "square"}
    for text in ("[1, 2]", '{"words": "abc"}', '{"words": [1, 2]}'):  # a bare TypeError before
        path.write_text(text)
        with pytest.raises(ValueError, match=f"{path}: not a vocabulary file"):
            Vocabulary.load(path)
