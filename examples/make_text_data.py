"""Write the text data sets of the language-model examples into examples/data/.

    python examples/make_text_data.py            # every data set
    python examples/make_text_data.py opinions   # just one

`opinions`: one-sentence opinions labelled positive / negative, built so that counting
words does not solve them (deterministic, offline, seeded):

- negation and hedging flip the label ("the film was not good", "hardly enjoyable");
- contrast sentences carry both a positive and a negative word, and only the order
  says which one counts ("i expected the meal to be dull, but it was wonderful" is
  positive, the same words the other way round negative): their bags of words are
  identical;
- the test file (`opinions_test.csv`) uses, for half of its rows, adjectives that never
  occur in training ("superb", "tedious"...): a model has to know what they mean.

A bag-of-words classifier can learn the plain sentences only; a pretrained encoder
brings word meaning (unseen synonyms) and word order (negation, contrast).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parent / "data"

POSITIVE = ["good", "great", "excellent", "wonderful", "enjoyable", "delightful", "brilliant"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dull", "disappointing", "unpleasant"]
POSITIVE_UNSEEN = ["superb", "fantastic", "marvelous", "outstanding", "lovely", "splendid"]
NEGATIVE_UNSEEN = ["dreadful", "horrible", "tedious", "lousy", "atrocious", "bland"]
THINGS = ["film", "meal", "concert", "hotel", "book", "service", "show", "trip", "game"]

# template, label of the sentence relative to the polarity of {a} (+1 same, -1 flipped);
# contrast templates take {b}, a word of the opposite polarity, that does not count
TEMPLATES: list[tuple[str, int]] = [
    ("the {t} was {a}.", 1),
    ("honestly, the {t} was really {a}.", 1),
    ("i found the {t} {a}.", 1),
    ("the {t} was not {a}.", -1),
    ("the {t} was hardly {a}.", -1),
    ("i would not call the {t} {a}.", -1),
    ("i expected the {t} to be {b}, but it was {a}.", 1),
    ("the {t} was {a}, although i had expected it to be {b}.", 1),
    ("everyone said the {t} would be {b}; it turned out {a}.", 1),
]


def _sentence(rng: random.Random, positive_words: list[str], negative_words: list[str]) -> dict:
    template, sign = rng.choice(TEMPLATES)
    a_positive = rng.random() < 0.5
    a = rng.choice(positive_words if a_positive else negative_words)
    b = rng.choice(negative_words if a_positive else positive_words)
    text = template.format(t=rng.choice(THINGS), a=a, b=b)
    positive = a_positive if sign > 0 else not a_positive
    return {"text": text, "label": "positive" if positive else "negative"}


def opinion_rows(n: int, *, seed: int = 13, unseen: float = 0.0) -> list[dict]:
    """`n` rows {text, label}; a fraction `unseen` of them with held-out adjectives."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        held_out = rng.random() < unseen
        words = (POSITIVE_UNSEEN, NEGATIVE_UNSEEN) if held_out else (POSITIVE, NEGATIVE)
        rows.append(_sentence(rng, *words))
    return rows


def opinions(n_train: int = 800, n_test: int = 400) -> Path:
    """opinions_train.csv (train + validation) and opinions_test.csv (half of its rows
    with adjectives never seen in training)."""
    train = opinion_rows(n_train, seed=13)
    test = opinion_rows(n_test, seed=14, unseen=0.5)
    _write_csv(pd.DataFrame(test), "opinions_test.csv")
    return _write_csv(pd.DataFrame(train), "opinions_train.csv")


def _write_csv(df: pd.DataFrame, name: str) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / name
    df.to_csv(path, index=False)
    return path


MAKERS = {"opinions": opinions}


def main(names: list[str]) -> None:
    for name in names or MAKERS:
        if name not in MAKERS:
            raise SystemExit(f"unknown data set '{name}' (choose from {', '.join(MAKERS)})")
        print(f"{name}: {MAKERS[name]()}")


if __name__ == "__main__":
    main(sys.argv[1:])
