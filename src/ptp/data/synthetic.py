"""A toy language on which independent multi-token prediction provably fails and PTP does not.

A document is BOS followed by words; each word is one of K fixed multi-token words, chosen uniformly at random. At a
word boundary the next token is uniform over the K first tokens; inside a word every token is determined. So the
tokens after a boundary all hang on one random choice: a predictor that sees only the context (the independent
baseline) guesses the word right with probability 1/K and then stops, while an O-PTP drafter reads the choice from
u and predicts the whole window. With words of length m and windows of N slots, the independent baseline's mean
correct prefix is about (m - 1) / 2 (the rest of the current word), O-PTP's approaches N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BOS = 0


@dataclass(frozen=True)
class WordLanguage:
    """K random words of m tokens over the ids 1..K*m (id 0 is BOS)."""

    num_words: int = 8
    """K: the words a boundary chooses from."""
    word_length: int = 4
    """m: tokens per word."""
    seed: int = 0
    """Seed of the (random) assignment of token ids to words."""

    @property
    def vocab_size(self) -> int:
        return 1 + self.num_words * self.word_length

    def words(self) -> list[list[int]]:
        """The K words as token-id lists."""
        ids = (
            torch.randperm(self.num_words * self.word_length, generator=torch.Generator().manual_seed(self.seed)) + 1
        ).tolist()
        return [ids[w * self.word_length : (w + 1) * self.word_length] for w in range(self.num_words)]

    def sample(self, count: int, words_per_document: int, seed: int = 0) -> list[list[int]]:
        """``count`` documents of BOS plus ``words_per_document`` random words."""
        generator = torch.Generator().manual_seed(seed)
        vocabulary = self.words()
        choices = torch.randint(self.num_words, (count, words_per_document), generator=generator).tolist()
        return [[BOS] + [t for w in row for t in vocabulary[w]] for row in choices]
