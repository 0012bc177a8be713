"""A row's text as its tokens are committed: incremental detokenization and stop strings.

The engine speaks token ids; a client wants text, and wants it as soon as it is final. Decoding the tokens one at a
time does not give the text: a byte-level BPE may split one character over several tokens (the partial character
decodes to U+FFFD), and word-piece or SentencePiece decoders put spaces between tokens depending on their neighbours.
So each new token is decoded together with a few tokens before it, and only the text past what those decode to is
new; text that ends in a partial character waits for the next token.

Stop strings cut the text before their first occurrence and end the row. Text that could still turn out to be the
start of a stop string is held back until the next tokens decide. The streamed deltas and the full answer come from
the same calls, so a streamed answer concatenates to exactly the non-streamed one.
"""

from __future__ import annotations

#: Decoded when a partial character is pending.
REPLACEMENT = "\ufffd"


class TextStream:
    """Turns one row's committed tokens into text deltas, cut at the first stop string.

    ``feed`` takes one token at a time (EOS tokens are not fed: they end the row, they are not text) and returns the
    text that became final; ``finish`` returns what was held back when the row ends for another reason.
    """

    def __init__(self, tokenizer, stop: list[str] | tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self.text = ""  # decoded so far (not cut at a stop string)
        self.sent = 0  # characters of ``text`` returned as deltas
        self.stopped = False  # a stop string was found; the answer is text[:sent]
        self._prefix = 0  # tokens[_prefix:_read] decode to the context of the next token
        self._read = 0

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def feed(self, token: int) -> str:
        """Add one token; returns the text that is now final (possibly empty). After a stop string: nothing."""
        if self.stopped:
            return ""
        self.tokens.append(token)
        context = self._decode(self.tokens[self._prefix : self._read])
        full = self._decode(self.tokens[self._prefix :])
        if len(full) > len(context) and not full.endswith(REPLACEMENT):
            self.text += full[len(context) :]
            self._prefix, self._read = self._read, len(self.tokens)
        return self._release(final=False)

    def finish(self) -> str:
        """The row has ended (EOS or its token limit): release everything still held back."""
        if self.stopped:
            return ""
        context = self._decode(self.tokens[self._prefix : self._read])
        full = self._decode(self.tokens[self._prefix :])
        self.text += full[len(context) :]
        self._prefix = self._read = len(self.tokens)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        """The text after ``sent`` that no stop string can still claim; sets ``stopped`` at a stop string."""
        start = max(0, self.sent - max((len(s) for s in self.stop), default=0))
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            end = max(min(hits), self.sent)
            self.stopped = True
        elif final:
            end = len(self.text)
        else:
            end = len(self.text) - self._held()
        delta = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return delta

    def _held(self) -> int:
        """Characters at the end of the unsent text that begin some stop string (they wait for the next tokens)."""
        pending = self.text[self.sent :]
        for n in range(min(len(pending), max((len(s) for s in self.stop), default=1) - 1), 0, -1):
            if any(s.startswith(pending[-n:]) for s in self.stop):
                return n
        return 0

    @property
    def answer(self) -> str:
        """The text returned so far (all of it once the row has ended)."""
        return self.text[: self.sent]
