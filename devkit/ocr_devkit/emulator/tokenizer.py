"""A deterministic stand-in for Qwen's tokenizer, good enough for plausible usage figures.

The emulator has no BPE vocabulary, so text is cut into pieces that cost roughly what Qwen's
tokenizer charges for them:

- a run of ASCII letters: one token per 4 letters, rounded up ("Invoice" = 2);
- a digit: one token each (Qwen splits numbers into single digits);
- a CJK ideograph, kana or hangul syllable: one token each;
- a run of other letters (accented Latin, Cyrillic, Arabic...): one token per 2 letters, rounded up;
- a run of punctuation or symbols: one token per 2 characters, rounded up ("```" = 2);
- spaces and tabs: free (BPE glues them to the next word); a run of whitespace holding a newline: 1.

The input side adds `CHAT_TEMPLATE_TOKENS` for the chat template around the prompt (role markers,
the fixed system message). Image tokens are not text: they come from the documented formula.
"""

from __future__ import annotations

import math
import re

# <|im_start|>system ... <|im_end|>, <|im_start|>user ... <|im_end|>, <|im_start|>assistant.
CHAT_TEMPLATE_TOKENS = 20

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_PIECE = re.compile(
    rf"(?P<ascii>[A-Za-z]+)"
    rf"|(?P<digit>\d)"
    rf"|(?P<cjk>[{_CJK}])"
    rf"|(?P<letters>(?:(?![{_CJK}])[^\W\d_])+)"
    rf"|(?P<newline>\s*\n\s*)"
    rf"|(?P<space>\s+)"
    rf"|(?P<symbols>[^\w\s]+|_+)"
)


def _piece_cost(match: re.Match[str]) -> int:
    kind, text = match.lastgroup, match.group()
    if kind == "ascii":
        return math.ceil(len(text) / 4)
    if kind in ("digit", "cjk", "newline"):
        return 1
    if kind == "letters":
        return math.ceil(len(text) / 2)
    if kind == "symbols":
        return math.ceil(len(text) / 2)
    return 0


def count_tokens(text: str) -> int:
    return sum(_piece_cost(match) for match in _PIECE.finditer(text))


def prompt_tokens(prompt: str) -> int:
    """Text tokens of one user turn: the prompt plus the chat template around it."""
    return count_tokens(prompt) + CHAT_TEMPLATE_TOKENS


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of `text` that costs at most `limit` tokens (what a length-capped model emits)."""
    if count_tokens(text) <= limit:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]
