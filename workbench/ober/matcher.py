"""Compiled matching: one regex pass over a report yields its sentences as token lists.

The ontology compiles every phrase (concepts, anatomy, qualifiers, triggers, modifiers) into
one trie-shaped alternation anchored at word starts (`ontology._trie_regex`), plus sentence
ends and single punctuation triggers. A report is scanned once by the C regex engine; each
match is resolved through a dict (`Ontology.lookup`), so the Python work is per matched
phrase, not per character or per word. Nothing is cached by text.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import List, Optional, Sequence, Tuple

from workbench.ober.ontology import Entry, Ontology
from workbench.ober.text import SENTENCE_END_CHARS

Token = Tuple[int, int, Entry]  # (start, end, entry) in the original text's coordinates


def scan(onto: Ontology, low: str, skip: Optional[Sequence[Tuple[int, int]]] = None) -> List[List[Token]]:
    """Sentences of the lower-cased text `low`, each a list of matched tokens in order.

    `skip`: sorted (start, end) ranges whose tokens are dropped (sections not read).
    """
    sentences: List[List[Token]] = []
    current: List[Token] = []
    surface = onto.surface.get
    lookup = onto.lookup
    punct = onto.punct
    ends = SENTENCE_END_CHARS
    skip_starts = [s for s, _ in skip] if skip else None
    for m in onto.pattern.finditer(low):
        text = m.group()
        first = text[0]
        if first in ends:
            if current:
                sentences.append(current)
                current = []
            continue
        start = m.start()
        if skip_starts is not None:
            i = bisect_right(skip_starts, start) - 1
            if i >= 0 and start < skip[i][1]:
                continue
        entry = punct.get(first) if len(text) == 1 else None
        if entry is not None:
            current.append((start, m.end(), entry))
            if first == "?":
                sentences.append(current)
                current = []
            continue
        entry = surface(text) or lookup(text)
        if entry is not None:
            current.append((start, m.end(), entry))
    if current:
        sentences.append(current)
    return sentences
