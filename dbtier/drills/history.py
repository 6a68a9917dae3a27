"""Split brain from the members' timeline histories (pure: what was read in, sentences out).

PostgreSQL starts a new timeline at every promotion and writes ``pg_wal/<TLI>.history``: one line per
ancestor timeline, ``parent-TLI  switch-LSN  reason``. Replicas copy these files from their primary, so
on a healthy cluster a file of a given name holds the same lines on every member. After a drill:

- two members whose ``N.history`` differ were promoted onto the same timeline number from different
  histories: two primaries, each with its own timeline N;
- a write acknowledged on a timeline the survivor (the final leader) never was on, or a member on such a
  timeline, lives on a branch the cluster no longer has.

The writer's log gives each acknowledged write's timeline (from the WAL file name its server returned).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Run as the OS user on a member's host: ``$1`` its data directory. Prints every history file, each after
#: a ``==> NAME`` line.
DUMP_SCRIPT = r"""
cd "$1/pg_wal" 2>/dev/null || exit 0
for f in *.history; do [ -e "$f" ] && printf '==> %s\n' "$f" && cat -- "$f"; done; exit 0
"""


@dataclass(frozen=True)
class Switch:
    """One line of a history file: the member left ``parent`` at ``lsn``."""

    parent: int
    lsn: str


@dataclass(frozen=True)
class MemberHistory:
    """What one member's data directory says about its timelines."""

    name: str
    timeline: int | None
    files: Mapping[int, tuple[Switch, ...]] = field(default_factory=dict)

    @property
    def timelines(self) -> frozenset[int]:
        """The member's current timeline and every ancestor its own history file names.

        >>> MemberHistory("pg1", 3, {3: (Switch(1, "0/3000060"), Switch(2, "0/5000000"))}).timelines
        frozenset({1, 2, 3})
        >>> MemberHistory("pg0", 1).timelines
        frozenset({1})
        """
        if self.timeline is None:
            return frozenset()
        return frozenset({self.timeline, *(s.parent for s in self.files.get(self.timeline, ()))})


def parse_history(text: str) -> tuple[Switch, ...]:
    """The lines of one history file (comments and blank lines skipped).

    >>> parse_history("1\\t0/3000060\\tno recovery target specified\\n\\n# c\\n2\\t0/50000A0\\tx\\n")
    (Switch(parent=1, lsn='0/3000060'), Switch(parent=2, lsn='0/50000A0'))
    """
    switches = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            switches.append(Switch(int(parts[0]), parts[1].upper()))
    return tuple(switches)


def timeline_of(name: str) -> int | None:
    """The timeline a history file's name holds (``00000002.history`` is timeline 2).

    >>> timeline_of("0000000A.history"), timeline_of("pg_wal.tmp")
    (10, None)
    """
    stem = name.removesuffix(".history")
    if len(stem) != 8 or stem == name:
        return None
    try:
        return int(stem, 16)
    except ValueError:
        return None


def parse_dump(text: str) -> dict[int, tuple[Switch, ...]]:
    """:data:`DUMP_SCRIPT`'s output: each history file's lines by timeline.

    >>> parse_dump("==> 00000002.history\\n1\\t0/3000060\\tr\\n==> 00000003.history\\n1\\t0/3000060\\tr\\n2\\t0/5000000\\tr\\n")
    {2: (Switch(parent=1, lsn='0/3000060'),), 3: (Switch(parent=1, lsn='0/3000060'), Switch(parent=2, lsn='0/5000000'))}
    """
    files: dict[int, list[str]] = {}
    current: int | None = None
    for line in text.splitlines():
        if line.startswith("==> "):
            current = timeline_of(line[4:].strip())
            if current is not None:
                files[current] = []
        elif current is not None:
            files[current].append(line)
    return {tli: parse_history("\n".join(lines)) for tli, lines in files.items()}


def _story(switches: tuple[Switch, ...]) -> str:
    return ", ".join(f"left {s.parent} at {s.lsn}" for s in switches) or "no ancestor"


def forked_timelines(histories: Iterable[MemberHistory]) -> list[str]:
    """Timeline numbers that two members hold with different histories, one sentence each.

    >>> same = (Switch(1, "0/3000060"),)
    >>> forked_timelines([MemberHistory("pg0", 2, {2: same}), MemberHistory("pg1", 2, {2: same})])
    []
    >>> forked_timelines([MemberHistory("pg0", 2, {2: same}), MemberHistory("pg1", 2, {2: (Switch(1, "0/5000000"),)})])
    ['pg0 and pg1 were both promoted onto timeline 2 from different histories (pg0: left 1 at 0/3000060; pg1: left 1 at 0/5000000)']
    """
    findings: list[str] = []
    first: dict[int, MemberHistory] = {}
    for member in sorted(histories, key=lambda m: m.name):
        for tli, switches in sorted(member.files.items()):
            seen = first.setdefault(tli, member)
            theirs = seen.files[tli]
            if seen is not member and [(s.parent, s.lsn) for s in theirs] != [(s.parent, s.lsn) for s in switches]:
                findings.append(f"{seen.name} and {member.name} were both promoted onto timeline {tli} from different "
                                f"histories ({seen.name}: {_story(theirs)}; {member.name}: {_story(switches)})")
    return findings


def off_history(histories: Mapping[str, MemberHistory], survivor: str | None,
                acked: Mapping[int, int]) -> list[str]:
    """Members and acknowledged writes on a timeline that is not in the survivor's history.

    ``acked``: how many writes the writer saw acknowledged on each timeline.

    >>> pg1 = MemberHistory("pg1", 2, {2: (Switch(1, "0/3000060"),)})
    >>> off_history({"pg1": pg1, "pg0": MemberHistory("pg0", 2, {})}, "pg1", {1: 40, 2: 80})
    []
    >>> off_history({"pg1": pg1, "pg0": MemberHistory("pg0", 3, {})}, "pg1", {1: 40, 2: 80, 3: 2})
    ['pg0 is on timeline 3, which is not in the history of the survivor pg1 (timelines 1, 2)', '2 write(s) acknowledged on timeline 3, which is not in the history of the survivor pg1 (timelines 1, 2)']
    """
    found = histories.get(survivor or "")
    if found is None or found.timeline is None:
        return []
    known = found.timelines
    where = f"the history of the survivor {found.name} (timelines {', '.join(map(str, sorted(known)))})"
    findings = [f"{m.name} is on timeline {m.timeline}, which is not in {where}"
                for m in sorted(histories.values(), key=lambda m: m.name)
                if m.timeline is not None and m.timeline not in known]
    findings += [f"{count} write(s) acknowledged on timeline {tli}, which is not in {where}"
                 for tli, count in sorted(acked.items()) if count and tli not in known]
    return findings


def split_brain_from_histories(histories: Mapping[str, MemberHistory], survivor: str | None,
                               acked: Mapping[int, int]) -> list[str]:
    """Every finding of :func:`forked_timelines` and :func:`off_history`, each marked as coming from the histories."""
    findings = forked_timelines(histories.values()) + off_history(histories, survivor, acked)
    return [f"timeline history: {f}" for f in findings]
