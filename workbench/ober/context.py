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
from bisect import bisect_left, bisect_right
from typing import Dict, List, Sequence, Set, Tuple

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


def _assertion(tokens: Sequence, pres: Sequence[int], posts: Sequence[int], first: int,
               last: int) -> Tuple[int, int]:
    """(assertion, hedge kind) of the mention spanning tokens[first..last] of a clause.

    `pres`: the clause's positions holding a pre-trigger or a pre-scope terminator, `posts`:
    those holding a post-trigger (ascending). The nearest pre-position before `last` (the
    mention's own first token aside) and the nearest post-trigger after `first` (its own last
    token aside) decide. Bisecting these lists instead of walking to the clause ends keeps a
    clause linear in its length (issue 14: "pneumonia " x 20,000 took 34 s).
    """
    pre = post = None
    k = bisect_left(pres, last) - 1
    if k >= 0 and pres[k] == first:
        k -= 1
    if k >= 0:
        e = tokens[pres[k]][2]
        if e.trig & PRE_MASK:  # a terminator ends the backward scope instead
            pre = e
    k = bisect_right(posts, first)
    if k < len(posts) and posts[k] == last:
        k += 1
    if k < len(posts):
        post = tokens[posts[k]][2]
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
    pres: List[int] = []
    posts: List[int] = []
    concepts_at: List[int] = []
    quals_at: List[int] = []
    anatomy_at: List[int] = []
    meta = False
    for i in range(lo, hi):
        entry = tokens[i][2]
        trig = entry.trig
        if trig:
            if trig & (PRE_MASK | TERM_PRE):
                pres.append(i)
            if trig & POST_MASK:
                posts.append(i)
        if entry.concept >= 0:
            concepts_at.append(i)
        if entry.anat >= 0:
            anatomy_at.append(i)
        if entry.qual >= 0:
            quals_at.append(i)
        if entry.has_meta:
            meta = True
    scoped = bool(pres or posts)  # else every mention is present
    for i in concepts_at:
        start, end, entry = tokens[i]
        mentions.append(Mention(entry.concept, _assertion(tokens, pres, posts, i, i) if scoped else _PRESENT,
                                start, end, i, i))
    if quals_at:
        used = set()
        if anatomy_at:
            for i, best in _statement_pairs(onto, low, tokens, hi, anatomy_at, quals_at):
                used.add(best)
                concepts, is_normal = onto.statements[tokens[i][2].anat][tokens[best][2].qual]
                first, last = (i, best) if i < best else (best, i)
                if is_normal:
                    assertion = _ABSENT
                else:
                    assertion = _assertion(tokens, pres, posts, first, last) if scoped else _PRESENT
                verdict = tokens[best][2]
                if assertion[0] == PRESENT and verdict.trig & UNC_PRE:  # "heart size is borderline"
                    assertion = (UNCERTAIN, verdict.hedge)
                for c in concepts:
                    mentions.append(Mention(c, assertion, tokens[first][0], tokens[last][1], first, last))
        defaults = onto.qualifier_default
        for j in quals_at:
            q = tokens[j][2].qual
            if defaults[q] >= 0 and j not in used:
                mentions.append(Mention(defaults[q], _assertion(tokens, pres, posts, j, j) if scoped else _PRESENT,
                                        tokens[j][0], tokens[j][1], j, j))
        if len(mentions) > 1:
            mentions.sort(key=_mention_order)
    if mentions:
        if meta:
            attach_modifiers(low, tokens, lo, hi, mentions, onto.back_preposition)
        out.extend(mentions)


def _statement_pairs(onto: Ontology, low: str, tokens: Sequence, hi: int, anatomy_at: Sequence[int],
                     quals_at: Sequence[int]) -> List[Tuple[int, int]]:
    """(anatomy position, qualifier position) for each anatomy (at `anatomy_at`) of a clause
    that has a verdict.

    The verdict is the nearest qualifier (at `quals_at`) that the anatomy's statements table
    accepts, its own token aside; a distance counts double before the anatomy (+1), so the
    verdict after it is preferred, and an equal distance goes to the earlier qualifier. A
    qualifier tied to the anatomy right after it ("plaques in the ...") is not taken by an
    anatomy before it. Only the nearest accepted qualifier on each side can win, so positions
    per qualifier are bisected: O(n log n) per clause, not anatomy x qualifier pairs.
    """
    tied = _tied_qualifiers(onto, low, tokens, hi, quals_at)
    anywhere: Dict[int, List[int]] = {}  # qualifier id -> its positions
    for j in quals_at:
        anywhere.setdefault(tokens[j][2].qual, []).append(j)
    untied = anywhere  # the same without tied qualifiers (candidates after an anatomy)
    if tied:
        untied = {}
        for j in quals_at:
            if j not in tied:
                untied.setdefault(tokens[j][2].qual, []).append(j)
    statements = onto.statements
    accepted: Dict[int, List[int]] = {}  # anatomy id -> this clause's qualifier ids its table accepts
    pairs: List[Tuple[int, int]] = []
    for i in anatomy_at:
        a = tokens[i][2].anat
        qs = accepted.get(a)
        if qs is None:
            table = statements[a]
            qs = accepted[a] = [q for q in anywhere if q in table]
        best, best_d = -1, 1 << 30
        for q in qs:
            before = anywhere[q]
            k = bisect_left(before, i)
            if k:
                j = before[k - 1]
                d = (i - j) * 2 + 1
                if d < best_d or (d == best_d and j < best):
                    best, best_d = j, d
            after = untied.get(q)
            if after:
                k = bisect_right(after, i)
                if k < len(after):
                    j = after[k]
                    d = j - i
                    if d < best_d or (d == best_d and j < best):
                        best, best_d = j, d
        if best >= 0:
            pairs.append((i, best))
    return pairs


def _tied_qualifiers(onto: Ontology, low: str, tokens: Sequence, hi: int, quals_at: Sequence[int]) -> Set[int]:
    """Qualifiers (at `quals_at`, in a clause ending before `hi`) a preposition ties to the
    anatomy right after them (which takes them)."""
    out = set()
    for j in quals_at:
        if j + 1 >= hi:
            break
        q = tokens[j][2].qual
        a = tokens[j + 1][2].anat
        if a >= 0 and q in onto.statements[a] and _TIED_GAP.fullmatch(low, tokens[j][1], tokens[j + 1][0]):
            out.add(j)
    return out


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
    positions = [i for i, _ in sites]
    for k in range(before, len(out)):
        m = out[k]
        if m.concept not in relocatable:
            continue
        best = _nearest_site(sites, positions, m.first, m.last)
        new = best.get(m.concept) if best else None
        if new is not None:
            m.concept = new


def _nearest_site(sites: Sequence[Tuple[int, dict]], positions: Sequence[int], first: int, last: int) -> dict:
    """The relocation table of the site nearest to the mention tokens[first..last].

    Distance: first - i before the mention, i - last from its first token on (so a site inside
    the mention, the earliest first, beats any outside it); equal distances go to the earlier
    site. Only the nearest site on each side can win, so one bisection finds it.
    """
    k = bisect_left(positions, first)
    if k == len(positions):
        return sites[k - 1][1]
    if k == 0:
        return sites[0][1]
    d_before = first - positions[k - 1]
    d_after = positions[k] - last
    return sites[k - 1][1] if d_before <= d_after else sites[k][1]
