"""Load the OBER ontology (YAML data files) and compile it for matching.

The data lives in `workbench/ober/ontology/` (phrase syntax in its README). Compiling turns
every phrase of every file into one lookup table (normalised phrase -> `Entry`, the roles
that phrase plays) and one regular expression built as a character trie, so a report is
scanned in a single pass by the C regex engine (see `matcher.py`). Everything is built from
lists in file order or sorted order, never from set iteration, so the result does not depend
on PYTHONHASHSEED.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

from workbench.ober.text import SENTENCE_END_ALTERNATIVES

ONTOLOGY_DIR = Path(__file__).resolve().parent / "ontology"

# Trigger flags (bit set on Entry.trig).
NEG_PRE = 1
NEG_POST = 2
UNC_PRE = 4
UNC_POST = 8
TERM = 16
PSEUDO = 32
TERM_PRE = 64  # ends a pre-trigger's scope only (relative clauses)
PRE_MASK = NEG_PRE | UNC_PRE
POST_MASK = NEG_POST | UNC_POST

TRIGGER_FLAGS = {"neg_pre": NEG_PRE, "neg_post": NEG_POST, "unc_pre": UNC_PRE, "unc_post": UNC_POST,
                 "terminators": TERM, "terminators_pre": TERM_PRE, "pseudo": PSEUDO}

# Hedge kinds of uncertainty triggers (Entry.hedge, Mention.hedge).
HEDGES = {"possible": 1, "probable": 2, "alternative": 3}
HEDGE_NAMES = {v: k for k, v in HEDGES.items()}

# Modifier attachment.
ATTACH_AUTO = 0
ATTACH_BACK = 1

_SEP = "\x00S"  # between words: any run of whitespace / hyphens (or none)
_STEM = "\x00W"  # phrase-final '*': any word ending
_ATOM_RE = {_SEP: r"[\s\-]*", _STEM: r"\w*"}
_KEY_DELETE = {ord(c): None for c in " \t\n\r\f\v-\u00a0"}


class OntologyError(ValueError):
    """An ontology data file that cannot be compiled; the message names the file and phrase."""


class Entry:
    """Every role one normalised phrase plays (a phrase may be, e.g., a change word and a trigger)."""

    __slots__ = ("concept", "anat", "qual", "trig", "hedge", "severity", "laterality", "zone", "lobe", "change",
                 "attach", "has_meta")

    def __init__(self) -> None:
        self.concept = -1
        self.anat = -1
        self.qual = -1
        self.trig = 0
        self.hedge = 0
        self.severity: Optional[str] = None
        self.laterality: Optional[str] = None
        self.zone: Optional[str] = None
        self.lobe: Optional[str] = None
        self.change: Optional[str] = None
        self.attach = ATTACH_AUTO
        self.has_meta = False


def expand_braces(phrase: str) -> List[str]:
    """`effusion{,s}` -> ['effusion', 'effusions']; several groups multiply; no nesting."""
    start = phrase.find("{")
    if start < 0:
        return [" ".join(phrase.split())]
    end = phrase.find("}", start)
    if end < 0:
        raise ValueError(f"unclosed '{{' in phrase {phrase!r}")
    out: List[str] = []
    for option in phrase[start + 1:end].split(","):
        out.extend(expand_braces(phrase[:start] + option + phrase[end + 1:]))
    return out


def phrase_key(text: str) -> str:
    """Normalised lookup key: lower-case with whitespace and hyphens removed."""
    return text.lower().translate(_KEY_DELETE)


def _atoms(phrase: str) -> List[str]:
    atoms: List[str] = []
    words = [w for w in re.split(r"[\s\-]+", phrase) if w]
    for wi, word in enumerate(words):
        if wi:
            atoms.append(_SEP)
        stem = word.endswith("*")
        if stem:
            if wi != len(words) - 1:
                raise ValueError(f"'*' is allowed only at the end of a phrase: {phrase!r}")
            word = word[:-1]
        atoms.extend(word)
        if stem:
            atoms.append(_STEM)
    return atoms


def _trie_branches(phrases: Iterable[str]) -> List[str]:
    """All phrases as a trie-factored regex: one alternative per first character.

    Each alternative is `c(?<!\\w\\w)REST(?!\\w)`: it starts with a literal (so the regex
    engine can skip positions by a first-character set, see `sre_compile._get_charset_prefix`),
    the look-behind asks that `c` starts a word, and shared prefixes are tested once.
    """
    root: dict = {}
    for phrase in phrases:
        node = root
        for atom in _atoms(phrase):
            node = node.setdefault(atom, {})
        node[""] = True

    def order(atom: str) -> Tuple[int, str]:
        return (2 if atom == _STEM else 1 if atom == _SEP else 0, atom)

    def emit(node: dict) -> str:
        terminal = "" in node
        branches = []
        for atom in sorted((a for a in node if a), key=order):
            piece = _ATOM_RE.get(atom) or re.escape(atom)
            branches.append(piece + emit(node[atom]))
        if not branches:
            return ""
        if len(branches) == 1:
            body = branches[0]
            if not terminal:
                return body
            return f"(?:{body})?"
        alt = "(?:" + "|".join(branches) + ")"
        return alt + "?" if terminal else alt

    out = []
    for first in sorted(root, key=order):
        if first in (_SEP, _STEM, ""):
            raise ValueError(f"a phrase cannot start with a separator or '*': {first!r}")
        out.append(re.escape(first) + r"(?<!\w\w)" + emit(root[first]) + r"(?!\w)")
    return out


@dataclass
class LabelRule:
    """A label computed from the others (`normal`, `No Finding`)."""

    rule: str
    otherwise: Optional[float]
    ignore: List[str]


@dataclass
class LabelSet:
    """A label set: ordered label names, concept -> label mapping, derived labels, scoring exclusions."""

    name: str
    labels: List[str]
    concept_labels: Dict[int, Tuple[int, ...]]  # concept index -> label indices
    rules: Dict[int, LabelRule]  # label index -> derived rule
    score_exclude: List[str]
    source: str
    present_hedges: Tuple[int, ...] = ()  # hedge kinds this gold counts as present


@dataclass
class Ontology:
    """The compiled ontology. Build with `load_ontology()` (cached per directory)."""

    concepts: List[str]
    concept_kind: List[str]
    anatomy: List[str]
    qualifiers: List[str]
    qualifier_default: List[int]  # qualifier class -> concept index or -1
    statements: List[Dict[int, Tuple[Tuple[int, ...], bool]]]  # anatomy -> {qual: (concepts, is_normal)}
    relocations: List[Optional[Dict[int, int]]]  # anatomy -> {generic concept: site concept}; None: not a site
    relocatable: frozenset  # concepts some site relocates
    entries: Dict[str, Entry]
    stems: Dict[str, Entry]
    stem_lengths: List[int]
    punct: Dict[str, Entry]
    pattern: "re.Pattern[str]"
    directory: Path
    back_preposition: Optional["re.Pattern[str]"] = None  # "in the" before a location word
    concept_index: Dict[str, int] = field(default_factory=dict)
    surface: Dict[str, Entry] = field(default_factory=dict)  # phrase as written -> entry (fast path)
    _labelsets: Dict[str, LabelSet] = field(default_factory=dict)

    def lookup(self, matched: str) -> Optional[Entry]:
        """The entry for a matched piece of (lower-cased) text."""
        entry = self.surface.get(matched)
        if entry is not None:
            return entry
        key = matched.translate(_KEY_DELETE)
        entry = self.entries.get(key)
        if entry is not None:
            return entry
        for length in self.stem_lengths:
            if len(key) >= length:
                entry = self.stems.get(key[:length])
                if entry is not None:
                    return entry
        return None

    def label_set(self, name: str) -> LabelSet:
        """A label set by name (`chexpert14`, `chestxray14`, `ctrate18`, `demo`, or a YAML path)."""
        if name not in self._labelsets:
            self._labelsets[name] = _load_label_set(self, name)
        return self._labelsets[name]

    def label_set_names(self) -> List[str]:
        return sorted(p.stem for p in (self.directory / "labelsets").glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise OntologyError(f"{path}: not valid YAML ({exc}); fix the file's syntax.") from exc
    if not isinstance(data, dict):
        raise OntologyError(f"{path}: expected a mapping at the top level.")
    return data


class _Builder:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.entries: Dict[str, Entry] = {}
        self.stems: Dict[str, Entry] = {}
        self.punct: Dict[str, Entry] = {}
        self.phrases: List[str] = []
        self.spellings: set = set()  # phrases as matched (a key can be spelt with or without spaces)
        self.owner: Dict[Tuple[str, str], str] = {}  # (key, role) -> who claimed it

    def entry(self, phrase: str, role: str, who: str, source: Path) -> Entry:
        if not phrase:
            raise OntologyError(f"{source}: empty phrase under {who}.")
        if not (phrase[0].isalnum() or phrase[0] == "_"):
            if len(phrase) != 1:
                raise OntologyError(f"{source}: phrase {phrase!r} ({who}) must start with a letter or "
                                    f"be a single punctuation mark.")
            return self.punct.setdefault(phrase, Entry())
        try:
            atoms = _atoms(phrase)
        except ValueError as exc:
            raise OntologyError(f"{source}: {exc} (under {who}).") from exc
        stem = atoms[-1] == _STEM
        key = phrase_key(phrase.rstrip("*"))
        table = self.stems if stem else self.entries
        claimed = self.owner.get((key + ("*" if stem else ""), role))
        if claimed is not None and claimed != who:
            raise OntologyError(f"{source}: phrase {phrase!r} is claimed both by {claimed} and by {who} "
                                f"as {role}; keep it in one place.")
        self.owner[(key + ("*" if stem else ""), role)] = who
        if key not in table:
            table[key] = Entry()
        # "plate like" and "platelike" share one entry, but only the spaced spelling matches
        # both forms: every distinct spelling goes into the regex (in first-seen order).
        if phrase not in self.spellings:
            self.spellings.add(phrase)
            self.phrases.append(phrase)
        return table[key]


def _phrases(values: Sequence[str], source: Path, who: str) -> List[str]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise OntologyError(f"{source}: {who} must list phrases, got {type(values).__name__}.")
    out: List[str] = []
    for value in values:
        try:
            out.extend(p for p in expand_braces(str(value).lower()) if p)
        except ValueError as exc:
            raise OntologyError(f"{source}: {exc} (under {who}).") from exc
    return out


@functools.lru_cache(maxsize=4)
def load_ontology(directory: Optional[str] = None) -> Ontology:
    """Read and compile the ontology files (cached: the data is immutable once loaded)."""
    root = Path(directory) if directory else ONTOLOGY_DIR
    b = _Builder(root)

    concepts_file = root / "concepts.yaml"
    cdata = _read_yaml(concepts_file).get("concepts") or {}
    concepts: List[str] = list(cdata)
    concept_index = {name: i for i, name in enumerate(concepts)}
    kinds: List[str] = []
    for name in concepts:
        spec = cdata[name] or {}
        kinds.append(str(spec.get("kind", "finding")))
        for phrase in _phrases(spec.get("synonyms"), concepts_file, f"concept {name!r}"):
            b.entry(phrase, "concept", f"concept {name!r}", concepts_file).concept = concept_index[name]

    def concept_id(name: str, source: Path, where: str) -> int:
        if name not in concept_index:
            raise OntologyError(f"{source}: {where} names unknown concept {name!r}; "
                                f"add it to concepts.yaml (known: {', '.join(concepts[:8])}, ...).")
        return concept_index[name]

    anatomy_file = root / "anatomy.yaml"
    adata = _read_yaml(anatomy_file)
    qualifiers = list(adata.get("qualifiers") or {})
    qual_index = {q: i for i, q in enumerate(qualifiers)}
    qual_default: List[int] = []
    for q in qualifiers:
        spec = adata["qualifiers"][q] or {}
        default = spec.get("default")
        qual_default.append(concept_id(default, anatomy_file, f"qualifier {q!r}") if default else -1)
        for phrase in _phrases(spec.get("phrases"), anatomy_file, f"qualifier {q!r}"):
            b.entry(phrase, "qualifier", f"qualifier {q!r}", anatomy_file).qual = qual_index[q]
    anatomy = list(adata.get("anatomy") or {})
    statements: List[Dict[int, Tuple[Tuple[int, ...], bool]]] = []
    relocations: List[Optional[Dict[int, int]]] = []
    for ai, a in enumerate(anatomy):
        spec = adata["anatomy"][a] or {}
        table: Dict[int, Tuple[Tuple[int, ...], bool]] = {}
        for q, names in (spec.get("statements") or {}).items():
            if q not in qual_index:
                raise OntologyError(f"{anatomy_file}: anatomy {a!r} uses unknown qualifier {q!r}; "
                                    f"known: {qualifiers}.")
            ids = tuple(concept_id(n, anatomy_file, f"anatomy {a!r}") for n in names)
            table[qual_index[q]] = (ids, q == "normal")
        statements.append(table)
        reloc = spec.get("relocate")
        if reloc is None:
            relocations.append(None)
        else:
            relocations.append({concept_id(k, anatomy_file, f"anatomy {a!r} relocate"):
                                concept_id(v, anatomy_file, f"anatomy {a!r} relocate")
                                for k, v in reloc.items()})
        for phrase in _phrases(spec.get("phrases"), anatomy_file, f"anatomy {a!r}"):
            b.entry(phrase, "anatomy", f"anatomy {a!r}", anatomy_file).anat = ai

    context_file = root / "context.yaml"
    xdata = _read_yaml(context_file)
    for section, flag in TRIGGER_FLAGS.items():
        groups = xdata.get(section)
        if isinstance(groups, dict):  # uncertainty triggers grouped by hedge kind
            unknown = [k for k in groups if k not in HEDGES]
            if unknown:
                raise OntologyError(f"{context_file}: {section} has unknown hedge kinds {unknown}; "
                                    f"known: {list(HEDGES)}.")
            items = [(HEDGES[k], p) for k in groups for p in _phrases(groups[k], context_file, f"{section}.{k}")]
        else:
            items = [(0, p) for p in _phrases(groups, context_file, section)]
        for hedge, phrase in items:
            e = b.entry(phrase, section, section, context_file)
            e.trig |= flag
            if hedge:
                e.hedge = max(e.hedge, hedge) if e.hedge else hedge

    mod_file = root / "modifiers.yaml"
    mdata = _read_yaml(mod_file)
    for level, values in (mdata.get("severity") or {}).items():
        for phrase in _phrases(values, mod_file, f"severity {level!r}"):
            e = b.entry(phrase, "severity", "severity", mod_file)
            e.severity, e.has_meta = str(level), True
    for raw, spec in (mdata.get("location") or {}).items():
        spec = spec or {}
        for phrase in _phrases([raw], mod_file, "location"):
            e = b.entry(phrase, "location", "location", mod_file)
            for attr in ("laterality", "zone", "lobe"):
                if spec.get(attr):
                    setattr(e, attr, str(spec[attr]))
            if spec.get("attach") == "back":
                e.attach = ATTACH_BACK
            e.has_meta = True
    prepositions = _phrases(mdata.get("back_prepositions"), mod_file, "back_prepositions")
    back_re = None
    if prepositions:
        alts = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in sorted(prepositions, key=len, reverse=True))
        back_re = re.compile(rf"(?:\b(?:{alts}))\s+$")
    for kind, values in (mdata.get("change") or {}).items():
        for phrase in _phrases(values, mod_file, f"change {kind!r}"):
            e = b.entry(phrase, "change", "change", mod_file)
            e.change, e.has_meta = str(kind), True

    _merge_stem_roles(b.entries, b.stems)
    surface: Dict[str, Entry] = {}
    for phrase in b.phrases:
        if not phrase.endswith("*"):
            entry = b.entries[phrase_key(phrase)]
            for form in (phrase, phrase.replace("-", " "), phrase.replace(" ", "-"), phrase_key(phrase)):
                surface.setdefault(form, entry)
    # One pattern, every alternative starting with a literal character: phrases (by first
    # letter), sentence ends, punctuation triggers. `matcher.scan` tells them apart by the
    # first character of the match.
    alternatives = _trie_branches(sorted(set(b.phrases)))
    alternatives += SENTENCE_END_ALTERNATIVES
    alternatives += [re.escape(c) for c in sorted(b.punct)]
    pattern = re.compile("|".join(alternatives))
    stem_lengths = sorted({len(k) for k in b.stems}, reverse=True)
    return Ontology(concepts=concepts, concept_kind=kinds, anatomy=anatomy, qualifiers=qualifiers,
                    qualifier_default=qual_default, statements=statements, relocations=relocations,
                    relocatable=frozenset(k for r in relocations if r for k in r), entries=b.entries,
                    stems=b.stems, stem_lengths=stem_lengths, punct=b.punct, pattern=pattern,
                    directory=root, concept_index=concept_index, back_preposition=back_re,
                    surface=surface)


def _merge_stem_roles(entries: Dict[str, Entry], stems: Dict[str, Entry]) -> None:
    """An exact phrase that a stem also covers ("hyperexpanded" vs "hyperexpan*") gets the
    stem's roles it lacks, since the exact entry is found first at match time."""
    lengths = sorted({len(k) for k in stems}, reverse=True)
    for key in sorted(entries):
        entry = entries[key]
        for length in lengths:
            stem = stems.get(key[:length]) if len(key) >= length else None
            if stem is None:
                continue
            if entry.concept < 0:
                entry.concept = stem.concept
            if entry.anat < 0:
                entry.anat = stem.anat
            if entry.qual < 0:
                entry.qual = stem.qual
            entry.trig |= stem.trig
            entry.hedge = entry.hedge or stem.hedge
            if stem.has_meta and not entry.has_meta:
                for attr in ("severity", "laterality", "zone", "lobe", "change", "attach"):
                    setattr(entry, attr, getattr(stem, attr))
                entry.has_meta = True
            break


def _load_label_set(onto: Ontology, name: str) -> LabelSet:
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else onto.directory / "labelsets" / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"Unknown label set {name!r}; known: {onto.label_set_names()} "
                       f"(or give a path to a label-set YAML file).")
    data = _read_yaml(path)
    spec = data.get("labels") or {}
    labels = [str(k) for k in spec]
    concept_labels: Dict[int, List[int]] = {}
    rules: Dict[int, LabelRule] = {}
    for li, label in enumerate(labels):
        value = spec[label]
        if isinstance(value, dict):
            if value.get("rule") != "no_finding":
                raise OntologyError(f"{path}: label {label!r} has unknown rule {value.get('rule')!r}; "
                                    f"known: no_finding.")
            ignore = [str(x) for x in value.get("ignore") or []]
            unknown = [x for x in ignore if x not in labels]
            if unknown:
                raise OntologyError(f"{path}: label {label!r} ignores unknown labels {unknown}.")
            otherwise = value.get("otherwise")
            rules[li] = LabelRule("no_finding", None if otherwise is None else float(otherwise), ignore)
            continue
        for cname in value or []:
            if cname not in onto.concept_index:
                raise OntologyError(f"{path}: label {label!r} maps unknown concept {cname!r}; "
                                    f"add it to concepts.yaml first.")
            concept_labels.setdefault(onto.concept_index[cname], []).append(li)
    exclude = [str(x) for x in ((data.get("scoring") or {}).get("exclude") or [])]
    hedges = data.get("present_hedges") or []
    unknown = [h for h in hedges if h not in HEDGES]
    if unknown:
        raise OntologyError(f"{path}: present_hedges has unknown kinds {unknown}; known: {list(HEDGES)}.")
    return LabelSet(name=str(data.get("name", path.stem)), labels=labels,
                    concept_labels={k: tuple(v) for k, v in sorted(concept_labels.items())},
                    rules=rules, score_exclude=exclude, source=str(path),
                    present_hedges=tuple(sorted(HEDGES[h] for h in hedges)))
