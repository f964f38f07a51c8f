"""Target selection for ``plan`` and ``build``: by name, by glob, by tag.

PURE. ``pixmake build hero 'product-*' --tag q4`` selects the union of what each selector matches:
the target named ``hero``, every target whose name matches the glob ``product-*`` (``fnmatch``
rules, case-sensitive: ``*``, ``?``, ``[abc]``), and every target tagged ``q4``. The result keeps
manifest order. A selector that matches nothing is an error (a typo must not silently select
nothing). No selector at all means the whole manifest.

Dependencies of a selection: pixmake targets do not depend on each other (a target's inputs are
files, never another target's output), so a selection is exact: nothing outside it is planned,
generated or restored. Lock entries outside the selection are left alone; orphans (lock entries
whose target left the manifest) are only reported and pruned when no selection is given.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pixmake.errors import ConfigError

if TYPE_CHECKING:
    from pixmake.manifest import Target

__all__ = ["Selection", "select_targets"]

_GLOB: Final = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Selection:
    """What the command line asked for: names or globs, and tags. Empty: everything."""

    patterns: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        """True when no selector was given."""
        return not self.patterns and not self.tags

    @property
    def names(self) -> frozenset[str]:
        """The patterns that are plain names (no glob character): targets asked for one by one."""
        return frozenset(p for p in self.patterns if not _GLOB.intersection(p))


def select_targets(targets: Iterable[Target], selection: Selection, *, extra: Iterable[str] = ()) -> tuple[Target, ...]:
    """The targets the selection names, in manifest order; ``extra`` names are added (``--replace``).

    Raises ConfigError naming each pattern or tag that matched no target.
    """
    targets = tuple(targets)
    if selection.everything:
        return targets
    wanted = set(extra)
    chosen: list[Target] = []
    used_patterns: set[str] = set()
    used_tags: set[str] = set()
    tags = frozenset(selection.tags)
    # Names are looked up, globs compiled once: 10,000 names pasted from a CI log took 38 s matched one by one.
    names = selection.names
    globs = [p for p in dict.fromkeys(selection.patterns) if p not in names]
    any_glob = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in globs)).match if globs else None
    unmatched = {p: re.compile(fnmatch.translate(p)).match for p in globs}  # globs not matched yet
    for target in targets:
        hit = target.name in wanted
        if target.name in names:
            used_patterns.add(target.name)
            hit = True
        if any_glob is not None and any_glob(target.name):
            hit = True
            for pattern, match in list(unmatched.items()) if unmatched else ():
                if match(target.name):
                    used_patterns.add(pattern)
                    del unmatched[pattern]
        matched_tags = tags.intersection(target.tags)
        if matched_tags:
            used_tags.update(matched_tags)
            hit = True
        if hit:
            chosen.append(target)
    unused = [repr(p) for p in selection.patterns if p not in used_patterns]
    unused += [f"--tag {t}" for t in selection.tags if t not in used_tags]
    if unused:
        missed = [p for p in dict.fromkeys(selection.patterns) if p not in used_patterns]
        missed_tags = [t for t in dict.fromkeys(selection.tags) if t not in used_tags]
        hint = _hint(missed, missed_tags, targets) if len(missed) + len(missed_tags) == 1 else ""
        raise ConfigError(f"no target matches {', '.join(dict.fromkeys(unused))}{hint}")
    return tuple(chosen)


def _hint(patterns: list[str], tags: list[str], targets: tuple[Target, ...]) -> str:
    """For one selector that matched nothing: the tag, glob or name (or name for a tag) it may have meant."""
    import difflib

    all_tags = {tag for target in targets for tag in target.tags}
    names = [target.name for target in targets]
    if tags:
        [tag] = tags
        close = difflib.get_close_matches(tag, all_tags, n=1)
        if close:
            return f"; did you mean --tag {close[0]}?"
        return f" (a target name is selected without --tag: {tag})" if tag in names else ""
    [pattern] = patterns
    if pattern in all_tags:
        return f" ({pattern} is a tag: --tag {pattern})"
    if not _GLOB.intersection(pattern):
        if any(name.startswith(pattern) for name in names):
            return f"; did you mean '{pattern}*'?"
        close = difflib.get_close_matches(pattern, names, n=1)
        if close:
            return f"; did you mean {close[0]!r}?"
    return ""
