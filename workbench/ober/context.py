"""Assertion context: negation and uncertainty scopes over one sentence's tokens.

The rules follow NegEx (Chapman et al. 2001, J Biomed Inform 34:301) as extended by ConText
(Harkema et al. 2009, J Biomed Inform 42:839) and the CheXpert labeler's conventions (Irvin
et al. 2019, AAAI, sec. "Labeler"):

- a sentence splits into clauses at terminators ("but", "however", "which", "there is", a
  parenthesis); no scope crosses a clause end;
- a pre-trigger ("no", "without", "free of", "possible") scopes forward to the clause end,
  so coordination stays in scope ("no effusion or pneumothorax");
- a post-trigger ("has resolved", "not seen", "cannot be excluded", "?") scopes backward to
  the clause start;
- for each mention the NEAREST pre-trigger before it and the nearest post-trigger after it
  decide: negation wins over uncertainty; neither -> present;
- pseudo-triggers ("no change") are matched whole and carry no scope;
- anatomy + qualifier statements ("heart size is normal", "enlarged cardiac silhouette")
  become the anatomy's concept; a `normal` verdict makes it absent. A qualifier that a
  preposition ties to the anatomy after it ("plaques in the coronary arteries") belongs to
  that anatomy (and those coordinated with it), not to one named before it.
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple

from workbench.ober.meta import Mention, attach_modifiers
from workbench.ober.ontology import (NEG_POST, NEG_PRE, POST_MASK, PRE_MASK, TERM, TERM_PRE, UNC_POST, UNC_PRE,
                                    Ontology)

# The words between a qualifier and the anatomy it is said of: "plaques in the", "plaques
# are observed on the wall of the".
_TIED_GAP = re.compile(r"\s*(?:(?:is|are|was|were)\s+(?:observed|seen|noted|detected|present|visible|identified)\s+)?"
                       r"(?:in|on|at|of|within|along|involving)\s+(?:the\s+)?(?:(?:wall|walls)\s+of\s+(?:the\s+)?)?")

PRESENT, ABSENT, UNCERTAIN = 1, 0, -1
_PRESENT, _ABSENT = (PRESENT, 0), (ABSENT, 0)
ASSERTION_NAMES = {PRESENT: "present", ABSENT: "absent", UNCERTAIN: "uncertain"}


def _assertion(tokens: Sequence, lo: int, hi: int, first: int, last: int) -> Tuple[int, int]:
    """(assertion, hedge kind) of the mention spanning tokens[first..last] of clause [lo, hi)."""
    pre = None
    k = last - 1
    while k >= lo:
        if k != first:
            e = tokens[k][2]
            if e.trig & PRE_MASK:
                pre = e
                break
            if e.trig & TERM_PRE:
                break
        k -= 1
    post = None
    k = first + 1
    while k < hi:
        if k != last:
            e = tokens[k][2]
            if e.trig & POST_MASK:
                post = e
                break
        k += 1
    if pre is None and post is None:
        return PRESENT, 0
    if (pre is not None and pre.trig & NEG_PRE) or (post is not None and post.trig & NEG_POST):
        return ABSENT, 0
    if pre is not None and pre.trig & UNC_PRE:
        return UNCERTAIN, pre.hedge
    if post is not None and post.trig & UNC_POST:
        return UNCERTAIN, post.hedge
    return PRESENT, 0


def _clause(onto: Ontology, low: str, tokens: Sequence, lo: int, hi: int, out: List[Mention]) -> None:
    mentions: List[Mention] = []
    anatomy = quals = triggers = meta = False
    for i in range(lo, hi):
        entry = tokens[i][2]
        if entry.trig:
            triggers = True
        if entry.concept >= 0:
            mentions.append(Mention(entry.concept, _assertion(tokens, lo, hi, i, i) if triggers or i + 1 < hi else
                                    _PRESENT, tokens[i][0], tokens[i][1], i, i))
        if entry.anat >= 0:
            anatomy = True
        if entry.qual >= 0:
            quals = True
        if entry.has_meta:
            meta = True
    if quals:
        used = []
        if anatomy:
            tied = _tied_qualifiers(onto, low, tokens, lo, hi)
            for i in range(lo, hi):
                a = tokens[i][2].anat
                if a < 0:
                    continue
                table = onto.statements[a]
                best, best_d = -1, 1 << 30
                for j in range(lo, hi):
                    q = tokens[j][2].qual
                    if q >= 0 and j != i and q in table and not (i < j and j in tied):
                        d = (j - i) if j > i else (i - j) * 2 + 1  # ties: the verdict after the anatomy
                        if d < best_d:
                            best, best_d = j, d
                if best < 0:
                    continue
                used.append(best)
                concepts, is_normal = table[tokens[best][2].qual]
                first, last = (i, best) if i < best else (best, i)
                assertion = _ABSENT if is_normal else _assertion(tokens, lo, hi, first, last)
                verdict = tokens[best][2]
                if assertion[0] == PRESENT and verdict.trig & UNC_PRE:  # "heart size is borderline"
                    assertion = (UNCERTAIN, verdict.hedge)
                for c in concepts:
                    mentions.append(Mention(c, assertion, tokens[first][0], tokens[last][1], first, last))
        defaults = onto.qualifier_default
        for j in range(lo, hi):
            q = tokens[j][2].qual
            if q >= 0 and defaults[q] >= 0 and j not in used:
                mentions.append(Mention(defaults[q], _assertion(tokens, lo, hi, j, j),
                                        tokens[j][0], tokens[j][1], j, j))
        if len(mentions) > 1:
            mentions.sort(key=_mention_order)
    if mentions:
        if meta:
            attach_modifiers(low, tokens, lo, hi, mentions, onto.back_preposition)
        out.extend(mentions)


def _tied_qualifiers(onto: Ontology, low: str, tokens: Sequence, lo: int, hi: int) -> Tuple[int, ...]:
    """Qualifiers a preposition ties to the anatomy right after them (which takes them)."""
    out = []
    for j in range(lo, hi - 1):
        q = tokens[j][2].qual
        if q < 0:
            continue
        a = tokens[j + 1][2].anat
        if a >= 0 and q in onto.statements[a] and _TIED_GAP.fullmatch(low, tokens[j][1], tokens[j + 1][0]):
            out.append(j)
    return tuple(out)


def _mention_order(m: Mention) -> Tuple[int, int, int]:
    return (m.first, m.last, m.concept)


def sentence_mentions(onto: Ontology, low: str, tokens: Sequence, out: List[Mention]) -> None:
    """Append the mentions of one sentence (its tokens from `matcher.scan`) to `out`.

    `low` is the lower-cased report the token spans refer to.
    """
    before = len(out)
    lo = 0
    n = len(tokens)
    for i in range(n):
        if tokens[i][2].trig & TERM:
            if i > lo:
                _clause(onto, low, tokens, lo, i, out)
            lo = i + 1
    if n > lo:
        _clause(onto, low, tokens, lo, n, out)
    if len(out) > before and onto.relocatable:
        _relocate(onto, tokens, out, before)


def _relocate(onto: Ontology, tokens: Sequence, out: List[Mention], before: int) -> None:
    """A generic mention takes the concept of the nearest site the sentence names (anatomy.yaml)."""
    relocatable = onto.relocatable
    if not any(out[k].concept in relocatable for k in range(before, len(out))):
        return
    relocations = onto.relocations
    sites = [(i, relocations[t[2].anat]) for i, t in enumerate(tokens)
             if t[2].anat >= 0 and relocations[t[2].anat] is not None]
    if not sites:
        return
    for k in range(before, len(out)):
        m = out[k]
        if m.concept not in relocatable:
            continue
        best, best_d = None, 1 << 30
        for i, table in sites:
            d = m.first - i if i < m.first else i - m.last
            if d < best_d:
                best, best_d = table, d
        new = best.get(m.concept) if best else None
        if new is not None:
            m.concept = new
